"""scripts/bench_suggestions.py runs its real code path on a tiny labelled set (shape, not figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bench_suggestions_small(demo_set, tmp_path):
    src, truth = demo_set
    root = tmp_path / "eval"
    for identity in sorted(set(truth.values()))[:3]:  # 3 people x 4 crops, laid out like ../shared/eval
        for name in sorted(n for n in truth if truth[n] == identity)[:4]:
            link = root / "tiny" / identity / name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src / name, link)
    out = tmp_path / "suggestions"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_suggestions.py"), "--eval-root", str(root),
                           "--sets", "tiny", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["clustering"].split()[0] for r in rows] == ["truth", "default", "over-split:", "over-split:", "over-split:"]
    truth_row = rows[0]
    assert truth_row["identities"] == 3 and truth_row["suggestions"] == 0 and truth_row["bcubed_f1_before"] == 1.0
    for r in rows:
        assert r["threshold"] == 0.07 and r["suggestions"] >= r["true_suggested"] >= 0
    assert "| set | clustering |" in out.with_suffix(".md").read_text()
