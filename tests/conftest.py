"""Shared fixtures: a labelled instance folder of real faces, eval-set access, CLI helpers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from idcluster.config.settings import load_settings
from idcluster.experiments.demo_data import build_demo_set
from idcluster.detectors.retinaface import RetinaFaceDetector

# IDCLUSTER_EVAL_ROOT points elsewhere (e.g. from a git worktree that is not beside shared/).
EVAL_ROOT = Path(os.environ.get("IDCLUSTER_EVAL_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "eval")


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Relative defaults (MLflow's ./mlflow.db, idcluster_output/) land in the test's own folder,
    and the user's stage cache (default ~/.cache/idcluster) is the test's own `cache/`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IDCLUSTER_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """56 crops of 7 real people (insightface's shipped photos, 8 augmentations each), with truth."""
    root = tmp_path_factory.mktemp("demo")
    return build_demo_set(root, RetinaFaceDetector())


@pytest.fixture
def small_set(demo_set, tmp_path) -> tuple[Path, dict[str, str]]:
    """A private copy of 3 augmentations x 7 people (21 images): tests may add files to it."""
    src, truth = demo_set
    dest = tmp_path / "small"
    return dest, copy_demo_images(src, truth, dest, lambda pos, _: pos < 3)


def copy_demo_images(src: Path, truth: dict[str, str], dest: Path, keep) -> dict[str, str]:
    """Copy into a new folder `dest` the images of `src` chosen by keep(position within its person,
    person's index), both in sorted order; returns the truth of those copied."""
    dest.mkdir(parents=True)
    chosen = {}
    for n_id, identity in enumerate(sorted(set(truth.values()))):
        for pos, name in enumerate(sorted(n for n in truth if truth[n] == identity)):
            if keep(pos, n_id):
                shutil.copy2(src / name, dest / name)
                chosen[name] = identity
    return chosen


def cluster_demo_subset(demo_set, root: Path, per_identity: int = 3) -> tuple[Path, Path]:
    """Copy `per_identity` crops of each demo person into root/in and cluster them into root/out
    through the CLI, with a cache of its own under root (module fixtures run before the
    per-test IDCLUSTER_CACHE, so never the user's). Returns (input folder, output folder)."""
    from typer.testing import CliRunner

    from idcluster.cli import app

    src, truth = demo_set
    folder = root / "in"
    copy_demo_images(src, truth, folder, lambda pos, _: pos < per_identity)
    out = root / "out"
    r = CliRunner().invoke(app, ["cluster", f"input_dir={folder}", f"output_dir={out}", f"cache_dir={root / 'cache'}",
                                 "clusterer.min_cluster_size=3", "tracking=off", "-q"])
    assert r.exit_code == 0, r.output
    return folder, out


@pytest.fixture
def eval_root() -> Path:
    if not EVAL_ROOT.is_dir():
        pytest.skip(f"labelled eval sets not present at {EVAL_ROOT}")
    return EVAL_ROOT


@pytest.fixture
def config(tmp_path):
    """config(input_dir, *overrides): inline workers (so spies see calls), output and cache in tmp_path."""

    def make(input_dir, *overrides):
        return load_settings([
            f"input_dir={input_dir}", f"output_dir={tmp_path / 'out'}", "workers=1",
            "clusterer.min_cluster_size=3", "tracking=off", *overrides,
        ])

    return make
