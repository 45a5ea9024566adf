"""runner=ray in Ray's local mode: same identities as runner=local; a killed worker loses only its in-flight images."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from idcluster.pipeline import stages as pipeline
from idcluster.workflows.cluster import make_spec
from idcluster.config.compose import load_config
from idcluster.config.settings import load_settings
from idcluster.errors import ModelError, PipelineError
from idcluster.runners import make_runner
from idcluster.runners.local import LocalRunner
from idcluster.runners.ray_runner import RayRunner


def run(cfg):
    return pipeline.run(make_spec(cfg, "cluster", progress=False))


def identities(result) -> set[frozenset]:
    groups: dict[int, set] = {}
    for rec in result.records:
        if rec.label >= 0:
            groups.setdefault(rec.label, set()).add(rec.rel_path)
    return {frozenset(g) for g in groups.values()}


def test_runner_options_compose():
    local = make_runner(load_config(["input_dir=x", "workers=3", "batch_images=5"]))
    assert isinstance(local, LocalRunner) and (local.workers, local.batch_images) == (3, 5)  # by interpolation
    cfg = load_config(["input_dir=x", "runner=ray", "runner.address=auto", "device=cuda"])
    assert cfg.runner.address == "auto"
    # Building a RayRunner imports no ray (its run does), so this holds with or without the extra.
    r = make_runner(cfg)
    assert isinstance(r, RayRunner)
    assert r.address == "auto" and r.num_gpus_per_actor == 1.0
    assert make_runner(load_config(["input_dir=x", "runner=ray"])).num_gpus_per_actor == 0.0
    assert make_runner(load_config(["input_dir=x", "runner=ray", "workers=3"])).actors == 3  # actors: null = workers


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from idcluster.runners.ray_runner import RayRunner

    with pytest.raises(ModelError, match=r"runner=ray needs ray: pip install 'idcluster\[ray\]'"):
        RayRunner().run(None, [{}], None, None, None)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_gives_the_same_identities_as_local(ray_local, small_set, tmp_path):
    folder, truth = small_set
    base = [f"input_dir={folder}", "clusterer.min_cluster_size=3", "tracking=off", "workers=2"]
    local = run(load_settings([*base, f"output_dir={tmp_path / 'a'}", f"cache_dir={tmp_path / 'cache_a'}"]))
    remote = run(load_settings([*base, f"output_dir={tmp_path / 'b'}", f"cache_dir={tmp_path / 'cache_b'}", "runner=ray"]))
    assert remote.computed["embed"] == len(truth)  # its own cache: really computed on the actors
    assert identities(remote) == identities(local)
    assert len(identities(local)) == 7


@pytest.mark.slow
@pytest.mark.ray
def test_killed_ray_worker_loses_only_in_flight_images_and_a_rerun_resumes(ray_local, small_set, tmp_path, monkeypatch):
    from idcluster.runners.ray_runner import RayRunner

    folder, truth = small_set
    cfg = load_settings([f"input_dir={folder}", f"output_dir={tmp_path / 'o'}", "clusterer.min_cluster_size=3",
                         "tracking=off", "workers=2", "runner=ray", "runner.window=2"])
    original = RayRunner.run
    finished = {"n": 0}

    def killing(self, spec, tasks, work, on_result, advance):
        def counted(task, out):
            on_result(task, out)
            finished["n"] += 1
            if finished["n"] == 5:  # mid-run: SIGKILL one actor's process
                os.kill(ray_local.get(self.workers[0].pid.remote()), signal.SIGKILL)
        return original(self, spec, tasks, work, counted, advance)

    monkeypatch.setattr(RayRunner, "run", killing)
    with pytest.raises(PipelineError, match="a Ray worker died"):
        run(cfg)
    done = finished["n"]
    assert 5 <= done < len(truth)
    monkeypatch.setattr(RayRunner, "run", original)
    result = run(cfg)
    # Everything that reached the driver was cached; only the rest (at most the in-flight ones + unstarted) runs again.
    assert result.computed["embed"] == len(truth) - done
    assert len(identities(result)) == 7
