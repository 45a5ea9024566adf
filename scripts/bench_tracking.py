#!/usr/bin/env python
"""What MLflow tracking costs a warm `idcluster cluster`, and when the run appears in MLflow.

One cold run fills a private cache and MLflow store, then warm runs alternate
tracking=off and tracking=on (so both see the same machine load). For each run:
wall time to the printed summary (the "wrote .../identity_clustering.json"
line, read from the child's stdout as it streams) and to exit; with tracking
on, also when the run appears in the store (its row in the SQLite store's
`runs` table) and when it is complete (status FINISHED), polled every 50 ms
from the command's start. The next run starts only after the detached logger
is done, so runs do not overlap.

--profile first times, in a fresh process, each part of logging one run the
way `cluster` did before the detached logger (MLflow import, store opening on
an existing and on a new store, start_run, params + metrics, artifacts, the
scatter drawing, end_run).

  python scripts/bench_tracking.py                 # LFW 40 ids from ../shared/eval, 3 pairs
  python scripts/bench_tracking.py --profile --pairs 5 --out benchmarks/tracking
  python scripts/bench_tracking.py --input photos/ --pairs 5
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _bench_common import DEFAULT_EVAL_ROOT, idcluster_cmd, link_input, machine_info, markdown, write_outputs

COLUMNS = [("run", "{}"), ("tracking", "{}"), ("to_result_s", "{:.2f}"), ("to_exit_s", "{:.2f}"),
           ("to_visible_s", "{:.2f}"), ("to_logged_s", "{:.2f}")]
SUMMARY = [("tracking", "{}"), ("runs", "{}"), ("median_to_result_s", "{:.2f}"), ("median_to_exit_s", "{:.2f}"),
           ("median_to_visible_s", "{:.2f}"), ("median_to_logged_s", "{:.2f}")]
PROFILE_COLUMNS = [("step", "{}"), ("seconds", "{:.2f}")]

# Mirrors what `cluster` did in-process before the detached logger (Tracker + log_cluster_run), timed per step.
PROFILE = textwrap.dedent("""
    import json, sys, time, tempfile
    from pathlib import Path
    t = [("start", time.perf_counter())]
    mark = lambda name: t.append((name, time.perf_counter()))
    import numpy as np
    from idcluster.experiments import tracking
    mark("python, numpy, idcluster.experiments.tracking")
    out, uri, fresh_uri = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    report = json.loads((out / "identity_clustering.json").read_text())
    import mlflow
    mark("import mlflow")
    tracker = tracking.Tracker(uri, "idcluster")
    mark("open the existing store (SQLAlchemy engine, schema check, experiment lookup)")
    tracking.Tracker(fresh_uri, "idcluster")
    mark("(a first run only: create a new store, migrate its schema)")
    tracker = tracking.Tracker(uri, "idcluster")  # back to the existing store for the run
    run = mlflow.start_run(run_name="profile")
    mark("start_run")
    mlflow.log_params(tracking.flatten(report["config"]))
    mlflow.log_metrics(tracking.numeric(report["metrics"]))
    mark("params + metrics")
    mlflow.log_artifact(str(out / "identity_clustering.json"))
    mlflow.log_artifact(str(out / "contact_sheet.png"))
    mark("artifacts: JSON + contact sheet (copies)")
    X = np.random.default_rng(0).normal(size=(len(report["images"]), 128)).astype(np.float32)
    labels = np.arange(len(X)) % 40
    with tempfile.TemporaryDirectory() as tmp:
        tracking.embedding_scatter(X, labels, Path(tmp) / "embedding_scatter.png")
        mark("draw the embedding scatter (matplotlib import, PCA, PNG)")
        mlflow.log_artifact(str(Path(tmp) / "embedding_scatter.png"))
    mlflow.end_run()
    mark("scatter artifact + end_run")
    print(json.dumps([(n, b - a) for (_, a), (n, b) in zip(t, t[1:])]))
""")


def runs_in_store(db: Path) -> tuple[int, int]:
    """(runs, finished runs) in an MLflow SQLite store; (0, 0) before it exists."""
    if not db.is_file():
        return 0, 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*), coalesce(sum(status = 'FINISHED'), 0) FROM runs").fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # schema not created yet
        return 0, 0


def timed(cmd: list[str], cwd: Path, db: Path, tracked: bool, timeout: float = 300) -> dict:
    before = runs_in_store(db)
    t0 = time.perf_counter()
    to_result = None
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if to_result is None and line.startswith("wrote ") and "identity_clustering.json" in line:
            to_result = time.perf_counter() - t0
    proc.wait()
    to_exit = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"idcluster failed (exit {proc.returncode}):\n{''.join(lines[-20:])}")
    row = {"to_result_s": to_result, "to_exit_s": to_exit, "to_visible_s": None, "to_logged_s": None}
    if tracked:  # the detached logger: poll the store until the run is there, then complete
        while time.perf_counter() - t0 < timeout:
            n, finished = runs_in_store(db)
            now = time.perf_counter() - t0
            if row["to_visible_s"] is None and n > before[0]:
                row["to_visible_s"] = now
            if finished > before[1]:
                row["to_logged_s"] = now
                row["to_visible_s"] = row["to_visible_s"] or now
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"the run did not appear in {db} within {timeout:.0f} s; see the spool's logger.log")
    return row


def profile(out_dir: Path, db: Path, tmp: Path) -> list[dict]:
    cmd = [sys.executable, "-c", PROFILE, str(out_dir), f"sqlite:///{db}", f"sqlite:///{tmp / 'fresh.db'}"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    if res.returncode != 0:
        raise SystemExit(f"profile failed:\n{res.stderr[-2000:]}")
    steps = [{"step": n, "seconds": s} for n, s in json.loads(res.stdout.strip().splitlines()[-1])]
    steps.append({"step": "process total (incl. exit)", "seconds": time.perf_counter() - t0})
    return steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, help="any image folder (default: --sets of the eval root)")
    ap.add_argument("--sets", nargs="+", default=["lfw_150px_40ids"],
                    help="eval sets linked as the input (issue 19's warm/cold goal: lfw_150px_40ids "
                         "lfw_150px_distractor_singletons)")
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT)
    ap.add_argument("--pairs", type=int, default=3, help="warm runs per setting (alternating)")
    ap.add_argument("--profile", action="store_true", help="also time each step of in-process logging")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/tracking"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    steps = []
    with tempfile.TemporaryDirectory(prefix="idcluster-bench-tracking-") as tmp:
        tmp = Path(tmp)
        input_dir = args.input
        if input_dir is None:
            if not all((args.eval_root / s).is_dir() for s in args.sets):
                print(f"eval sets {' '.join(args.sets)} not all found under {args.eval_root} (pass --input)", file=sys.stderr)
                return 2
            link_input(args.eval_root, args.sets, tmp / "input")
            input_dir = tmp / "input"
        db = tmp / "mlflow.db"
        base = [f"input_dir={input_dir}", f"cache_dir={tmp / 'cache'}", "clusterer.min_cluster_size=3",
                f"tracking_uri=sqlite:///{db}"]
        cold = timed(idcluster_cmd(*base, f"output_dir={tmp / 'cold'}", "tracking=on"), tmp, db, True)  # fills cache and store
        print(f"cold (tracking on): {json.dumps(cold)}", flush=True)
        if args.profile:
            steps = profile(tmp / "cold", db, tmp)
            print(markdown(steps, PROFILE_COLUMNS), flush=True)
        rows = []
        for i in range(args.pairs):
            for tracking in ("off", "on"):
                m = timed(idcluster_cmd(*base, f"output_dir={tmp / f'w{i}{tracking}'}", f"tracking={tracking}"), tmp, db,
                          tracking == "on")
                rows.append({"run": i + 1, "tracking": tracking, **m})
                print(markdown([rows[-1]], COLUMNS).splitlines()[-1], flush=True)

    def med(t, key):
        values = [r[key] for r in rows if r["tracking"] == t and r[key] is not None]
        return statistics.median(values) if values else None

    summary = [{"tracking": t, "runs": sum(r["tracking"] == t for r in rows), **{f"median_{k}": med(t, k) for k in
               ("to_result_s", "to_exit_s", "to_visible_s", "to_logged_s")}} for t in ("off", "on")]
    warm_on = summary[1]["median_to_exit_s"]
    cold_ratio = {"cold_to_exit_s": cold["to_exit_s"], "warm_on_to_exit_s": warm_on,
                  "warm_on_over_cold": warm_on / cold["to_exit_s"] if warm_on else None}
    data = {"machine": machine_info(), "load_before": load, "load_after": os.getloadavg(),
            "input": str(args.input or " + ".join(args.sets)), "profile": steps, "cold": cold,
            "warm_vs_cold": cold_ratio, "rows": rows, "summary": summary}
    tables = ["# Warm `idcluster cluster`: tracking off vs on\n",
              f"Load average before / after: {' '.join(f'{v:.2f}' for v in load)} / "
              f"{' '.join(f'{v:.2f}' for v in data['load_after'])}\n", markdown(summary, SUMMARY), markdown(rows, COLUMNS),
              markdown([cold_ratio], [(k, "{:.2f}") for k in cold_ratio])]
    if steps:
        tables += ["## Logging one run in-process (before the detached logger), per step\n", markdown(steps, PROFILE_COLUMNS)]
    write_outputs(args.out, data, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
