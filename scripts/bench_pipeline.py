#!/usr/bin/env python
"""End-to-end speed of `idcluster cluster`: cold (empty cache) and warm (everything cached).

Default input: the LFW 40 ids + distractors, ORL and Simpsons sets of
../shared/eval symlinked together (~1,170 images), or any folder (--input).
Each run is the user's own command (`python -m idcluster cluster ... --quiet`)
in a subprocess: wall time, CPU time, peak RSS of the process tree (the worker
pool included), and the per-stage seconds idcluster writes to its JSON. Worker
stages (decode, detect, align+embed) are summed over workers, so their wall
share is about sum / workers.

  python scripts/bench_pipeline.py                    # full default set, 1 cold + 2 warm runs
  python scripts/bench_pipeline.py --quick            # 1 image per identity (~144 images)
  python scripts/bench_pipeline.py --input photos/ --override embedder=facenet
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _bench_common import (
    DEFAULT_EVAL_ROOT,
    idcluster_cmd,
    link_input,
    machine_info,
    markdown,
    missing_sets,
    quiet_run,
    run_measured,
    tail,
    write_outputs,
)
from rich.console import Console

DEFAULT_SETS = ["lfw_150px_40ids", "lfw_150px_distractor_singletons", "orl_att_faces", "simpsons14_64px_gray"]
TARGETS = {"cold": 40.0, "warm": 5.0}  # seconds on ~1,200 images (issue #5), 2-core CPU
# Stages as idcluster's JSON names them (statistics.timings_s); worker stages are summed over workers.
WORKER_STAGES = [("decode", "decode"), ("detect", "detect"), ("embed", "align+embed")]
PARENT_STAGES = [("reduce", "reduce"), ("cluster", "cluster"), ("export", "export")]

RUN_COLUMNS = [
    ("run", "{}"), ("images", "{}"), ("faces", "{}"), ("wall_s", "{:.1f}"), ("images_per_s", "{:.1f}"),
    ("faces_per_s", "{:.1f}"), ("cpu_s", "{:.1f}"), ("peak_rss_tree_mb", "{:.0f}"),
    ("peak_rss_max_process_mb", "{:.0f}"), ("load1", "{:.2f}"), ("others_cpu_share", "{:.2f}"), ("attempts", "{}"),
]
STAGE_COLUMNS = [("stage", "{}"), ("cold_s", "{:.2f}"), ("warm_s", "{:.2f}"), ("note", "{}")]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, help="any image folder (default: the eval sets below, symlinked)")
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT, help="folder holding the labelled sets")
    ap.add_argument("--set", action="append", dest="sets", help=f"eval set name (repeatable; default {' + '.join(DEFAULT_SETS)})")
    ap.add_argument("--per-identity", type=int, help="keep only the first N images of each identity")
    ap.add_argument("--quick", action="store_true", help="smoke-test size: --per-identity 1, 1 cold + 1 warm run")
    ap.add_argument("--cold", type=int, default=1, help="cold runs (each with a fresh, empty cache)")
    ap.add_argument("--warm", type=int, default=2, help="warm runs (all stages cached)")
    ap.add_argument("--warm-variant", action="append", default=[], metavar="OVERRIDE",
                    help="one more warm run with this extra override, e.g. tracking=off (repeatable; not in the verdict)")
    ap.add_argument("--workers", type=int, help="idcluster workers= (default: the config's)")
    ap.add_argument("--override", action="append", default=[], help="extra idcluster override (repeatable)")
    ap.add_argument("--no-settle", action="store_true", help="no waiting for a quiet CPU, no reruns (smoke tests)")
    ap.add_argument("--settle-s", type=float, default=300.0, help="longest wait for a quiet CPU before a run")
    ap.add_argument("--retries", type=int, default=3, help="reruns of a run during which other jobs used >10%% of the CPU")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/pipeline"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.per_identity = args.per_identity or 1
        args.cold, args.warm = 1, 1
    if args.cold < 1:
        ap.error("--cold must be at least 1 (the warm runs reuse its cache)")
    return args


def fail(message: str) -> None:
    """A usage problem: one line on stderr, exit status 2 (as eval_quality.py)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def prepare_input(args, tmp: Path) -> tuple[Path, str]:
    if args.input:
        if not args.input.is_dir():
            fail(f"input folder not found: {args.input}")
        return args.input.resolve(), str(args.input)
    names = args.sets or DEFAULT_SETS
    missing = missing_sets(args.eval_root, names)
    if missing:
        fail(f"eval sets not found under {args.eval_root}: {', '.join(missing)} (pass --eval-root or --input)")
    link_input(args.eval_root, names, tmp / "input", args.per_identity)
    label = " + ".join(names) + (f" ({args.per_identity}/identity)" if args.per_identity else "")
    return tmp / "input", label


def one_run(kind: str, i: int, input_dir: Path, cache_for, tmp: Path, args, extra: tuple = ()) -> dict:
    """One measured `idcluster cluster`; rerun (cold: on a fresh cache) while other jobs shared the CPU."""
    name = f"{kind} {i + 1}" + "".join(f" + {e}" for e in extra)

    def measure(attempt: int) -> dict:
        cache, out_dir = cache_for(attempt), tmp / f"out-{kind}-{i}-{attempt}"
        overrides = [f"input_dir={input_dir}", f"output_dir={out_dir}", f"cache_dir={cache}", *args.override, *extra]
        if args.workers is not None:
            overrides.append(f"workers={args.workers}")
        log = tmp / f"{kind}-{i}-{attempt}.log"
        with Console(stderr=True).status(f"{name} (attempt {attempt + 1}): idcluster cluster on {input_dir} ..."):
            m = run_measured(idcluster_cmd(*overrides), log=log, cwd=tmp)  # MLflow's default store lands in tmp
        if m["returncode"] != 0:
            raise SystemExit(f"idcluster failed ({name}, exit {m['returncode']}):\n{tail(log)}")
        report = json.loads((out_dir / "identity_clustering.json").read_text())
        stats = report["statistics"]
        return {**m, "cache": str(cache), "images": stats["images"], "faces": stats["embedded"],
                "images_with_face": stats["images_with_face"], "computed": stats["computed"],
                "timings_s": stats["timings_s"], "workers": report["config"]["workers"]}

    retries, settle_s = (0, 0.0) if args.no_settle else (args.retries, args.settle_s)
    row = {"run": name, "kind": kind if not extra else f"{kind} variant", "extra_overrides": list(extra),
           **quiet_run(measure, retries, settle_s)}
    row["cpu_s"] = row["cpu_user_s"] + row["cpu_sys_s"]
    row["images_per_s"] = row["images"] / row["wall_s"]
    row["faces_per_s"] = row["faces"] / row["wall_s"]
    return row


def startup_seconds(args) -> float:
    """Interpreter start + idcluster's imports (`python -m idcluster --help`), median of 3 quiet runs."""
    retries, settle_s, repeats = (0, 0.0, 1) if args.no_settle else (args.retries, args.settle_s, 3)
    cmd = [sys.executable, "-m", "idcluster", "--help"]
    return statistics.median(quiet_run(lambda a: run_measured(cmd), retries, settle_s)["wall_s"] for _ in range(repeats))


def median_timings(rows: list[dict]) -> dict:
    keys = {k for r in rows for k in r["timings_s"]}
    return {k: statistics.median(r["timings_s"].get(k, 0.0) for r in rows) for k in keys}


def breakdown(cold: list[dict], warm: list[dict], startup_s: float) -> list[dict]:
    """Where the wall time goes, median over runs of each kind."""
    rows = []
    tc, tw = median_timings(cold), median_timings(warm) if warm else {}
    wc = statistics.median(r["wall_s"] for r in cold)
    ww = statistics.median(r["wall_s"] for r in warm) if warm else None
    workers = cold[0]["workers"]
    rows.append({"stage": "python start + imports", "cold_s": startup_s, "warm_s": startup_s if warm else None,
                 "note": "`python -m idcluster --help`, measured separately"})
    rows.append({"stage": "scan (sha256)", "cold_s": tc.get("scan"), "warm_s": tw.get("scan"), "note": "parent"})
    for key, name in WORKER_STAGES:
        rows.append({"stage": name, "cold_s": tc.get(key), "warm_s": tw.get(key),
                     "note": f"summed over {workers} workers (wall ~ sum / {workers})"})
    rows.append({"stage": "detect+embed pass (wall)", "cold_s": tc.get("faces_wall"), "warm_s": tw.get("faces_wall"),
                 "note": "pool start + worker model loading + the three stages above"})
    for key, name in PARENT_STAGES:
        rows.append({"stage": name, "cold_s": tc.get(key), "warm_s": tw.get(key),
                     "note": "cache hit when absent" if key != "export" else "copy files + JSON"})

    def rest(t: dict, wall: float | None) -> float | None:
        if wall is None:
            return None
        timed = sum(t.get(k, 0.0) for k in ("scan", "faces_wall", "reduce", "cluster", "export"))
        return wall - startup_s - timed

    rows.append({"stage": "other (untimed by idcluster)", "cold_s": rest(tc, wc), "warm_s": rest(tw, ww),
                 "note": "wall - the above: config, model hashes, cache reads, metrics, MLflow, JSON, exit"})
    rows.append({"stage": "total wall", "cold_s": wc, "warm_s": ww, "note": "median"})
    return rows


def verdict(cold: list[dict], warm: list[dict], full_set: bool) -> dict:
    out = {}
    for kind, rows in (("cold", cold), ("warm", warm)):
        if rows:
            wall = statistics.median(r["wall_s"] for r in rows)
            out[kind] = {"median_wall_s": wall, "target_s": TARGETS[kind],
                         "met": wall <= TARGETS[kind] if full_set else None}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idcluster-bench-") as t:
        tmp = Path(t)
        input_dir, label = prepare_input(args, tmp)
        startup = startup_seconds(args)
        cold, warm = [], []
        for i in range(args.cold):  # a fresh, empty cache per cold run and attempt
            cold.append(one_run("cold", i, input_dir, lambda a, i=i: tmp / f"cache-{i}-{a}", tmp, args))
            print(markdown([cold[-1]], RUN_COLUMNS).splitlines()[-1], flush=True)
        warm_cache = Path(cold[-1]["cache"])  # the last cold run's, complete
        for i in range(args.warm):
            warm.append(one_run("warm", i, input_dir, lambda a: warm_cache, tmp, args))
            print(markdown([warm[-1]], RUN_COLUMNS).splitlines()[-1], flush=True)
        variants = []
        for i, extra in enumerate(args.warm_variant):
            variants.append(one_run("warm", args.warm + i, input_dir, lambda a: warm_cache, tmp, args, (extra,)))
            print(markdown([variants[-1]], RUN_COLUMNS).splitlines()[-1], flush=True)
    stages = breakdown(cold, warm, startup)
    full_set = not args.input and not args.per_identity and not args.sets
    result = {"input": label, "overrides": args.override, "machine": machine_info(), "startup_s": startup,
              "runs": cold + warm + variants, "breakdown": stages, "targets": verdict(cold, warm, full_set)}
    tables = [f"Input: {label}\n", markdown(cold + warm + variants, RUN_COLUMNS), "Where the time goes (median):\n",
              markdown(stages, STAGE_COLUMNS)]
    if full_set:
        lines = [f"- {k}: {v['median_wall_s']:.1f} s vs target <= {v['target_s']:.0f} s: {'met' if v['met'] else 'MISSED'}"
                 for k, v in result["targets"].items()]
        tables.append("\n".join(lines) + "\n")
    write_outputs(args.out, result, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
