#!/usr/bin/env python
"""Whole-instance features on labelled sets: `appearance` (HSV+HOG) against MobileNetV2 (issue 17).

Features, each of the whole image:
- appearance: idcluster.embedders.appearance (alpha / flat-background mask, as the faceless stage runs it);
- mnv2_320 / mnv2_1280: idcluster.embedders.mobilenet, `features[:18]` mean-pooled / the 1280-d output;
- *_c: the same, minus the set's mean vector, re-normalised ("centred on the run");
- fused / fused_1280: appearance and MobileNetV2 each centred and re-normalised, concatenated with
  weights sqrt(w) and sqrt(1 - w) (w = --appearance-weight, 0.3).

Scores per set: pair AUC (cosine), the best pair F1 over all thresholds, and BCubed F1 of
average-linkage clustering (cosine distance) at ONE threshold per feature, tuned on the --tune sets
(anime dev + Simpsons) by their mean BCubed F1 and applied to every set (LFW is the control).
Speed: CPU ms/image of each feature on one core (onnxruntime threads=1), decoding apart, and
MobileNetV2 at several batch sizes.

  python scripts/bench_instance.py --out benchmarks/instance
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import roc_auc_score

from idcluster.embedders.appearance import AppearanceEmbedder, load_instance
from idcluster.embedders.mobilenet import MobileNetEmbedder
from idcluster.experiments.evaluation import read_labels
from idcluster.experiments.metrics import bcubed_prf

from _bench_common import machine_info, markdown, settle, write_outputs

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "eval"
SETS = ["anime_characters_dev", "simpsons14_64px_gray", "lfw_150px_40ids"]
TUNE = ["anime_characters_dev", "simpsons14_64px_gray"]
THRESHOLDS = np.round(np.arange(0.02, 1.501, 0.01), 2)  # cosine distances


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def centred(X: np.ndarray) -> np.ndarray:
    return unit(X - X.mean(axis=0))


def fused(appearance: np.ndarray, mobilenet: np.ndarray, w: float) -> np.ndarray:
    return np.hstack([np.sqrt(w) * centred(appearance), np.sqrt(1 - w) * centred(mobilenet)])


def pair_scores(X: np.ndarray, y: np.ndarray) -> dict:
    iu = np.triu_indices(len(y), 1)
    sim, same = (X @ X.T)[iu], (y[:, None] == y[None, :])[iu]
    order = np.argsort(-sim)
    tp = np.cumsum(same[order])
    f1 = 2 * tp / (np.arange(1, len(sim) + 1) + same.sum())  # predicted same = the k most similar pairs
    k = int(np.argmax(f1))
    return {"pair_auc": float(roc_auc_score(same, sim)), "pair_f1_best": float(f1[k]), "pair_f1_at_cos": float(sim[order[k]])}


def bcubed_curve(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """BCubed F1 of average-linkage clusters at each of THRESHOLDS."""
    Z = linkage(X, method="average", metric="cosine")
    return np.array([bcubed_prf(y, fcluster(Z, t, criterion="distance"))[2] for t in THRESHOLDS])


def features_of(paths: list[Path], mobilenets: dict[str, MobileNetEmbedder], appearance: AppearanceEmbedder):
    """Per-feature arrays and CPU seconds spent; decode_both = the two loaders (mask for appearance, background for MobileNetV2)."""
    cpu = {"decode_both": 0.0, "appearance": 0.0, **{k: 0.0 for k in mobilenets}}
    app, images = [], []
    for p in paths:
        t = time.process_time()
        rgb, mask = load_instance(p)
        images.append(next(iter(mobilenets.values())).load(p))
        cpu["decode_both"] += time.process_time() - t
        t = time.process_time()
        app.append(appearance.describe(rgb, mask))
        cpu["appearance"] += time.process_time() - t
    out = {"appearance": np.stack(app)}
    for name, emb in mobilenets.items():
        t = time.process_time()
        out[name] = emb.embed(images)
        cpu[name] += time.process_time() - t
    return out, cpu, images


def batch_speed(emb: MobileNetEmbedder, images: list[np.ndarray], sizes=(1, 8, 32)) -> dict:
    emb.embed(images[:2])  # session built, graph converted
    out = {}
    for bs in sizes:
        emb.batch_size = bs
        t = time.process_time()
        emb.embed(images)
        out[bs] = round(1000 * (time.process_time() - t) / len(images), 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--set", action="append", dest="sets", help=f"labelled set (repeatable; default {', '.join(SETS)})")
    ap.add_argument("--tune", action="append", help=f"sets the threshold is tuned on (default {', '.join(TUNE)})")
    ap.add_argument("--appearance-weight", type=float, default=0.3)
    ap.add_argument("--speed-images", type=int, default=64, help="images of the first set timed per batch size")
    ap.add_argument("--settle", type=float, default=60, help="seconds to wait at most for a quiet CPU before timing")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/instance"))
    args = ap.parse_args(argv)
    sets, tune = args.sets or SETS, args.tune or TUNE
    mobilenets = {"mnv2_320": MobileNetEmbedder(layer=320, threads=1), "mnv2_1280": MobileNetEmbedder(layer=1280, threads=1)}
    appearance = AppearanceEmbedder()
    load = settle(max_wait=args.settle)
    per_set, curves, speed = {}, {}, {}
    for name in sets:
        labels = read_labels(args.eval_root / name)
        rels = sorted(labels)
        y = np.array([labels[r] for r in rels])
        feats, cpu, images = features_of([args.eval_root / name / r for r in rels], mobilenets, appearance)
        for k in ("mnv2_320", "mnv2_1280"):
            feats[f"{k}_c"] = centred(feats[k])
        feats["fused"] = fused(feats["appearance"], feats["mnv2_320"], args.appearance_weight)
        feats["fused_1280"] = fused(feats["appearance"], feats["mnv2_1280"], args.appearance_weight)
        per_set[name] = {"images": len(rels), "identities": len(set(y)),
                         "cpu_ms_per_image": {k: round(1000 * v / len(rels), 2) for k, v in cpu.items()},
                         "features": {k: pair_scores(X, y) for k, X in feats.items()}}
        curves[name] = {k: bcubed_curve(X, y) for k, X in feats.items()}
        if not speed:
            speed = batch_speed(mobilenets["mnv2_320"], images[:args.speed_images])
        print(name, {k: round(v["pair_auc"], 3) for k, v in per_set[name]["features"].items()}, flush=True)
    tuned = {}
    for feat in curves[sets[0]]:
        mean = np.mean([curves[s][feat] for s in tune if s in curves], axis=0)
        i = int(np.argmax(mean))
        tuned[feat] = {"threshold": float(THRESHOLDS[i]), "tune_mean_bcubed_f1": float(mean[i])}
        for s in sets:
            per_set[s]["features"][feat].update(bcubed_f1=float(curves[s][feat][i]), bcubed_f1_best=float(curves[s][feat].max()))
    rows = [{"feature": feat, "threshold": tuned[feat]["threshold"],
             **{f"{s} AUC / pairF1 / BCubed": "{pair_auc:.3f} / {pair_f1_best:.3f} / {bcubed_f1:.3f}".format(**per_set[s]["features"][feat])
                for s in sets}} for feat in tuned]
    cols = [("feature", "{}"), ("threshold", "{:.2f}")] + [(f"{s} AUC / pairF1 / BCubed", "{}") for s in sets]
    speed_rows = [{"set": s, "images": per_set[s]["images"], **per_set[s]["cpu_ms_per_image"]} for s in sets]
    speed_cols = [("set", "{}"), ("images", "{}")] + [(k, "{:.1f}") for k in per_set[sets[0]]["cpu_ms_per_image"]]
    batch_rows = [{"batch_size": bs, "mnv2_320 CPU ms/image": ms} for bs, ms in speed.items()]
    notes = (f"BCubed F1: average linkage (cosine), one threshold per feature tuned on {' + '.join(tune)}; "
             f"fused weights sqrt({args.appearance_weight}) appearance, sqrt({1 - args.appearance_weight:.1f}) MobileNetV2.\n")
    write_outputs(args.out, {"machine": machine_info(), "load": load, "tune_sets": tune, "tuned": tuned, "sets": per_set,
                             "batch_speed_ms_per_image": speed, "model_ids": {k: e.model_id for k, e in mobilenets.items()}},
                  [markdown(rows, cols), notes, "CPU ms/image, one core (decode apart):\n", markdown(speed_rows, speed_cols),
                   f"MobileNetV2 320 by batch size ({min(args.speed_images, per_set[sets[0]]['images'])} images of {sets[0]}):\n",
                   markdown(batch_rows, [("batch_size", "{}"), ("mnv2_320 CPU ms/image", "{:.1f}")])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
