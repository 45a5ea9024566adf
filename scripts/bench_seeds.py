#!/usr/bin/env python
"""BCubed F1 against the number of seeds per character (0, 1, 2, 5) on labelled sets.

For each set and n, n images per identity (a fixed random draw, seed 0) are written to a
seeds CSV (`relative_path,name`) and the pipeline runs with `seeds=` under each config:

- `default`: the default config: face clustering with seeds as constraints, then the
  whole-instance stream (instance=fused) over the images without a usable face, seeded
  names as units that anchor their identity;
- `appearance`: the same stream with the hand-made descriptor alone (instance=appearance);
- `constrained`: detector=none embedder=appearance and agglomerative clustering, seeds as
  must-/cannot-links inside the clusterer (constrained clustering on appearance alone).

Scores: BCubed over all images, and over the images that were not seeds. Writes JSON + Markdown.

  python scripts/bench_seeds.py --eval-root ../shared/eval --out benchmarks/seeds
  python scripts/bench_seeds.py --override clusterer.min_cluster_size=3   # as eval_quality.py scores the drawn sets
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from idcluster.workflows.cluster import make_spec
from idcluster.config.settings import load_settings
from idcluster.experiments.evaluation import link_sets
from idcluster.experiments.metrics import score
from idcluster.pipeline.stages import run

from _bench_common import markdown, write_outputs

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "eval"
CONFIGS = {
    "default": [],
    "appearance": ["instance=appearance"],
    "constrained": ["detector=none", "embedder=appearance", "clusterer=agglomerative", "clusterer.min_cluster_size=2"],
}


def draw_seeds(truth: dict, n: int, rng_seed: int = 0) -> dict[str, str]:
    by_id: dict[str, list[str]] = {}
    for rel, (_, ident) in sorted(truth.items()):
        by_id.setdefault(ident, []).append(rel)
    rng = np.random.default_rng(rng_seed)
    out = {}
    for ident, rels in sorted(by_id.items()):
        for rel in rng.permutation(rels)[:n]:
            out[str(rel)] = ident
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--set", action="append", dest="sets")
    ap.add_argument("--seeds", default="0,1,2,5")
    ap.add_argument("--config", action="append", dest="configs", help=f"one of {', '.join(CONFIGS)}")
    ap.add_argument("--cache-dir", type=Path, default=Path("benchmarks/out/cache"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/seeds"))
    ap.add_argument("--override", action="append", default=[],
                    help="extra override for every run, e.g. clusterer.min_cluster_size=3 (as eval_quality.py's sets)")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="idcluster-seeds-") as tmp:
        for name in args.sets or ["anime_characters_dev", "simpsons14_64px_gray"]:
            dest = Path(tmp) / name
            truth = link_sets([args.eval_root / name], dest)
            for n in [int(x) for x in args.seeds.split(",")]:
                seeds = draw_seeds(truth, n)
                seed_file = Path(tmp) / f"{name}_seeds_{n}.csv"
                with open(seed_file, "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["relative_path", "name"])
                    w.writerows(sorted(seeds.items()))
                for cname in args.configs or list(CONFIGS):
                    over = [f"input_dir={dest}", f"cache_dir={args.cache_dir}", "tracking=off", *args.override, *CONFIGS[cname]]
                    if n:
                        over.append(f"seeds={seed_file}")
                    t0 = time.perf_counter()
                    result = run(make_spec(load_settings(over), "cluster", progress=False))
                    recs = [r for r in result.records if r.rel_path in truth]
                    row = {"set": name, "seeds_per_character": n, "config": cname, "images": len(recs)}
                    for part, keep in (("all", recs), ("unseeded", [r for r in recs if r.rel_path not in seeds])):
                        m = score([truth[r.rel_path][1] for r in keep], np.array([r.label for r in keep]))
                        row[f"bcubed_f1_{part}"] = round(m["bcubed_f1"], 4)
                        row[f"bcubed_precision_{part}"] = round(m["bcubed_precision"], 4)
                    row["noise_share"] = round(float(np.mean([r.label < 0 for r in recs])), 4)
                    row["seconds"] = round(time.perf_counter() - t0, 1)
                    rows.append(row)
                    print(row, flush=True)
    cols = ["set", "seeds_per_character", "config", "bcubed_f1_all", "bcubed_precision_all", "bcubed_f1_unseeded",
            "bcubed_precision_unseeded", "noise_share", "seconds"]
    write_outputs(args.out, rows, [markdown(rows, [(c, "{}") for c in cols])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
