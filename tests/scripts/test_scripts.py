"""Smoke tests of the evaluation and benchmark scripts on a tiny labelled set.

The set is 6 real face crops (2 people x 3 variants from the demo set), laid out
as `<set>/<identity>/<image>` like ../shared/eval, so every script runs its real
code path in seconds (below 8 images the pipeline runs inline, no process pool).
Outputs are checked for shape, never for timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SET = "tiny_ids"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_eval_root(demo_set, tmp_path_factory) -> Path:
    src, truth = demo_set
    root = tmp_path_factory.mktemp("tiny_eval")
    for identity in sorted(set(truth.values()))[:2]:
        for name in sorted(n for n in truth if truth[n] == identity)[:3]:
            link = root / SET / identity / name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src / name, link)
    return root


def run_script(name: str, *args, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def read_outputs(out: Path):
    """OUT.json parses; OUT.md holds a Markdown table (header, separator, rows of equal width)."""
    data = json.loads(out.with_suffix(".json").read_text())
    lines = [l for l in out.with_suffix(".md").read_text().splitlines() if l.startswith("|")]
    assert len(lines) >= 3 and set(lines[1]) <= set("|-")
    widths = {l.count("|") for l in lines[:3]}
    assert len(widths) == 1, lines[:3]
    return data


def in_unit(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_eval_quality(tiny_eval_root, tmp_path):
    out = tmp_path / "quality"
    run_script("eval_quality.py", "--eval-root", tiny_eval_root, "--set", f"{SET}:clusterer.min_cluster_size=2",
               "--config", "default: tracking=off", "--cache-dir", tmp_path / "cache", "--out", out, "--quiet")
    (row,) = read_outputs(out)
    assert row["images"] == 6 and in_unit(row["bcubed_f1"]) and in_unit(row["pairwise_f1"])


def test_bench_mtcnn(tiny_eval_root, tmp_path):
    out = tmp_path / "mtcnn"
    run_script("bench_mtcnn.py", "--eval-root", tiny_eval_root, "--set", SET, "--repeat", 1, "--out", out)
    data = read_outputs(out)
    row = data["sets"][SET]
    assert row["images"] == 6 and row["backends"]["onnx"]["found"] == 6  # real faces, one per crop
    assert data["model_ids"]["onnx"].startswith("mtcnn-onnx:") and data["group_photo"]["onnx"]["faces"] == 6
    assert "torch" in data["model_ids"] or "idcluster[torch]" in data["notes"]["torch"]
    if "torch" in data["model_ids"]:
        assert in_unit(row["agreement"]["box_iou_mean"])


def test_bench_pipeline_cold_then_warm(tiny_eval_root, tmp_path):
    out = tmp_path / "pipeline"
    stdout = run_script("bench_pipeline.py", "--input", tiny_eval_root / SET, "--cold", 1, "--warm", 1,
                        "--no-settle", "--override", "tracking=off", "--out", out)
    data = read_outputs(out)
    assert "Where the time goes" in stdout
    cold, warm = data["runs"]
    assert cold["images"] == warm["images"] == 6
    assert cold["computed"].get("embed", 0) == cold["faces"] > 0
    assert not warm["computed"].get("detect") and not warm["computed"].get("embed")  # all from cache
    assert cold["peak_rss_max_process_mb"] > 0 and {r["stage"] for r in data["breakdown"]} >= {"total wall", "detect"}


def test_bench_cluster_quick(tmp_path):
    out = tmp_path / "cluster"
    run_script("bench_cluster.py", "--quick", "--no-settle", "--only", "idcluster:hdbscan", "sklearn DBSCAN",
               "--out", out)
    data = read_outputs(out)
    assert [r["clusterer"].split("(")[0] for r in data["fits"]] == ["idcluster:hdbscan", "sklearn DBSCAN"]
    for r in data["fits"]:
        assert r["status"] == "ok" and in_unit(r["bcubed_f1"]) and r["identities_true"] > 1
    complete = [r for r in data["sweep"] if r.get("measured") == "all"]  # all 100 points timed and scored
    assert len(complete) == 3 and all(in_unit(r["best_bcubed_f1"]) for r in complete)
    assert all(r["status"] == "ok" for r in data["sweep"])
    assert next(r for r in complete if r["sweep"].startswith("hdbscan") and "matches_full_fit" in r)["matches_full_fit"]


def test_bench_peers_quick(tiny_eval_root, tmp_path):
    out = tmp_path / "peers"
    run_script("bench_peers.py", "--eval-root", tiny_eval_root, "--set", SET, "--recipe-min-samples", 2, "--skip", "c",
               "--no-settle", "--override", "tracking=off", "--out", out, timeout=180)
    rows = read_outputs(out)["rows"]
    assert {r["row"] for r in rows} == set("abde")  # c is d's code path with other overrides
    for r in rows:
        if r["row"] != "e" or "bcubed_f1" in r:  # face-grouper: scored where installed, else a note why not
            assert r["images"] == 6 and in_unit(r["bcubed_f1"]), r
        else:
            assert r["note"]


def test_bench_gpu_cpu_path(tmp_path):
    """The GPU benchmark's CPU path (no GPU here): synthetic faces, every stage timed, JSON written."""
    out = tmp_path / "gpu.json"
    run_script("bench_gpu.py", "--quick", "--device", "cpu", "--out", out, timeout=300)
    data = json.loads(out.read_text())
    assert data["images"] == 24 and data["faces"] >= 20 and data["embedder_runs_on"] == "onnxruntime CPU"
    assert all(data["stages"][s]["images_per_s"] > 0 for s in ("decode", "detect", "embed"))
    assert data["bcubed_f1"] >= 0.8 and data["embedder_alone"][0]["faces_per_s"] > 0


def test_bench_appearance(tiny_eval_root, tmp_path):
    out = tmp_path / "auc"
    run_script("bench_appearance.py", "--eval-root", tiny_eval_root, "--set", SET, "--out", out)
    (row,) = read_outputs(out)
    assert row["images"] == 6 and in_unit(row["appearance"]) and in_unit(row["hsv_16x8x8"])


def test_bench_instance(tiny_eval_root, tmp_path):
    out = tmp_path / "instance"
    run_script("bench_instance.py", "--eval-root", tiny_eval_root, "--set", SET, "--tune", SET, "--speed-images", 4,
               "--settle", 0, "--out", out)
    data = read_outputs(out)
    feats = data["sets"][SET]["features"]
    assert data["sets"][SET]["images"] == 6 and {"appearance", "mnv2_320", "mnv2_1280", "fused"} <= set(feats)
    assert all(in_unit(f["pair_auc"]) and in_unit(f["bcubed_f1"]) for f in feats.values())
    assert feats["mnv2_320"]["pair_auc"] == 1.0  # two real people, three variants each
    assert data["model_ids"]["mnv2_320"].startswith("mobilenetv2:") and set(data["batch_speed_ms_per_image"]) == {"1", "8", "32"}


def test_bench_seeds(tiny_eval_root, tmp_path):
    out = tmp_path / "seeds"
    run_script("bench_seeds.py", "--eval-root", tiny_eval_root, "--set", SET, "--seeds", "0,1",
               "--config", "default", "--config", "constrained", "--cache-dir", tmp_path / "cache", "--out", out,
               timeout=300)
    rows = read_outputs(out)
    assert [(r["seeds_per_character"], r["config"]) for r in rows] == [(0, "default"), (0, "constrained"), (1, "default"), (1, "constrained")]
    assert all(in_unit(r["bcubed_f1_all"]) for r in rows)


def test_bench_pose(tiny_eval_root, tmp_path):
    out = tmp_path / "pose"
    run_script("bench_pose.py", "--eval-root", tiny_eval_root, "--set", SET, "--out", out)
    data = read_outputs(out)
    assert [r["landmarks"] for r in data["estimators"]] == ["dlib68", "five_point"]
    assert all(r["faces"] == 6 and r["cpu_ms_per_face"] > 0 for r in data["estimators"])
    assert [r["estimator"] for r in data["stability"]] == ["dlib68", "dlib68_single"]
    assert all(r["faces"] == 6 and in_unit(r["mirror_within_5"]) and r["mirror_max"] >= 0 for r in data["stability"])


def test_bench_review_small(tmp_path):
    out = tmp_path / "review"
    run_script("bench_review.py", "--images", 120, "--identities", 6, "--out", out, timeout=300)
    data = read_outputs(out)
    assert [r["run"].split()[0] for r in data["rows"]] == ["cold", "warm"]
    for r in data["rows"]:
        assert r["images"] == 120 and r["identities"] >= 2 and r["first_view_s"] > 0 and r["merge_s"] > 0
