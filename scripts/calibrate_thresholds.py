#!/usr/bin/env python
"""Calibrate an embedder's same-person cosine-distance threshold on a dev split.

Embeds a labelled set (default: the even-indexed half of the LFW 40 identities,
identity-disjoint from the odd half used as held-out check), then reports
(1) same/different pair distance statistics and the thresholds at a false-accept
rate of 1% and 0.1%, and (2) BCubed F1 of each threshold-based clusterer over a
grid of thresholds. The best dev threshold is what `distance_threshold` in
conf/embedder/<name>.yaml should state. Writes JSON + Markdown.

  python scripts/calibrate_thresholds.py --embedder dlib
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from idcluster.pipeline import stages as pipeline
from idcluster.workflows.cluster import make_spec
from idcluster.config.compose import build, load_config
from idcluster.config.settings import load_settings
from idcluster.experiments.evaluation import evaluate, link_sets

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "eval"
CLUSTERERS = ("dbscan", "agglomerative", "chinese_whispers")


def pair_stats(X: np.ndarray, y: list[str]) -> dict:
    D = 1.0 - X @ X.T
    iu = np.triu_indices(len(y), 1)
    same = (np.asarray(y)[:, None] == np.asarray(y)[None, :])[iu]
    d = D[iu]
    out = {"same_median": float(np.median(d[same])), "diff_median": float(np.median(d[~same]))}
    for far in (0.01, 0.001):
        out[f"threshold_far_{far}"] = float(np.quantile(d[~same], far))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", default="dlib")
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--set", default="lfw_150px_40ids", help="labelled set to calibrate on")
    ap.add_argument("--part", default="even", choices=["even", "odd", "all"], help="identity-disjoint half")
    ap.add_argument("--thresholds", default="0.02:0.40:0.005", help="start:stop:step cosine distances")
    ap.add_argument("--cache-dir", type=Path, default=Path("benchmarks/out/cache"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/calibration"))
    args = ap.parse_args(argv)
    if not (args.eval_root / args.set).is_dir():
        print(f"set not found: {args.eval_root / args.set}", file=sys.stderr)
        return 2

    start, stop, step = (float(v) for v in args.thresholds.split(":"))
    grid = np.round(np.arange(start, stop + 1e-9, step), 4)
    with tempfile.TemporaryDirectory() as tmp:
        truth = link_sets([args.eval_root / args.set], Path(tmp), part=args.part)
        base = [f"input_dir={tmp}", f"cache_dir={args.cache_dir}", f"embedder={args.embedder}", "faces.min_face_size=0"]
        result = pipeline.run(make_spec(load_settings(base), "embed", progress=False), until="embed")
        rows = [r for r in result.records if r.embedding_row is not None]
        X = result.embeddings[[r.embedding_row for r in rows]]
        stats = pair_stats(X, [truth[r.rel_path][1] for r in rows])
        sweep = []
        for name in CLUSTERERS:
            for t in grid:
                cfg = load_config([*base, f"clusterer={name}", f"++embedder.distance_threshold={t}"])
                labels = build(cfg, "clusterer").fit_predict(X)
                for r, label in zip(rows, labels):
                    r.label = int(label)
                m = evaluate(rows, truth)
                sweep.append({"clusterer": name, "threshold": float(t), "bcubed_f1": m["bcubed_f1"],
                              "pairwise_f1": m["pairwise_f1"], "noise_share": m["noise_share"]})
    best = {c: max((s for s in sweep if s["clusterer"] == c), key=lambda s: s["bcubed_f1"]) for c in CLUSTERERS}
    # One threshold per embedder serves every clusterer: the best mean BCubed F1 across them.
    mean_f1 = {t: np.mean([s["bcubed_f1"] for s in sweep if s["threshold"] == t]) for t in grid.tolist()}
    best["all (mean)"] = {"threshold": max(mean_f1, key=mean_f1.get), "bcubed_f1": max(mean_f1.values()),
                          "pairwise_f1": float("nan"), "noise_share": float("nan")}
    report = {"embedder": args.embedder, "set": args.set, "part": args.part, "faces": len(rows),
              "pairs": stats, "best": best, "sweep": sweep}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    lines = [f"# {args.embedder} on {args.set} ({args.part} identities, {len(rows)} faces)", "",
             "| statistic | cosine distance |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in stats.items()]
    lines += ["", "| clusterer | best threshold | BCubed F1 | pairwise F1 | noise share |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {b['threshold']:.2f} | {b['bcubed_f1']:.3f} | {b['pairwise_f1']:.3f} | {b['noise_share']:.3f} |"
              for c, b in best.items()]
    text = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
