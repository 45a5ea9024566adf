"""Config composition (Hydra compose API): every option builds, bad input is one ConfigError line."""

import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from idcluster.config.compose import GROUPS, ConfigError, build, group_options, instantiate_node, load_config, params

ALL_OPTIONS = [(g, o) for g in GROUPS for o in group_options(g)]


def test_groups_have_options():
    # Every swappable part is a config group whose options name a class by _target_ (issue 16).
    assert GROUPS == ("detector", "embedder", "reducer", "clusterer", "runner", "pose", "instance", "appearance", "export")
    for g in GROUPS:
        assert group_options(g), f"no options for {g}"
    assert {"retinaface"} <= set(group_options("detector"))
    assert {"dlib", "facenet"} <= set(group_options("embedder"))


@pytest.mark.parametrize("group, option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_builds(group, option):
    cfg = load_config(["input_dir=x", f"{group}={option}"])
    assert cfg.input_dir == "x"
    target = cfg[group]._target_
    obj = build(cfg, group)
    assert f"{type(obj).__module__}.{type(obj).__name__}".startswith(target.rsplit(".", 1)[0])
    assert type(obj).__name__ == target.rsplit(".", 1)[-1]


@pytest.mark.parametrize("option", group_options("reducer"))
def test_reducers_fit_transform(option):
    reducer = build(load_config(["input_dir=x", f"reducer={option}"]), "reducer")
    x = np.random.default_rng(0).normal(size=(64, 64))
    out = reducer.fit_transform(x)
    assert out.shape[0] == 64


@pytest.mark.parametrize("option", group_options("clusterer"))
def test_clusterers_fit_predict(option):
    clusterer = build(load_config(["input_dir=x", f"clusterer={option}"]), "clusterer")
    rng = np.random.default_rng(0)
    # Two tight groups of directions, like L2-normalised embeddings of two people.
    centres = np.eye(8)[[0, 1]]
    x = np.concatenate([centres[0] + rng.normal(0, 0.01, (20, 8)), centres[1] + rng.normal(0, 0.01, (20, 8))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = clusterer.fit_predict(x)
    assert labels.shape == (40,)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]


def _error(overrides, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(overrides, **kw)
    msg = str(info.value)
    assert "\n" not in msg  # the CLI prints it as one line
    return msg


def test_unknown_group_option():
    msg = _error(["input_dir=x", "reducer=nope"])
    assert re.match(re.escape("bad override: In 'config': Could not find 'reducer/nope'"), msg)
    assert "Available options in 'reducer': none pca" in msg
    assert "Config search path" not in msg


def test_unknown_key():
    msg = _error(["input_dir=x", "nokey=1"])
    assert msg == "bad override: Could not override 'nokey'. To append to your config use +nokey=1"
    msg = _error(["input_dir=x", "clusterer.nokey=1"])
    assert msg.startswith("bad override: Could not override 'clusterer.nokey'.")


@pytest.mark.parametrize("override", ["input_dir", "=="])
def test_malformed_override(override):
    with pytest.raises(ConfigError, match=re.escape(f"bad override: Error parsing override '{override}'")):
        load_config(["input_dir=x", override])


def test_missing_input_dir():
    with pytest.raises(ConfigError, match=r"^input_dir is required: add input_dir=path/to/images$"):
        load_config([])
    cfg = load_config([], require_input=False)
    assert OmegaConf.is_missing(cfg, "input_dir")


def test_unknown_parameter_fails_at_build():
    cfg = load_config(["input_dir=x", "+clusterer.bogus=1"])
    with pytest.raises(ConfigError, match=r"^cannot build clusterer from config: .*unexpected keyword argument 'bogus'"):
        build(cfg, "clusterer")


def test_params_drop_runtime_keys():
    cpu = load_config(["input_dir=x", "device=cpu", "detector.threads=0"])
    gpu = load_config(["input_dir=x", "device=cuda", "detector.threads=4"])
    assert gpu.detector.device == "cuda" and cpu.detector.device == "cpu"  # interpolation resolved
    for group in ("detector", "embedder"):
        p = params(cpu, group)
        assert "device" not in p and "threads" not in p
        assert p == params(gpu, group)  # device/threads do not change cache params
        assert p["_target_"] == cpu[group]._target_  # a different model is a different key
    facenet = load_config(["input_dir=x", "embedder=facenet", "device=cuda"])
    assert "device" not in params(facenet, "embedder") and facenet.embedder.device == "cuda"
    # A result-changing option does change params.
    strict = load_config(["input_dir=x", "detector.score_threshold=0.5"])
    assert params(strict, "detector") != params(cpu, "detector")
    assert params(strict, "detector")["score_threshold"] == 0.5


# ---------------------------------------------------------------- building: the user's mistakes vs bugs


class BuggyConstructor:
    """A constructor with a bug in its body (arguments fine)."""

    def __init__(self, size: int = 1):
        raise RuntimeError("a bug in the constructor")


class BuggyTypeError:
    def __init__(self, size: int = 1):
        return len(size)  # TypeError from the body, not from the arguments


class RejectsValue:
    def __init__(self, size: int = 1):
        from idcluster.errors import ModelError

        raise ModelError(f"no weights for size {size}")


def _node(target: str, **kw):
    return OmegaConf.create({"_target_": f"{__name__}.{target}", **kw})


def test_a_bug_in_a_constructor_propagates_as_itself():
    with pytest.raises(RuntimeError, match="a bug in the constructor") as info:
        instantiate_node(_node("BuggyConstructor", size=2), "cannot build x")
    assert any(f.name == "__init__" for f in info.traceback)  # its own traceback, for the report
    with pytest.raises(TypeError, match="has no len"):
        instantiate_node(_node("BuggyTypeError", size=2), "cannot build x")
    # The same through build(): a config group whose class has a bug.
    cfg = load_config(["input_dir=x", f"reducer._target_={__name__}.BuggyConstructor"])
    with pytest.raises(RuntimeError, match="a bug in the constructor"):
        build(cfg, "reducer")


def test_what_the_user_caused_is_one_config_error_line():
    with pytest.raises(ConfigError, match=r"^cannot build x: .*unexpected keyword argument 'bogus'"):
        instantiate_node(_node("BuggyConstructor", bogus=1), "cannot build x")  # the typo is found first
    with pytest.raises(ConfigError, match=r"^cannot build x: .*no weights for size 3$"):
        instantiate_node(_node("RejectsValue", size=3), "cannot build x")
    for target in ("nowhere.Nothing", f"{__name__}.NoSuchClass"):  # a _target_ that does not exist
        with pytest.raises(ConfigError) as info:
            instantiate_node(OmegaConf.create({"_target_": target}), "cannot build x")
        msg = str(info.value)
        assert msg.startswith(f"cannot build x: Error loading '{target}'") and "\n" not in msg
    cfg = load_config(["input_dir=x", "detector=mtcnn", "detector.backend=tf"])
    with pytest.raises(ConfigError, match=r"^cannot build detector from config: detector.backend must be one of"):
        build(cfg, "detector")


# ---------------------------------------------------------------- runners: every option builds and runs


@pytest.mark.parametrize("option", [pytest.param(o, marks=[pytest.mark.ray] if o == "ray" else [])
                                    for o in group_options("runner")])
def test_every_runner_option_composes_builds_and_runs(option, tmp_path):
    from PIL import Image

    from idcluster.detectors.whole_image import WholeImageDetector
    from idcluster.pipeline.work import ImageStages, WorkItem, work_batch

    cfg = load_config(["input_dir=x", f"runner={option}", "workers=2"])
    runner = build(cfg, "runner")
    assert f"{type(runner).__module__}.{type(runner).__name__}" == cfg.runner._target_
    if option == "ray":
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        items = []
        for i in range(10):  # enough for runner=local to start its process pool
            Image.new("RGB", (20 + i, 30), (i, 0, 0)).save(tmp_path / f"{i}.png")
            items.append(WorkItem(i, str(tmp_path / f"{i}.png")))
        got, ticks = {}, []
        runner.run(ImageStages(WholeImageDetector()), items, work_batch,
                   lambda item, out: got.__setitem__(item.index, out), lambda: ticks.append(1))
        assert len(ticks) == len(items)
        assert {i: (out.detection.width, len(out.detection.faces)) for i, out in got.items()} == {i: (20 + i, 1) for i in range(10)}
    finally:
        if option == "ray":
            ray.shutdown()
