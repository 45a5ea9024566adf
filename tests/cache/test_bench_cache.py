"""scripts/bench_cache.py on a few hundred images: both layouts measured, the same entries stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bench_cache_compares_the_layouts(tmp_path):
    out = tmp_path / "cache"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_cache.py"), "--entries", "300",
                           "--root", str(tmp_path), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {r["layout"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert set(rows) == {"files", "packed"}
    assert rows["files"]["files"] == 2 * 300 + 1 and rows["packed"]["files"] <= 4  # + CACHEDIR.TAG / + WAL, shm
    assert rows["files"]["entries"] == rows["packed"]["entries"] == 600
    assert rows["packed"]["pruned"] > 0 and rows["packed"]["stored_mb"] < rows["files"]["stored_mb"]
    assert "| packed | 300 |" in out.with_suffix(".md").read_text()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("idcluster-bench-cache-")] == []  # cleaned up
