"""Are the review page's merge suggestions right? Precision and recall on real labelled sets.

For each set (LFW 40 identities, ORL by default) the set is clustered with idcluster's
own `cluster` workflow (default config, tracking off) several ways, and the review's
suggestions (idcluster.review.ranking: pairs of identities whose faces are on average
closer than the embedder's calibrated threshold) are scored against the truth:

- `truth`: the ground-truth partition itself (every suggestion is false);
- `default`: the default clusterer at the calibrated threshold (a near-correct clustering);
- `over-split ...`: the same clusterer at a stricter threshold (and Chinese Whispers at one),
  which splits people into several identities: the splits are what suggestions should find.

An identity's person is the majority truth of its faces; a suggestion is true when both
identities have the same person. Columns: `suggestions` (all, the page shows the first 5),
`true_pairs` (pairs of identities of one person), precision, recall (true pairs suggested),
precision@5, BCubed F1 of the images before and after accepting every suggestion, and what the
criterion before did (`old_`: pairs whose centres are more similar than 1 - 1.5 x threshold).

    python scripts/bench_suggestions.py --out benchmarks/out/suggestions
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from _bench_common import DEFAULT_EVAL_ROOT, machine_info, markdown, missing_sets, write_outputs

SETS = ["lfw_150px_40ids", "orl_att_faces"]
# (row name, overrides): the calibrated threshold is dlib's 0.07; stricter ones over-split.
CLUSTERINGS = [
    ("default", []),
    ("over-split: agglomerative 0.045", ["clusterer.distance_threshold=0.045"]),
    ("over-split: agglomerative 0.035", ["clusterer.distance_threshold=0.035"]),
    ("over-split: chinese_whispers 0.035", ["clusterer=chinese_whispers", "clusterer.distance_threshold=0.035"]),
]


def cluster(inp: Path, out: Path, cache: Path, overrides: list[str]) -> None:
    from rich.console import Console

    from idcluster.config.settings import load_settings
    from idcluster.workflows import cluster as workflow

    cfg = load_settings([f"input_dir={inp}", f"output_dir={out}", f"cache_dir={cache}", "tracking=off",
                         "clusterer.min_cluster_size=2", *overrides])
    workflow.cluster(cfg, Console(quiet=True), progress=False)


def score(store, assign: dict[str, int], person: dict[str, str], limit: int) -> dict:
    """Suggestions for the partition `assign` (face key -> identity) against the truth."""
    from idcluster.evidence import decisions as D
    from idcluster.experiments.metrics import bcubed_prf

    state = D.State(assign=dict(assign), identities={}, next_id=max(assign.values(), default=-1) + 1)
    t0 = time.perf_counter()
    sugg = store.ranking.suggestions(state, [], limit=limit)
    seconds = time.perf_counter() - t0
    ids = sorted(state.live_ids())
    majority = {i: Counter(person[k] for k in state.members(i)).most_common(1)[0][0] for i in ids}
    by_person = Counter(majority.values())
    true_pairs = sum(n * (n - 1) // 2 for n in by_person.values())
    hits = [majority[s["a"]] == majority[s["b"]] for s in sugg]
    # accept every suggestion (union-find) and score the images before/after
    parent = {i: i for i in ids}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for s in sugg:
        parent[root(s["a"])] = root(s["b"])
    # the criterion before (centres more similar than 1 - 1.5 x threshold), for comparison
    C = np.stack([store.ranking.centre(state, i) for i in ids])
    a, b = np.nonzero(np.triu(C @ C.T >= 1 - 1.5 * store.ranking.threshold, 1))
    old_hits = [majority[ids[x]] == majority[ids[y]] for x, y in zip(a, b)]
    keys = sorted(person)
    truth = [person[k] for k in keys]
    before = [assign.get(k, -1) for k in keys]
    after = [root(c) if c >= 0 else -1 for c in before]
    return {"identities": len(ids), "suggestions": len(sugg), "true_pairs": true_pairs, "true_suggested": sum(hits),
            "precision": sum(hits) / len(sugg) if sugg else None,
            "recall": sum(hits) / true_pairs if true_pairs else None,
            "precision_at_5": sum(hits[:5]) / len(hits[:5]) if sugg else None,
            "old_suggestions": len(old_hits), "old_precision": sum(old_hits) / len(old_hits) if old_hits else None,
            "bcubed_f1_before": bcubed_prf(truth, before)[2], "bcubed_f1_after": bcubed_prf(truth, after)[2],
            "seconds": seconds,
            "examples": [{**s, "true": h} for s, h in zip(sugg[:8], hits)]}


def run_set(eval_root: Path, name: str, work: Path, cache: Path, limit: int) -> list[dict]:
    from idcluster.experiments.evaluation import read_labels
    from idcluster.review.store import ReviewStore

    inp = eval_root / name
    labels = read_labels(inp)
    rows = []
    for row_name, overrides in CLUSTERINGS:
        out = work / name / row_name.replace(" ", "_").replace(":", "")
        cluster(inp, out, cache, overrides)
        store = ReviewStore(out, journal=out.parent / (out.name + ".jsonl"))
        person = {k: labels[store.images[i]["rel_path"]] for k, (i, _) in store.faces.items()
                  if store.images[i]["rel_path"] in labels}
        if row_name == "default":  # the truth partition, over the same faces and vectors
            names = sorted(set(person.values()))
            rows.append({"set": name, "clustering": "truth (correct by definition)", "threshold": store.ranking.threshold,
                         **score(store, {k: names.index(p) for k, p in person.items()}, person, limit)})
        assign = {k: c for k, c in store.state.assign.items() if k in person}
        rows.append({"set": name, "clustering": row_name, "threshold": store.ranking.threshold,
                     **score(store, assign, person, limit)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT)
    ap.add_argument("--sets", nargs="+", default=SETS)
    ap.add_argument("--cache-dir", type=Path, default=None, help="stage cache (default: a temporary one: a cold run)")
    ap.add_argument("--limit", type=int, default=1000, help="suggestions asked for (the page shows the first 5)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/suggestions"))
    args = ap.parse_args()
    missing = missing_sets(args.eval_root, args.sets)
    if missing:
        sys.exit(f"eval sets not found under {args.eval_root}: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="bench_suggestions_") as tmp:
        work = Path(tmp)
        cache = args.cache_dir or work / "cache"
        rows = [r for name in args.sets for r in run_set(args.eval_root, name, work, cache, args.limit)]
    cols = [("set", "{}"), ("clustering", "{}"), ("identities", "{}"), ("suggestions", "{}"), ("true_pairs", "{}"),
            ("precision", "{:.2f}"), ("recall", "{:.2f}"), ("precision_at_5", "{:.2f}"),
            ("bcubed_f1_before", "{:.3f}"), ("bcubed_f1_after", "{:.3f}"), ("old_suggestions", "{}"), ("old_precision", "{:.2f}")]
    table = markdown(rows, cols)
    write_outputs(args.out, {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                             "rows": rows}, ["merge suggestions against the truth\n", table])
    return None


if __name__ == "__main__":
    sys.exit(main())
