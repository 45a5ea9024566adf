"""scripts/bench_tracking.py on six images: exit times with tracking off and on, and when the run appears."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bench_tracking_reports_exit_and_appearance(demo_set, tmp_path):
    src, truth = demo_set
    folder = tmp_path / "in"
    folder.mkdir()
    for identity in sorted(set(truth.values()))[:2]:
        for name in sorted(n for n in truth if truth[n] == identity)[:3]:
            shutil.copy2(src / name, folder / name)
    out = tmp_path / "tracking"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_tracking.py"), "--input", str(folder),
                           "--pairs", "1", "--profile", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    off, on = data["rows"]
    assert off["tracking"] == "off" and off["to_visible_s"] is None and off["to_exit_s"] >= off["to_result_s"] > 0
    assert on["tracking"] == "on" and on["to_visible_s"] is not None and on["to_logged_s"] >= on["to_visible_s"]
    assert {s["step"] for s in data["profile"]} >= {"import mlflow", "process total (incl. exit)"}
    ratio = data["warm_vs_cold"]  # the goal: warm with tracking on <= 0.25 of cold
    assert ratio["cold_to_exit_s"] == data["cold"]["to_exit_s"] > 0 and ratio["warm_on_to_exit_s"] == on["to_exit_s"]
    assert ratio["warm_on_over_cold"] == on["to_exit_s"] / data["cold"]["to_exit_s"]
