"""Clustering quality against ground truth: pairwise and BCubed precision/recall/F1.

Noise (label -1) counts as singleton clusters, so an image left in noise is
never credited as grouped with anything.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.metrics.cluster import pair_confusion_matrix

from ..clustering.base import centres as cluster_centres, unit_rows


def noise_as_singletons(labels) -> np.ndarray:
    labels = np.asarray(labels).copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(noise.sum())
    return labels


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def pairwise_prf(truth, labels) -> tuple[float, float, float]:
    pred = noise_as_singletons(labels)
    (_, fp), (fn, tp) = pair_confusion_matrix(truth, pred)  # counts ordered pairs
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return float(p), float(r), _f1(p, r)


def bcubed_prf(truth, labels) -> tuple[float, float, float]:
    truth = np.asarray(truth)
    pred = noise_as_singletons(labels)
    joint = Counter(zip(truth.tolist(), pred.tolist()))
    t_count, p_count = Counter(truth.tolist()), Counter(pred.tolist())
    # Each item in cell (t, c) has precision n_tc/|c| and recall n_tc/|t|.
    p = sum(n * n / p_count[c] for (t, c), n in joint.items()) / len(truth)
    r = sum(n * n / t_count[t] for (t, c), n in joint.items()) / len(truth)
    return float(p), float(r), _f1(p, r)


def score(truth, labels) -> dict[str, float]:
    pp, pr, pf = pairwise_prf(truth, labels)
    bp, br, bf = bcubed_prf(truth, labels)
    return {
        "pairwise_precision": pp, "pairwise_recall": pr, "pairwise_f1": pf,
        "bcubed_precision": bp, "bcubed_recall": br, "bcubed_f1": bf,
    }


def label_free(X: np.ndarray, labels, sample_size: int = 2000) -> dict[str, float]:
    """Quality signals that need no ground truth, over L2-normalised rows X.

    intra: mean cosine similarity of a clustered face to its cluster centre;
    nearest_inter: mean over clusters of the highest similarity between its
    centre and another cluster's (lower = better separated); silhouette with
    cosine distance over clustered faces (sampled above `sample_size`).
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    out: dict[str, float] = {
        "identities": int(len(ids)),
        "faces": int(len(labels)),
        "noise_share": float((labels < 0).mean()) if len(labels) else 0.0,
        "cluster_size_min": int(sizes.min()) if len(sizes) else 0,
        "cluster_size_median": float(np.median(sizes)) if len(sizes) else 0.0,
        "cluster_size_max": int(sizes.max()) if len(sizes) else 0,
    }
    if len(ids) == 0:
        return out
    Xn = unit_rows(X)
    member = labels >= 0
    rows = np.searchsorted(ids, labels[member])  # cluster index of each clustered face
    centres = cluster_centres(Xn, labels)[1]
    out["intra_similarity"] = float(np.mean(np.sum(Xn[member] * centres[rows], axis=1)))
    if len(ids) > 1:
        sims = centres @ centres.T
        np.fill_diagonal(sims, -np.inf)
        out["nearest_inter_similarity"] = float(sims.max(axis=1).mean())
        if member.sum() > len(ids):
            out["silhouette"] = float(silhouette_score(
                Xn[member], labels[member], metric="cosine",
                sample_size=min(sample_size, int(member.sum())), random_state=0,
            ))
    return out
