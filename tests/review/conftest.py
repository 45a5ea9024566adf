"""Real LFW clusterings for the review's ranking tests (skipped where the eval sets are absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import EVAL_ROOT

LFW = EVAL_ROOT / "lfw_150px_40ids"
# 12 people, among them the pairs the old centre-cosine suggestions merged (Naomi Watts + Sheryl Crow,
# Jeb Bush + Tony Blair) and the merged pair of the issue (Adrien Brody + Hugh Grant).
PEOPLE = ["Adrien_Brody", "Angelina_Jolie", "Donald_Rumsfeld", "Gordon_Brown", "Hugh_Grant", "Jeb_Bush",
          "John_Howard", "Mike_Weir", "Naomi_Watts", "Sheryl_Crow", "Tony_Blair", "Winona_Ryder"]


def _cluster(inp: Path, out: Path, cache: Path, *overrides: str) -> Path:
    from rich.console import Console

    from idcluster.config.settings import load_settings
    from idcluster.workflows import cluster as workflow

    cfg = load_settings([f"input_dir={inp}", f"output_dir={out}", f"cache_dir={cache}", "workers=1", "tracking=off",
                         "clusterer.min_cluster_size=2", *overrides])
    workflow.cluster(cfg, Console(quiet=True), progress=False)
    return out


@pytest.fixture(scope="session")
def lfw_review(tmp_path_factory) -> dict[str, Path]:
    """Output folders of real LFW photos, clustered three ways (their own cache):
    correct: the 12 people at the calibrated threshold; over_split: the same at 0.035 (people in
    several identities); merged: Adrien Brody (10 photos) and Hugh Grant (6) at 0.2 (one identity)."""
    if not LFW.is_dir():
        pytest.skip(f"labelled eval sets not present at {EVAL_ROOT}")
    root = tmp_path_factory.mktemp("lfw_review")
    inp, pair = root / "in", root / "pair"
    for person in PEOPLE:
        shutil.copytree(LFW / person, inp / person)
    shutil.copytree(LFW / "Adrien_Brody", pair / "Adrien_Brody")
    (pair / "Hugh_Grant").mkdir()
    for f in sorted((LFW / "Hugh_Grant").iterdir())[:6]:
        shutil.copy2(f, pair / "Hugh_Grant" / f.name)
    cache = root / "cache"
    return {"correct": _cluster(inp, root / "correct", cache),
            "over_split": _cluster(inp, root / "over_split", cache, "clusterer.distance_threshold=0.035"),
            "merged": _cluster(pair, root / "merged", cache, "clusterer.distance_threshold=0.2")}


@pytest.fixture
def lfw_copy(lfw_review, tmp_path):
    """copy(kind): a private copy of one of the lfw_review outputs (tests may act on it)."""

    def copy(kind: str) -> Path:
        dest = tmp_path / kind
        shutil.copytree(lfw_review[kind], dest)
        return dest

    return copy
