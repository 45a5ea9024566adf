#!/usr/bin/env python
"""What MLflow tracking costs a warm `idcluster cluster`, and when the result appears.

One cold run fills a private cache, then warm runs alternate tracking=off and
tracking=on (so both see the same machine load). For each run: wall time to
the printed summary (the "wrote .../identity_clustering.json" line, read from
the child's stdout as it streams) and to exit. With tracking on, MLflow is
imported on a background thread during the run, so the summary should appear
about as early as with tracking off; logging the run follows it.

  python scripts/bench_tracking.py                 # LFW 40 ids from ../shared/eval, 3 pairs
  python scripts/bench_tracking.py --input photos/ --pairs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import DEFAULT_EVAL_ROOT, idcluster_cmd, link_input, machine_info, markdown, write_outputs

COLUMNS = [("run", "{}"), ("tracking", "{}"), ("to_result_s", "{:.2f}"), ("to_exit_s", "{:.2f}")]
SUMMARY = [("tracking", "{}"), ("runs", "{}"), ("median_to_result_s", "{:.2f}"), ("median_to_exit_s", "{:.2f}")]


def timed(cmd: list[str], cwd: Path) -> dict:
    t0 = time.perf_counter()
    to_result = None
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if to_result is None and line.startswith("wrote ") and "identity_clustering.json" in line:
            to_result = time.perf_counter() - t0
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"idcluster failed (exit {proc.returncode}):\n{''.join(lines[-20:])}")
    return {"to_result_s": to_result, "to_exit_s": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, help="any image folder (default: LFW 40 ids of the eval root)")
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT)
    ap.add_argument("--pairs", type=int, default=3, help="warm runs per setting (alternating)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/tracking"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idcluster-bench-tracking-") as tmp:
        tmp = Path(tmp)
        input_dir = args.input
        if input_dir is None:
            if not (args.eval_root / "lfw_150px_40ids").is_dir():
                print(f"eval set not found under {args.eval_root} (pass --input)", file=sys.stderr)
                return 2
            link_input(args.eval_root, ["lfw_150px_40ids"], tmp / "input")
            input_dir = tmp / "input"
        base = [f"input_dir={input_dir}", f"cache_dir={tmp / 'cache'}", "clusterer.min_cluster_size=3",
                f"tracking_uri=sqlite:///{tmp / 'mlflow.db'}"]
        timed(idcluster_cmd(*base, f"output_dir={tmp / 'cold'}", "tracking=on"), tmp)  # fills cache and store
        rows = []
        for i in range(args.pairs):
            for tracking in ("off", "on"):
                m = timed(idcluster_cmd(*base, f"output_dir={tmp / f'w{i}{tracking}'}", f"tracking={tracking}"), tmp)
                rows.append({"run": i + 1, "tracking": tracking, **m})
                print(markdown([rows[-1]], COLUMNS).splitlines()[-1], flush=True)
    summary = [{"tracking": t, "runs": sum(r["tracking"] == t for r in rows),
                "median_to_result_s": statistics.median(r["to_result_s"] for r in rows if r["tracking"] == t),
                "median_to_exit_s": statistics.median(r["to_exit_s"] for r in rows if r["tracking"] == t)}
               for t in ("off", "on")]
    write_outputs(args.out, {"machine": machine_info(), "input": str(args.input or "lfw_150px_40ids"),
                             "rows": rows, "summary": summary},
                  ["# Warm `idcluster cluster`: tracking off vs on\n", markdown(summary, SUMMARY), markdown(rows, COLUMNS)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
