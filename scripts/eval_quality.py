#!/usr/bin/env python
"""Identity-clustering quality of idcluster on labelled sets (default: ../shared/eval).

Each --set is one set name or several joined by '+', clustered together
(sets whose name contains 'distractor' count merged distractors). Each
--config is 'name: override override ...'. Writes JSON and a Markdown table.

  python scripts/eval_quality.py \
      --set lfw_150px_40ids+lfw_150px_distractor_singletons:clusterer.min_cluster_size=3 \
      --config "dlib: embedder=dlib" --config "facenet: embedder=facenet"
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from idcluster.workflows.cluster import make_spec
from idcluster.config.settings import load_settings
from idcluster.errors import InputError
from idcluster.experiments.evaluation import evaluate, link_sets
from idcluster.pipeline.stages import run

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "eval"
COLUMNS = [
    ("set", "{}"), ("config", "{}"), ("images", "{}"), ("face_share", "{:.3f}"), ("noise_share", "{:.3f}"),
    ("bcubed_precision", "{:.3f}"), ("bcubed_recall", "{:.3f}"), ("bcubed_f1", "{:.3f}"),
    ("pairwise_f1", "{:.3f}"), ("nmi", "{:.3f}"), ("ari", "{:.3f}"),
    ("evidence", "{}"), ("identities_true", "{}"), ("identities_found", "{}"), ("identities_split", "{}"),
    ("clusters_merged", "{}"), ("distractors_merged", "{}"), ("seconds", "{:.1f}"),
]


def evidence_mix(records, truth) -> str:
    """What placed the labelled images: 'face 120, appearance 40, noise 10'."""
    counts = Counter((r.evidence or "?") if r.label >= 0 else "noise" for r in records if r.rel_path in truth)
    return ", ".join(f"{k} {n}" for k, n in counts.most_common())


def parse_set(spec: str) -> tuple[list[str], list[str]]:
    names, _, overrides = spec.partition(":")
    return names.split("+"), overrides.split() if overrides else []


def parse_config(spec: str) -> tuple[str, list[str]]:
    name, _, overrides = spec.partition(":")
    return name.strip(), overrides.split()


def markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join(fmt.format(r[c]) if c in r else "-" for c, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_ROOT, help="folder holding the labelled sets")
    ap.add_argument("--set", action="append", dest="sets", help="SET[+SET...][:overrides] (repeatable)")
    ap.add_argument("--config", action="append", dest="configs", help="'name: overrides' (repeatable)")
    ap.add_argument("--cache-dir", type=Path, default=Path("benchmarks/out/cache"), help="shared stage cache")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quality"), help="writes OUT.json and OUT.md")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--labels", action="store_true",
                    help="also record each image's identity, evidence and score (to compare two versions' labels)")
    args = ap.parse_args(argv)

    if not args.eval_root.is_dir():
        print(f"eval folder not found: {args.eval_root} (pass --eval-root)", file=sys.stderr)
        return 2
    sets = args.sets or ["lfw_150px_40ids+lfw_150px_distractor_singletons:clusterer.min_cluster_size=3"]
    configs = [parse_config(c) for c in (args.configs or ["default:"])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="idcluster-eval-") as tmp:
        for set_spec in sets:
            names, set_overrides = parse_set(set_spec)
            dest = Path(tmp) / "+".join(names)
            truth = link_sets([args.eval_root / n for n in names], dest)
            distractors = tuple(n for n in names if "distractor" in n)
            for cname, overrides in configs:
                cfg = load_settings([f"input_dir={dest}", f"cache_dir={args.cache_dir}", *set_overrides, *overrides])
                t0 = time.perf_counter()
                row = {"set": "+".join(names), "config": cname, "overrides": set_overrides + overrides}
                try:
                    result = run(make_spec(cfg, "cluster", progress=not args.quiet))
                except InputError as e:  # e.g. no face anywhere: score what detection found
                    row["error"] = str(e)
                    result = run(make_spec(cfg, "detect", progress=not args.quiet), until="detect")
                row.update(evaluate(result.records, truth, distractors))
                row["evidence"] = evidence_mix(result.records, truth)
                row["seconds"] = time.perf_counter() - t0
                if args.labels:
                    row["labels"] = {r.rel_path: [r.label, r.evidence, r.evidence_score] for r in result.records}
                rows.append(row)
                print(markdown([row]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
