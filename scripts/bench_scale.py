#!/usr/bin/env python
"""Clustering at 10^4-10^6 faces: the kNN-graph clusterer's wall time, peak RSS and BCubed F1.

Generator (seeded, `generate()`), built from REAL embeddings so that the
within- and between-identity similarities look like the default embedder's:

1. Real faces: the shared labelled sets (--sets, default LFW 40 ids + ORL 40 ids)
   go through idcluster's own detect + embed stages with the default config
   (retinaface + dlib); the stage cache (--cache) makes later runs instant.
2. From the real embeddings: identity centres mu_r, their mean m, the
   between-identity covariance S_b of the centres and the pooled within-identity
   covariance S_w of the residuals (both Ledoit-Wolf shrunk: 80 identities in 128-d),
   and each real identity's spread (RMS residual norm).
3. A synthetic identity: centre mu ~ N(m, S_b); size heavy-tailed,
   1 + floor(lognormal(mean log 1.8, sigma 0.8)), so one-photo people occur; its
   faces mu + a_s z, z ~ N(0, S_w) scaled to a spread a_s drawn from the real
   identities' spreads; every face L2-normalised (as the embedders output).

The JSON records the quantiles of same-identity and nearest-other-identity cosine
similarity for the real set and the synthetic sets, so "realistic" is checked.

Each size runs in its own process (wall time, the process's CPU time and its
peak RSS from getrusage, including loading the data): the kNN-graph clusterer (faiss IVF above 50k rows, exact below),
the same with exact kNN (index=flat) where feasible, and the existing radius-graph
Chinese Whispers at 10^4 (the exact pre-existing path). Scores: BCubed F1 against
the generator's truth and against the exact variant's labels.

  nice -n 10 python scripts/bench_scale.py --sizes 10000 100000
  nice -n 10 python scripts/bench_scale.py --sizes 1000000 --no-exact
  python scripts/bench_scale.py --quick            # smoke test: synthetic real set, n=2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from _bench_common import DEFAULT_EVAL_ROOT, OthersCpu, machine_info, markdown, missing_sets, write_outputs

DEFAULT_SETS = ["lfw_150px_40ids", "orl_att_faces"]
COLUMNS = [("n", "{}"), ("identities", "{}"), ("clusterer", "{}"), ("index", "{}"), ("variant", "{}"), ("seconds", "{:.1f}"),
           ("cpu_s", "{:.1f}"), ("peak_rss_mb", "{:.0f}"), ("bcubed_f1_truth", "{:.4f}"), ("bcubed_f1_vs_exact", "{:.4f}"),
           ("clusters", "{}"), ("noise_share", "{:.3f}"), ("others_cpu", "{:.2f}"), ("steps", "{}")]


# ---------------------------------------------------------------- real embeddings


def real_embeddings(eval_root: Path, sets: list[str], cache_dir: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(embeddings, identity per row, the embedder's distance_threshold) from idcluster's default pipeline."""
    import tempfile

    from idcluster.pipeline import stages as pipeline
    from idcluster.workflows.cluster import make_spec
    from idcluster.config.settings import load_settings
    from _bench_common import link_input

    with tempfile.TemporaryDirectory() as tmp:
        truth = link_input(eval_root, sets, Path(tmp) / "in")
        cfg = load_settings([f"input_dir={tmp}/in", f"output_dir={tmp}/out", f"cache_dir={cache_dir}", "tracking=off"])
        result = pipeline.run(make_spec(cfg, "embed", progress=False), until="embed")
        rows, ids = [], []
        for rec in result.records:
            if rec.embedding_row is not None:
                rows.append(rec.embedding_row)
                ids.append(truth[rec.rel_path][1])
        return result.embeddings[rows].astype(np.float64), np.asarray(ids), float(cfg.distance_threshold)


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def stats_of(X: np.ndarray, y: np.ndarray) -> dict:
    """What the generator copies from the real set."""
    from sklearn.covariance import LedoitWolf

    ids = np.unique(y)
    centres = np.stack([X[y == i].mean(axis=0) for i in ids])
    resid = np.concatenate([X[y == i] - c for i, c in zip(ids, centres)])
    spreads = np.array([np.sqrt(((X[y == i] - c) ** 2).sum(axis=1).mean()) for i, c in zip(ids, centres)])
    lw_b = LedoitWolf().fit(centres)
    lw_w = LedoitWolf(assume_centered=True).fit(resid)
    pooled = np.sqrt(np.trace(lw_w.covariance_))
    return {"mean": centres.mean(axis=0), "between": lw_b.covariance_, "within": lw_w.covariance_,
            "spreads": spreads / pooled}


def generate(stats: dict, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors (float32) with identity labels, shaped like the real set (module docstring)."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.extend((1 + np.floor(rng.lognormal(1.8, 0.8, 4096))).astype(int).tolist())
    sizes = np.array(sizes)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    sizes[-1] -= sizes.sum() - n
    y = np.repeat(np.arange(len(sizes)), sizes)
    d = len(stats["mean"])
    Lb = np.linalg.cholesky(stats["between"] + 1e-12 * np.eye(d))
    Lw = np.linalg.cholesky(stats["within"] + 1e-12 * np.eye(d))
    centres = stats["mean"] + rng.standard_normal((len(sizes), d)) @ Lb.T
    scale = rng.choice(stats["spreads"], len(sizes))
    X = np.empty((n, d), np.float32)
    step = 200_000
    for lo in range(0, n, step):  # bounded float64 temporaries at 10^6
        yy = y[lo:lo + step]
        Z = rng.standard_normal((len(yy), d)) @ Lw.T
        X[lo:lo + step] = _unit(centres[yy] + scale[yy, None] * Z)
    perm = rng.permutation(n)  # no order for a clusterer to exploit
    return X[perm], y[perm]


def similarity_quantiles(X: np.ndarray, y: np.ndarray, sample: int = 2000, seed: int = 0) -> dict:
    """Same-identity and nearest-other-identity cosine similarity over a sample of faces."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(X), size=min(sample, len(X)), replace=False)
    import faiss

    Xf = np.ascontiguousarray(X, dtype=np.float32)
    index = faiss.IndexFlatIP(Xf.shape[1])
    index.add(Xf)
    sims, idx = index.search(Xf[rows], 64)
    same, other = [], []
    for r, s, i in zip(rows, sims, idx):
        mask = i != r
        s, i = s[mask], i[mask]
        same.extend(s[y[i] == y[r]].tolist())
        o = s[y[i] != y[r]]
        if len(o):
            other.append(float(o[0]))
    q = [0.05, 0.25, 0.5, 0.75, 0.95]
    return {"same_identity_among_64nn": np.round(np.quantile(same, q), 3).tolist() if same else None,
            "nearest_other_identity": np.round(np.quantile(other, q), 3).tolist(), "quantiles": q}


# ---------------------------------------------------------------- measured fits


def _fit(queue, data_path: str, name: str, params: dict):
    import numpy as np

    from idcluster.clustering.clusterers import ChineseWhispers
    from idcluster.clustering.knn_graph import KNNGraph

    z = np.load(data_path)
    X = z["X"]
    cls = {"knn_graph": KNNGraph, "chinese_whispers": ChineseWhispers}[name](**params)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    labels = cls.fit_predict(X, groups=np.arange(len(X)))
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    steps = {k: round(v, 2) for k, v in getattr(cls, "timings_", {}).items()}
    if steps:  # the clusterer's own steps; the rest is normalising and the shared post-processing
        steps["post_s"] = round(seconds - sum(steps.values()), 2)
    queue.put({"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "rss_before_fit_mb": base,
               "cpu_s": usage.ru_utime + usage.ru_stime, "steps": steps, "labels": labels})


def measured_fit(data_path: str, name: str, params: dict, timeout: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with OthersCpu() as others:
        proc = ctx.Process(target=_fit, args=(queue, data_path, name, params))
        proc.start()
        try:
            out = queue.get(timeout=timeout)
        except Exception:  # queue.Empty: timed out or crashed
            proc.kill()
            proc.join()
            return {"status": "timeout" if proc.exitcode in (None, -9) else f"crashed ({proc.exitcode})"}
        proc.join()
    out["status"] = "ok"
    out["others_cpu"] = others.share(out["cpu_s"])
    return out


def parse_variant(text: str) -> dict:
    """`mutual=true,distance_threshold=0.06` -> knn_graph parameters (numbers and booleans parsed)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        low = value.strip().lower()
        out[key.strip()] = True if low == "true" else False if low == "false" else json.loads(low) if low[:1].isdigit() or low[:1] in "-." else value
    return out


def bench_size(X: np.ndarray, y: np.ndarray, threshold: float, exact: bool, timeout: float, tmp: Path, k: int,
               variants: list[str] = ()) -> list[dict]:
    from idcluster.experiments.metrics import bcubed_prf, noise_as_singletons

    path = tmp / f"data_{len(X)}.npz"
    np.savez(path, X=X)
    n = len(X)
    runs = [("knn_graph", "auto", {"distance_threshold": threshold, "k": k, "index": "auto"})]
    runs += [("knn_graph", "auto", {"distance_threshold": threshold, "k": k, "index": "auto", **parse_variant(v)})
             for v in variants]
    if exact and n > 50_000:
        runs.append(("knn_graph", "flat", {"distance_threshold": threshold, "k": k, "index": "flat"}))
    if exact and n <= 20_000:
        runs.append(("chinese_whispers", "radius", {"distance_threshold": threshold}))
    rows, exact_labels = [], None
    for name, index, params in runs:
        m = measured_fit(str(path), name, params, timeout)
        changed = {k_: v for k_, v in params.items() if k_ not in ("distance_threshold", "k", "index") or
                   (k_ == "distance_threshold" and v != threshold) or (k_ == "k" and v != k)}
        row = {"n": n, "identities": int(len(np.unique(y))), "clusterer": name,
               "index": ("flat" if n <= 50_000 else "ivf") if index == "auto" else index,
               "variant": ",".join(f"{k_}={v}" for k_, v in changed.items()) or "-",
               **{k_: v for k_, v in m.items() if k_ != "labels"}}
        if m["status"] == "ok":
            labels = m["labels"]
            row["bcubed_f1_truth"] = bcubed_prf(y, labels)[2]
            row["clusters"] = int(len(np.unique(labels[labels >= 0])))
            row["noise_share"] = float((labels < 0).mean())
            if row["index"] == "flat" and name == "knn_graph" and row["variant"] == "-":
                exact_labels = labels
            row["_labels"] = labels
        rows.append(row)
        print(json.dumps({k_: v for k_, v in row.items() if k_ != "_labels"}, default=str), flush=True)
    for row in rows:
        labels = row.pop("_labels", None)
        if labels is not None and exact_labels is not None:
            row["bcubed_f1_vs_exact"] = bcubed_prf(noise_as_singletons(exact_labels), labels)[2]
    path.unlink()
    return rows


def bench_cache(n: int, root: Path) -> dict:
    """The per-image stage cache at n images: write/read time and disk use of n detection + n embedding entries.

    Entries look like real ones: a detection JSON with one face (box, 5 landmarks, score)
    and a 128-d float32 embedding + blur npz, keyed exactly as the pipeline keys them.
    """
    import shutil
    import subprocess

    from idcluster.cache.store import StageCache, cache_key
    from idcluster.pipeline.stages import DETECT, EMBED

    cache = StageCache(root)
    rng = np.random.default_rng(0)
    face = {"box": [10.0, 12.0, 80.0, 95.0], "landmarks": [[30.0, 40.0]] * 5, "score": 0.99, "detector": "retinaface"}
    keys = [cache_key("detect", f"{i:064x}", ["model", {}]) for i in range(n)]
    vec = rng.normal(size=128).astype(np.float32)
    t0 = time.perf_counter()
    for k in keys:
        cache.put_json(DETECT, k, {"faces": [face], "width": 150, "height": 150})
        cache.put_arrays(EMBED, k, embedding=vec, blur=np.float64(100.0))
    write_s = time.perf_counter() - t0
    subprocess.run(["sync"], check=False)
    du = subprocess.run(["du", "-sk", "--apparent-size", str(root)], capture_output=True, text=True).stdout.split()[0]
    du_disk = subprocess.run(["du", "-sk", str(root)], capture_output=True, text=True).stdout.split()[0]
    t0 = time.perf_counter()
    for k in keys:
        cache.get_json(DETECT, k)
        cache.get_arrays(EMBED, k)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    files = sum(len(f) for _, _, f in os.walk(root))
    walk_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shutil.rmtree(root)
    rm_s = time.perf_counter() - t0
    return {"images": n, "files": files, "write_s": round(write_s, 1), "read_s": round(read_s, 1),
            "write_ms_per_image": round(1000 * write_s / n, 3), "read_ms_per_image": round(1000 * read_s / n, 3),
            "walk_s": round(walk_s, 1), "rm_s": round(rm_s, 1),
            "apparent_mb": round(int(du) / 1024, 1), "disk_mb": round(int(du_disk) / 1024, 1),
            "extrapolated_10e6_write_min": round(write_s / n * 1e6 / 60, 1),
            "extrapolated_10e6_disk_gb": round(int(du_disk) / 1024**2 / n * 1e6, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT)
    ap.add_argument("--sets", nargs="+", default=DEFAULT_SETS)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "idcluster-bench-scale",
                    help="stage cache for the real embeddings (detect + embed run once)")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact reference fits")
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE,...",
                    help="also fit knn_graph with these parameters changed (repeatable), e.g. mutual=true "
                         "or distance_threshold=0.06")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_scale"))
    ap.add_argument("--quick", action="store_true", help="smoke test: a random stand-in for the real set, n=2000")
    ap.add_argument("--cache-entries", type=int, default=0,
                    help="instead: measure the per-image stage cache with this many synthetic images")
    ap.add_argument("--cache-root", type=Path, default=None, help="where --cache-entries writes (default: a temp dir)")
    args = ap.parse_args(argv)

    import tempfile

    if args.cache_entries:
        with tempfile.TemporaryDirectory(dir=args.cache_root) as tmp:
            r = bench_cache(args.cache_entries, Path(tmp) / "cache")
        data = {"machine": machine_info(), "loadavg": os.getloadavg(), "cache": r}
        cols = [(k, "{}") for k in r]
        write_outputs(args.out, data, [markdown([r], cols)])
        return 0

    if args.quick:
        # No models: a random 80-identity, 128-d "real" set, so the generator and fits run in seconds.
        rng = np.random.default_rng(0)
        c = _unit(rng.normal(size=(80, 128)) + 3.0)
        Xr = _unit(np.repeat(c, 8, axis=0) + rng.normal(0, 0.015, (640, 128)))
        yr, threshold = np.repeat(np.arange(80), 8), 0.07
        args.sizes, source = [2000], "random stand-in (--quick)"
    else:
        missing = missing_sets(args.eval_root, args.sets)
        if missing:
            print(f"error: missing eval sets under {args.eval_root}: {', '.join(missing)}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        Xr, yr, threshold = real_embeddings(args.eval_root, args.sets, args.cache)
        source = f"{', '.join(args.sets)}: {len(Xr)} faces, {len(np.unique(yr))} identities ({time.perf_counter() - t0:.0f} s)"
    stats = stats_of(Xr, yr)
    data = {"machine": machine_info(), "loadavg_start": os.getloadavg(), "real_set": source,
            "distance_threshold": threshold, "k": args.k,
            "similarities": {"real": similarity_quantiles(Xr, yr)}, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            t0 = time.perf_counter()
            X, y = generate(stats, n, seed=n)
            gen_s = time.perf_counter() - t0
            data["similarities"][str(n)] = similarity_quantiles(X, y)
            print(f"n={n}: generated in {gen_s:.1f} s; {json.dumps(data['similarities'][str(n)])}", flush=True)
            data["results"].extend(bench_size(X, y, threshold, not args.no_exact, args.timeout, Path(tmp), args.k,
                                              args.variant))
            del X, y
    data["loadavg_end"] = os.getloadavg()
    sim = ["| set | same-identity sim (5/25/50/75/95%) | nearest other identity sim |", "|---|---|---|"]
    for key, q in data["similarities"].items():
        sim.append(f"| {key} | {q['same_identity_among_64nn']} | {q['nearest_other_identity']} |")
    write_outputs(args.out, data, [markdown(data["results"], COLUMNS), "\n".join(sim) + "\n"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
