#!/usr/bin/env python
"""Clusterer speed, peak memory and quality on synthetic face-like embeddings.

Generator (seeded, `generate()`): unit vectors in --dim dimensions shaped like
FaceNet's 512-d embeddings on LFW (measured here: same-person cosine distance
median 0.31, different-person median 0.78, nearest other person median 0.45):

- a shared "face" direction m; look-alike families F = unit(m + 1.1 g / sqrt(d));
  identity centres c = unit(F_family + 0.7 g / sqrt(d)), 4 identities per family;
- identity sizes heavy-tailed: floor(2 U^(-1/1.5)) (Pareto, alpha 1.5, min 2,
  capped at n/20), plus 10% singletons (one-photo people, like distractors);
- a face = unit(c + s z / sqrt(d)), z ~ N(0, I), s = U(0.5, 0.85) per identity
  times exp(0.25 N(0,1)) per face: same-person cosine distance median ~0.31.

Every clusterer fit runs in its own spawned process (time, peak RSS, hard
timeout) and is scored against the generator's truth (BCubed, pairwise F1;
singletons are their own identity) so speed never hides a merge. Clusterers:
each option of idcluster's `clusterer` config group (composed with
embedder=--embedder-like, whose calibrated distance_threshold the threshold
clusterers use) plus scikit-learn's directly. A fit whose time or memory,
extrapolated from the smaller sizes (power law), exceeds the limits is skipped
and its estimate reported.

The sweep: a 100-point grid of HDBSCAN (min_samples x min_cluster_size x
cluster_selection_epsilon) and of DBSCAN (min_samples x eps) at --sweep-n.
Naive = what `idcluster sweep` does per point today (the configured clusterer
fitted from scratch, plus its label-free metrics): a few points timed and
extrapolated to 100, except idcluster's HDBSCAN, which caches its tree per
min_samples and is timed on all 100. Shared = this script's own version of that
(one sklearn brute fit per min_samples, each point's labels cut from its tree;
for DBSCAN the DBSCAN* cut of the same tree), plus the same metrics: all 100.

  python scripts/bench_cluster.py                        # sizes 2000 5000, sweep at 10k
  python scripts/bench_cluster.py --sizes 10000 50000 100000
  python scripts/bench_cluster.py --quick                # smoke test (n=400, sweep at 400)
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench_common import OthersCpu, machine_info, markdown, quiet_run, write_outputs

# Exponents assumed for a clusterer measured at one size only (time, memory over the data).
DEFAULT_EXPONENT = 2.0
HDBSCAN_GRID = {"min_samples": [2, 3, 5, 8], "min_cluster_size": [2, 3, 5, 8, 12],
                "cluster_selection_epsilon": [0.0, 0.2, 0.4, 0.6, 0.8]}  # euclidean on unit vectors
DBSCAN_GRID = {"min_samples": [2, 3, 5, 8],  # 4 x 25 = 100; eps is cosine distance, as idcluster's dbscan takes it
               "eps": [round(0.05 + 0.025 * i, 3) for i in range(25)]}

FIT_COLUMNS = [
    ("n", "{}"), ("clusterer", "{}"), ("status", "{}"), ("seconds", "{:.2f}"), ("peak_rss_mb", "{:.0f}"),
    ("fit_mem_mb", "{:.0f}"), ("identities_true", "{}"), ("clusters", "{}"), ("noise_share", "{:.3f}"),
    ("bcubed_precision", "{:.3f}"), ("bcubed_recall", "{:.3f}"), ("bcubed_f1", "{:.3f}"), ("pairwise_f1", "{:.3f}"),
    ("load1", "{:.2f}"), ("others_cpu_share", "{:.2f}"),
]
SWEEP_COLUMNS = [
    ("sweep", "{}"), ("method", "{}"), ("points_timed", "{}"), ("seconds_timed", "{:.1f}"),
    ("seconds_for_100", "{:.1f}"), ("measured", "{}"), ("peak_rss_mb", "{:.0f}"), ("best_bcubed_f1", "{:.3f}"),
    ("best_point", "{}"), ("where_time_goes", "{}"), ("others_cpu_share", "{:.2f}"),
]


# ---------------------------------------------------------------- data


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def identity_sizes(n: int, rng, singles: float = 0.1, alpha: float = 1.5) -> list[int]:
    n_single = int(n * singles)
    cap = max(2, n // 20)
    sizes: list[int] = []
    while sum(sizes) < n - n_single:
        sizes.append(int(min(cap, np.floor(2 * (1 - rng.random()) ** (-1 / alpha)))))
    sizes[-1] -= sum(sizes) - (n - n_single)
    return [s for s in sizes if s > 0] + [1] * n_single


def generate(n: int, dim: int = 512, seed: int = 0, family: int = 4, a: float = 1.1, b: float = 0.7,
             spread: tuple[float, float] = (0.5, 0.85), jitter: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors with identity structure (see the module docstring) and their identity labels."""
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n, rng)
    k = len(sizes)
    m = _unit(rng.normal(size=(1, dim)))
    families = _unit(m + a * rng.normal(size=(-(-k // family), dim)) / np.sqrt(dim))
    centres = _unit(families[rng.integers(0, len(families), k)] + b * rng.normal(size=(k, dim)) / np.sqrt(dim))
    y = np.repeat(np.arange(k), sizes)
    s = rng.uniform(*spread, k)[y] * np.exp(jitter * rng.normal(size=n))
    X = _unit(centres[y] + s[:, None] * rng.normal(size=(n, dim)) / np.sqrt(dim))
    order = rng.permutation(n)  # no accidental help from input order
    return X[order].astype(np.float32), y[order]


# ---------------------------------------------------------------- clusterers


def clusterer_specs(embedder_like: str, only: list[str] | None) -> list[dict]:
    """idcluster's configured clusterers (each option of the group) plus scikit-learn's own."""
    from idcluster.config.compose import group_options

    specs = [{"name": f"idcluster:{o}", "kind": "config", "option": o, "embedder": embedder_like}
             for o in group_options("clusterer")]
    thr = _threshold(embedder_like)
    eps_euclid = float(np.sqrt(2 * thr))  # cosine t <=> euclidean sqrt(2t) on unit vectors
    specs += [
        {"name": "sklearn HDBSCAN(mcs=3, ms=2)", "kind": "sklearn", "cls": "HDBSCAN",
         "params": {"min_cluster_size": 3, "min_samples": 2, "copy": True}},
        {"name": "sklearn HDBSCAN(mcs=3, ms=2, brute)", "kind": "sklearn", "cls": "HDBSCAN",
         "params": {"min_cluster_size": 3, "min_samples": 2, "algorithm": "brute", "copy": True}},
        {"name": f"sklearn DBSCAN(eps={eps_euclid:.2f}, ms=3)", "kind": "sklearn", "cls": "DBSCAN",
         "params": {"eps": eps_euclid, "min_samples": 3}},
        {"name": f"sklearn Agglomerative(average, cos {thr:g})", "kind": "sklearn", "cls": "AgglomerativeClustering",
         "params": {"n_clusters": None, "metric": "cosine", "linkage": "average", "distance_threshold": thr}},
    ]
    if only:
        specs = [s for s in specs if any(o.lower() in s["name"].lower() for o in only)]
    return specs


def _threshold(embedder_like: str) -> float:
    from idcluster.config.compose import load_config

    cfg = load_config(["input_dir=.", f"embedder={embedder_like}"])
    return float(cfg.embedder.get("distance_threshold", 0.37))


def config_estimator(option: str, embedder: str, cache_dir: str, point: dict | None = None):
    """idcluster's configured clusterer; cache_dir is private to the caller, so nothing it caches
    (HDBSCAN's tree, via `memory`) outlives one measurement or lands in the working folder."""
    from idcluster.config.compose import build, load_config

    overrides = [f"clusterer.{k}={v}" for k, v in (point or {}).items()]
    cfg = load_config(["input_dir=.", f"cache_dir={cache_dir}", f"embedder={embedder}", f"clusterer={option}", *overrides])
    return build(cfg, "clusterer")


def build_estimator(spec: dict, cache_dir: str):
    if spec["kind"] == "config":
        return config_estimator(spec["option"], spec["embedder"], cache_dir)
    import sklearn.cluster

    return getattr(sklearn.cluster, spec["cls"])(**spec["params"])


def fit_predict(est, X: np.ndarray) -> np.ndarray:
    """As the pipeline calls it: clusterers that take `groups` (cannot-link) get one image per row."""
    import inspect

    if "groups" in inspect.signature(est.fit_predict).parameters:
        return np.asarray(est.fit_predict(X, groups=np.arange(len(X))))
    return np.asarray(est.fit_predict(X))


def quality(y_true: np.ndarray, labels: np.ndarray) -> dict:
    from idcluster.experiments.metrics import score

    m = score(y_true, labels)
    m["clusters"] = len(set(labels[labels >= 0].tolist()))
    m["noise_share"] = float((labels < 0).mean())
    return m


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_job(spec: dict, data: str, cache_dir: str, conn) -> None:
    """Child process: load the data, fit once, send timing, memory and quality back."""
    try:
        X = np.load(data + ".X.npy")
        y = np.load(data + ".y.npy")
        est = build_estimator(spec, cache_dir)
        base = _rss_mb()
        t0 = time.perf_counter()
        labels = fit_predict(est, X)
        seconds = time.perf_counter() - t0
        peak = _rss_mb()
        conn.send({"status": "ok", "seconds": seconds, "peak_rss_mb": peak, "fit_mem_mb": peak - base,
                   **quality(y, labels)})
    except Exception as e:  # noqa: BLE001 - reported as this row's status, the benchmark goes on
        conn.send({"status": f"error: {type(e).__name__}: {str(e)[:200]}"})


def in_child(target, args: tuple, timeout: float) -> dict:
    """Run target(*args, conn) in a spawned process; kill it after `timeout` seconds."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with OthersCpu() as others:
        proc.start()
        send.close()
        if recv.poll(timeout):
            out = recv.recv()
        else:
            out = {"status": f"timeout after {timeout:.0f} s (killed)"}
            proc.kill()
        proc.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    out["others_cpu_share"] = others.share(ours)
    return out


# ---------------------------------------------------------------- size scaling


def extrapolate(history: list[tuple[int, float]], n: int) -> float | None:
    """Power-law extrapolation from measured (n, value) points; exponent 2 from a single point."""
    pts = [(a, v) for a, v in history if v and v > 0]
    if not pts:
        return None
    if len(pts) == 1:
        (n0, v0), p = pts[0], DEFAULT_EXPONENT
    else:
        (n1, v1), (n0, v0) = pts[-2], pts[-1]
        p = max(1.0, np.log(v0 / v1) / np.log(n0 / n1)) if n0 != n1 else DEFAULT_EXPONENT
    return v0 * (n / n0) ** p


def available_mb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except ImportError:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def fit_or_skip(args, spec: dict, n: int, data: str, cache: str, h: dict) -> dict:
    """Measure one fit, or skip it where its extrapolated time or memory is out of reach."""
    est_t, est_m = extrapolate(h["t"], n), extrapolate(h["m"], n)
    too_slow = est_t is not None and est_t > args.max_fit_s
    too_big = est_m is not None and est_m > 0.7 * available_mb()
    if too_slow or too_big:
        why = []
        if est_t is not None:
            why.append(f"~{est_t:.0f} s" + (f" > {args.max_fit_s:.0f} s" if too_slow else ""))
        if est_m is not None:
            why.append(f"~{est_m / 1024:.1f} GiB" + (" > 70% of free RAM" if too_big else ""))
        return {"status": "skipped, estimated " + ", ".join(why), "estimated_seconds": est_t, "estimated_fit_mem_mb": est_m}
    # A private, empty cache per attempt: every fit is cold.
    row = quiet_run(lambda a: in_child(fit_job, (spec, data, f"{cache}-{a}"), args.timeout_s), args.retries, args.settle_s)
    if row["status"] == "ok":
        h["t"].append((n, row["seconds"]))
        h["m"].append((n, row["fit_mem_mb"]))
    elif row["status"].startswith("timeout"):
        h["t"].append((n, args.timeout_s))  # at least this slow: larger sizes get skipped
    return row


def bench_sizes(args, specs: list[dict], tmp: Path) -> list[dict]:
    from rich.progress import Progress

    rows, history = [], {s["name"]: {"t": [], "m": []} for s in specs}
    with Progress(transient=True) as progress:
        task = progress.add_task("fits", total=len(args.sizes) * len(specs))
        for n in args.sizes:
            data = str(tmp / f"data-{n}")
            X, y = generate(n, args.dim, args.seed)
            np.save(data + ".X.npy", X)
            np.save(data + ".y.npy", y)
            for k, spec in enumerate(specs):
                progress.update(task, description=f"n={n} {spec['name']}")
                row = {"n": n, "clusterer": spec["name"], "identities_true": len(np.unique(y)), **spec}
                row.update(fit_or_skip(args, spec, n, data, str(tmp / f"cache-{n}-{k}"), history[spec["name"]]))
                rows.append(row)
                progress.console.print(markdown([row], FIT_COLUMNS).splitlines()[-1])
                progress.advance(task)
    return rows


# ---------------------------------------------------------------- the 100-point sweep


def grid(g: dict) -> list[dict]:
    keys = list(g)
    return [dict(zip(keys, v)) for v in itertools.product(*(g[k] for k in keys))]


def _best(y, points: list[tuple[dict, np.ndarray]]) -> tuple[float, dict]:
    from idcluster.experiments.metrics import bcubed_prf

    scored = [(bcubed_prf(y, labels)[2], p) for p, labels in points]
    return max(scored, key=lambda s: s[0])


def _point_metrics(X: np.ndarray, labels: np.ndarray) -> float:
    """idcluster's per-point label-free metrics (what its sweep computes); returns seconds."""
    from idcluster.experiments.metrics import label_free

    t0 = time.perf_counter()
    label_free(X, labels)
    return time.perf_counter() - t0


def naive_job(mode: str, kind: str, points: list[dict], embedder: str, cache_dir: str, data: str, conn) -> None:
    """Child: every grid point fitted as `idcluster sweep` or plain scikit-learn would, plus the
    label-free metrics idcluster's sweep computes per point.

    mode "idcluster": the configured clusterer option with the point's overrides and
    one cache_dir for the whole sweep (its HDBSCAN reuses the tree per min_samples);
    "kd_tree" / "brute": sklearn HDBSCAN with that algorithm, nothing shared.
    """
    try:
        X, y = np.load(data + ".X.npy"), np.load(data + ".y.npy")
        from sklearn.cluster import HDBSCAN

        if mode == "idcluster":  # first-call costs (imports, Hydra's init) are not per point
            config_estimator(kind, embedder, cache_dir, points[0])
        parts = {"fit": 0.0, "metrics": 0.0}
        results = []
        for p in points:
            t0 = time.perf_counter()
            if mode == "idcluster":
                est = config_estimator(kind, embedder, cache_dir, p)
            else:
                est = HDBSCAN(algorithm=mode, copy=True, **p)
            labels = fit_predict(est, X)
            parts["fit"] += time.perf_counter() - t0
            parts["metrics"] += _point_metrics(X, labels)
            results.append((p, labels))
        f1, best = _best(y, results)
        conn.send({"status": "ok", "seconds": sum(parts.values()), "parts": parts, "peak_rss_mb": _rss_mb(),
                   "best_bcubed_f1": f1, "best_point": best})
    except Exception as e:  # noqa: BLE001 - reported as this row's status
        conn.send({"status": f"error: {type(e).__name__}: {str(e)[:200]}"})


def shared_job(kind: str, points: list[dict], data: str, conn) -> None:
    """Child: one HDBSCAN brute fit per min_samples, every grid point cut from its tree.

    HDBSCAN points use sklearn's tree_to_labels (private API, as idcluster's own
    HDBSCAN uses it): a full fit's labels (checked against one full fit). DBSCAN
    points use the public HDBSCAN.dbscan_clustering(cut_distance): DBSCAN*, where
    border points are noise (plain DBSCAN attaches them to a cluster).
    """
    try:
        X, y = np.load(data + ".X.npy"), np.load(data + ".y.npy")
        from sklearn.cluster import HDBSCAN

        parts = {"tree per min_samples": 0.0, "labels per point": 0.0, "metrics": 0.0}
        results = []
        for ms in sorted({p["min_samples"] for p in points}):
            t0 = time.perf_counter()
            est = HDBSCAN(min_samples=ms, min_cluster_size=2, algorithm="brute", copy=True).fit(X)
            parts["tree per min_samples"] += time.perf_counter() - t0
            for p in (p for p in points if p["min_samples"] == ms):
                t1 = time.perf_counter()
                labels = _labels_from_tree(kind, est, p)
                parts["labels per point"] += time.perf_counter() - t1
                parts["metrics"] += _point_metrics(X, labels)
                results.append((p, labels))
        f1, best = _best(y, results)
        out = {"status": "ok", "seconds": sum(parts.values()), "parts": parts, "peak_rss_mb": _rss_mb(),
               "best_bcubed_f1": f1, "best_point": best}
        if kind == "hdbscan":  # cutting the shared tree must reproduce a full fit
            p0, labels0 = results[-1]
            full = HDBSCAN(algorithm="brute", copy=True, **p0).fit_predict(X)
            out["matches_full_fit"] = bool(np.array_equal(full, labels0))
        conn.send(out)
    except Exception as e:  # noqa: BLE001 - reported as this row's status
        conn.send({"status": f"error: {type(e).__name__}: {str(e)[:200]}"})


def _labels_from_tree(kind: str, est, p: dict) -> np.ndarray:
    if kind == "dbscan":  # grid eps is cosine distance; the tree is euclidean on unit vectors
        return est.dbscan_clustering(cut_distance=float(np.sqrt(2 * p["eps"])), min_cluster_size=p["min_samples"])
    from sklearn.cluster._hdbscan._tree import tree_to_labels

    labels, _ = tree_to_labels(est._single_linkage_tree_, p["min_cluster_size"], "eom", False,
                               p["cluster_selection_epsilon"], None)
    return labels


def spread_points(points: list[dict], k: int) -> list[dict]:
    """k points spread over the grid (first, last, evenly between) for the naive timing."""
    idx = np.unique(np.linspace(0, len(points) - 1, k).round().astype(int))
    return [points[i] for i in idx]


def bench_sweep(args, tmp: Path) -> list[dict]:
    n = args.sweep_n
    data = str(tmp / f"sweep-{n}")
    X, y = generate(n, args.dim, args.seed + 1)
    np.save(data + ".X.npy", X)
    np.save(data + ".y.npy", y)
    rows = []
    for kind, g in (("hdbscan", HDBSCAN_GRID), ("dbscan", DBSCAN_GRID)):
        points = grid(g)
        few = spread_points(points, args.naive_points)
        if kind == "hdbscan":
            jobs = [("idcluster:hdbscan as configured (tree cached per min_samples)", naive_job,
                     ("idcluster", kind, points, args.embedder_like), len(points)),
                    ("sklearn HDBSCAN default (kd-tree), full fit per point", naive_job,
                     ("kd_tree", kind, few[:1], ""), 1),
                    ("sklearn HDBSCAN brute, full fit per point", naive_job, ("brute", kind, few, ""), len(few))]
        else:
            jobs = [("idcluster:dbscan as configured, full fit per point", naive_job,
                     ("idcluster", kind, few, args.embedder_like), len(few))]
        jobs.append(("this script: 1 brute tree per min_samples, labels cut per point", shared_job,
                     (kind, points), len(points)))
        for j, (method, target, job_args, timed) in enumerate(jobs):
            def run(attempt: int, target=target, job_args=job_args, tag=f"{kind}-{j}") -> dict:
                # naive jobs get a private, empty cache per attempt
                cache = (str(tmp / f"sweep-cache-{tag}-{attempt}"),) if target is naive_job else ()
                return in_child(target, (*job_args, *cache, data), args.timeout_s)

            res = quiet_run(run, args.retries, args.settle_s)
            rows.append(_sweep_row(kind, method, len(points), res, timed))
            print(markdown([rows[-1]], SWEEP_COLUMNS).splitlines()[-1], flush=True)
    return rows


def _sweep_row(kind: str, method: str, total: int, res: dict, timed: int) -> dict:
    row = {"sweep": f"{kind} {total} points", "method": method, "points_timed": timed, **res}
    if res.get("status") != "ok":
        row["where_time_goes"] = res.get("status")
        return row
    row["seconds_timed"] = res["seconds"]
    row["seconds_for_100"] = res["seconds"] * total / timed
    row["measured"] = "all" if timed == total else f"extrapolated from {timed}"
    row["where_time_goes"] = ", ".join(f"{k} {v:.1f} s" for k, v in res["parts"].items())
    if timed < total:  # the best of a few timed points says nothing about the grid
        row["best_of_timed"] = (row.pop("best_bcubed_f1"), row.pop("best_point"))
    return row


# ---------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000], help="numbers of embeddings")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedder-like", default="facenet", help="embedder config whose distance_threshold the threshold clusterers use")
    ap.add_argument("--only", nargs="+", help="only clusterers whose name contains one of these")
    ap.add_argument("--max-fit-s", type=float, default=120.0, help="skip a fit whose extrapolated time exceeds this")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="kill a fit (or sweep part) after this")
    ap.add_argument("--sweep-n", type=int, default=10000, help="size for the 100-point sweep (0 = no sweep)")
    ap.add_argument("--naive-points", type=int, default=2, help="grid points timed for the naive sweep estimate")
    ap.add_argument("--settle-s", type=float, default=120.0, help="longest wait for a quiet CPU before a fit")
    ap.add_argument("--retries", type=int, default=2, help="reruns of a fit during which other jobs used >10%% of the CPU")
    ap.add_argument("--no-settle", action="store_true", help="do not wait for a quiet CPU (smoke tests)")
    ap.add_argument("--quick", action="store_true", help="smoke test: n=400, sweep at 400, 1 naive point")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/cluster"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.sweep_n, args.naive_points, args.settle_s, args.retries = [400], 400, 1, 5.0, 0
    if args.no_settle:
        args.settle_s, args.retries = 0.0, 0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    specs = clusterer_specs(args.embedder_like, args.only)
    with tempfile.TemporaryDirectory(prefix="idcluster-bench-cluster-") as t:
        fits = bench_sizes(args, specs, Path(t))
        sweep = bench_sweep(args, Path(t)) if args.sweep_n else []
    for r in fits:  # the spec dicts are long; the name says it
        for k in ("kind", "option", "embedder", "cls"):
            r.pop(k, None)
    result = {"machine": machine_info(), "generator": {"dim": args.dim, "seed": args.seed, "doc": generate.__doc__},
              "embedder_like": args.embedder_like, "fits": fits, "sweep_n": args.sweep_n, "sweep": sweep,
              "sweep_target_s": 120.0}
    title = (f"Synthetic {args.dim}-d embeddings (see --help for the generator), clusterers as configured "
             f"(embedder={args.embedder_like}):\n")
    tables = [title, markdown(fits, FIT_COLUMNS)]
    if sweep:
        tables += [f"100-point sweeps at n={args.sweep_n} (target < 120 s):\n", markdown(sweep, SWEEP_COLUMNS)]
    write_outputs(args.out, result, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
