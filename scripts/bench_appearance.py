#!/usr/bin/env python
"""Pair AUC of whole-instance appearance descriptors on labelled sets (default: ../shared/eval).

Every pair of images of a set is scored by cosine similarity; AUC of same vs different
identity. Compares embedder=appearance with the plain baseline of FINDINGS.md (HSV
16x8x8 histogram of the whole crop, Hellinger). anime_characters_dev is also scored per
part (A 160 px thumbnails, B 96 px tight crops, C whole illustrations; MANIFEST.md).

  python scripts/bench_appearance.py --out benchmarks/appearance_auc
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from idcluster.embedders.appearance import AppearanceEmbedder, load_instance
from idcluster.experiments.evaluation import read_labels

from _bench_common import markdown, write_outputs

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "eval"
SETS = ["anime_characters_dev", "simpsons14_64px_gray"]
ANIME_PARTS = {
    "A": {"hatsune_miku", "kinomoto_sakura", "suzumiya_haruhi", "fate_testarossa", "takamachi_nanoha",
          "lelouch_lamperouge", "akiyama_mio", "shana", "hakurei_reimu", "izumi_konata"},
    "B": {"abigail_williams_fate", "aegis_persona", "aisaka_taiga", "albedo_overlord", "anastasia_idolmaster",
          "aqua_konosuba"},
    "C": {"emilia_rezero", "gojo_satoru", "monkey_d_luffy", "okabe_rintarou"},
}


def hsv_baseline(rgb: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 8, 8], [0, 180, 0, 256, 0, 256]).ravel().astype(np.float64)
    x = np.sqrt(hist / max(hist.sum(), 1))
    return x / max(np.linalg.norm(x), 1e-12)


def pair_auc(X: np.ndarray, y: list[str]) -> float:
    S = X @ X.T
    iu = np.triu_indices(len(y), 1)
    same = (np.asarray(y)[:, None] == np.asarray(y)[None, :])[iu]
    return float(roc_auc_score(same, S[iu]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--set", action="append", dest="sets")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/appearance_auc"))
    args = ap.parse_args(argv)
    emb = AppearanceEmbedder()
    rows = []
    for name in args.sets or SETS:
        labels = read_labels(args.eval_root / name)
        rels = sorted(labels)
        feats = {"hsv_16x8x8": [], "appearance": []}
        t_app = 0.0
        for rel in rels:
            rgb, mask = load_instance(args.eval_root / name / rel)
            feats["hsv_16x8x8"].append(hsv_baseline(rgb))
            t0 = time.perf_counter()
            feats["appearance"].append(emb.describe(rgb, mask))
            t_app += time.perf_counter() - t0
        y = [labels[r] for r in rels]
        parts = {"all": list(range(len(rels)))}
        if name == "anime_characters_dev":
            parts.update({p: [i for i, v in enumerate(y) if v in ids] for p, ids in ANIME_PARTS.items()})
        for part, idx in parts.items():
            row = {"set": name, "part": part, "images": len(idx)}
            for k, v in feats.items():
                X = np.stack(v)[idx]
                row[k] = round(pair_auc(X, [y[i] for i in idx]), 4)
            row["appearance_ms_per_image"] = round(1000 * t_app / len(rels), 2)
            rows.append(row)
            print(row, flush=True)
    cols = ["set", "part", "images", "hsv_16x8x8", "appearance", "appearance_ms_per_image"]
    write_outputs(args.out, rows, [markdown(rows, [(c, "{}") for c in cols])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
