"""Post-processing every clusterer shares (scikit-learn estimator style).

- `min_cluster_size`: smaller clusters become noise (-1): a one-photo
  "identity" is not an identity.
- `cannot_link_same_image`: faces detected in the same image (the `groups`
  passed to `fit_predict`) never share a cluster: per cluster and image, the
  face closest to the cluster's centre stays, the others become noise.
- `reassign_noise`: a noise point joins its nearest cluster when its cosine
  similarity to that cluster's centre is at least this value (None = off).
- constraints (idcluster.clustering.constraints) applied the same way for all.

Also here: `relabel_by_size()` and `what_runs()`, the record of which estimator
produced a partition with which parameters; and, re-exported from `centres.py` (kept
free of scikit-learn for the review page), `centres()`, THE cluster centre (unit mean
of the members' vectors) that every consumer shares.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from ..errors import ConfigError
from .centres import centres, similarity_to_centre, unit_rows
from .constraints import Constraints, cannot_link_map, must_linked_rows, union_groups

log = logging.getLogger(__name__)


class ParameterError(ConfigError, ValueError):
    """A clusterer parameter outside its allowed values: the user's to fix (a ConfigError, one
    line), and a ValueError as scikit-learn estimators raise for bad parameters."""


def drop_small(labels: np.ndarray, min_size: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Clusters under min_size -> noise, except clusters holding a `keep` row (must-linked)."""
    labels = labels.copy()
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    small = ids[counts < min_size]
    if keep is not None and keep.any():
        small = np.setdiff1d(small, labels[keep & (labels >= 0)])
    labels[np.isin(labels, small)] = -1
    return labels


def _group_ids(groups) -> np.ndarray:
    return np.unique(np.asarray(groups), return_inverse=True)[1].ravel()


def enforce_cannot_link(Xn: np.ndarray, labels: np.ndarray, groups, keep: np.ndarray | None = None) -> np.ndarray:
    """Per cluster, keep one face per group (a `keep` row first, else the one nearest the
    centre); the rest -> noise.

    One sort, O(n log n) at any number of clusters: rows ordered by (cluster, group,
    -similarity to the centre); the first of each (cluster, group) run stays
    (equal similarities: the lower row stays).
    """
    labels = labels.copy()
    gid = _group_ids(groups)
    ids, cs = centres(Xn, labels)
    rows = np.flatnonzero(labels >= 0)
    if len(rows) == 0:
        return labels
    cidx = np.searchsorted(ids, labels[rows])
    sims = np.einsum("ij,ij->i", Xn[rows], cs[cidx])
    if keep is not None:
        sims = np.where(keep[rows], np.inf, sims)
    order = np.lexsort((rows, -sims, gid[rows], cidx))
    c, g = cidx[order], gid[rows][order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (c[1:] == c[:-1]) & (g[1:] == g[:-1])
    labels[rows[order[repeat]]] = -1
    return labels


def keep_compatible(order, cannot: dict[int, set[int]], exclusive: np.ndarray | None = None) -> list[int]:
    """Rows of `order` (best first) kept greedily: a row stays unless it is cannot-linked
    (`cannot`, e.g. constraints.cannot_link_map) with a row already kept, or it is one of the
    `exclusive` rows (a mask: e.g. units holding faces) and one of them is kept already. For
    explicit cannot-links between few rows; one group per row at any size is enforce_cannot_link."""
    kept: list[int] = []
    taken: set[int] = set()
    exclusive_taken = False
    for r in order:
        r = int(r)
        if cannot.get(r, set()) & taken:
            continue
        if exclusive is not None and exclusive[r]:
            if exclusive_taken:
                continue
            exclusive_taken = True
        kept.append(r)
        taken.add(r)
    return kept


def separate(D: np.ndarray, constraints: Constraints | None, distance: float = 2.0) -> np.ndarray:
    """A precomputed distance matrix with every cannot-linked pair set to `distance` (2.0: the
    largest cosine distance), so average linkage joins such a pair last, if ever. In place."""
    if constraints and constraints.cannot_link:
        a, b = np.asarray(constraints.cannot_link, dtype=np.int64).T
        D[a, b] = D[b, a] = distance
    return D


def _taken(labels: np.ndarray, gid: np.ndarray, noise: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in `noise`, cluster index) for every cluster that already holds a face of that noise row's image."""
    rows = np.flatnonzero(labels >= 0)
    pairs = np.unique(np.stack([gid[rows], np.searchsorted(ids, labels[rows])], axis=1), axis=0)
    lo = np.searchsorted(pairs[:, 0], gid[noise], side="left")
    n = np.searchsorted(pairs[:, 0], gid[noise], side="right") - lo
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # 0.. n_i-1 within each noise row
    return np.repeat(np.arange(len(noise)), n), pairs[np.repeat(lo, n) + offset, 1]


# Noise rows x clusters similarities are computed in chunks of about this many cells (float64: 128 MB).
_CHUNK_CELLS = 16_000_000


def reassign_noise(Xn: np.ndarray, labels: np.ndarray, min_similarity: float, groups=None,
                   forbidden: dict[int, set[int]] | None = None) -> np.ndarray:
    """Noise joins its nearest cluster centre when similar enough (never a cluster its image
    is in, nor one holding a row it is cannot-linked with: `forbidden`).

    Memory stays bounded at any size: the noise x centres similarities go in chunks.
    """
    labels = labels.copy()
    ids, cs = centres(Xn, labels)
    noise = np.flatnonzero(labels < 0)
    if len(ids) == 0 or len(noise) == 0:
        return labels
    if groups is not None:
        pos, cidx = _taken(labels, _group_ids(groups), noise, ids)
    else:
        pos, cidx = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if forbidden:  # explicit cannot-links: few, a loop over them only
        where = {int(n): p for p, n in enumerate(noise)}
        extra = [(where[n], int(np.searchsorted(ids, labels[m]))) for n, ms in forbidden.items() if n in where
                 for m in ms if labels[m] >= 0]
        if extra:
            e = np.asarray(extra, dtype=np.int64)
            pos, cidx = np.concatenate([pos, e[:, 0]]), np.concatenate([cidx, e[:, 1]])
    best = np.empty(len(noise), dtype=np.int64)
    top = np.empty(len(noise))
    step = max(1, _CHUNK_CELLS // len(ids))
    for lo in range(0, len(noise), step):
        sims = Xn[noise[lo:lo + step]] @ cs.T
        sel = (pos >= lo) & (pos < lo + step)
        sims[pos[sel] - lo, cidx[sel]] = -np.inf
        best[lo:lo + step] = sims.argmax(axis=1)
        top[lo:lo + step] = sims[np.arange(len(sims)), best[lo:lo + step]]
    ok = top >= min_similarity
    labels[noise[ok]] = ids[best[ok]]
    return labels


def describe(estimator) -> dict:
    """Which estimator, with which parameters (JSON-able; a nested estimator by its class)."""
    def name(obj) -> str:
        return f"{type(obj).__module__}.{type(obj).__qualname__}"

    # A clusterer from a user's own _target_ needs only fit_predict: without get_params, no parameters.
    given = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
    params = {k: name(v) if isinstance(v, BaseEstimator) else v for k, v in given.items()}
    return {"estimator": name(estimator), "params": params}


def what_runs(clusterer, n_rows: int) -> dict:
    """describe() of the estimator that partitions n_rows faces, with `faces`: the clusterer itself,
    or the one it switches to at that size (then also `instead_of` and `because`). Deterministic,
    so a run read from the cache reports the same as the run that computed it."""
    chosen, because = clusterer.estimator_for(n_rows) if isinstance(clusterer, FaceClusterer) else (clusterer, None)
    out = {**describe(chosen), "faces": int(n_rows)}
    if chosen is not clusterer:
        out.update(instead_of=describe(clusterer)["estimator"], because=because)
    return out


class FaceClusterer(ClusterMixin, BaseEstimator):
    """Shared post-processing; subclasses implement `_cluster(Xn) -> labels`.

    `constraints` (idcluster.clustering.constraints.Constraints over the rows of X: seeds,
    review decisions, video tracks/frames) are applied here for every clusterer;
    must-linked rows are never dropped as too small nor lose a same-image contest.

    After `fit`, `ran_` (what_runs) records which estimator partitioned the rows, with
    which parameters: a subclass may hand a large set to another clusterer (`estimator_for`).
    """

    def estimator_for(self, n_rows: int) -> tuple[BaseEstimator, str | None]:
        """The estimator that partitions n_rows faces, and why when it is not this one."""
        return self, None

    def fit(self, X, y=None, groups=None, constraints: Constraints | None = None):
        self.ran_ = what_runs(self, len(X))
        self.probabilities_ = None
        chosen, because = self.estimator_for(len(X))
        if chosen is not self:
            log.info("%s: %s clusters instead of %s (%s)", because, type(chosen).__name__, type(self).__name__,
                     ", ".join(f"{k}={v}" for k, v in self.ran_["params"].items()))
            self.large_set_ = chosen.fit(X, groups=groups, constraints=constraints)
            self.labels_ = self.large_set_.labels_
            return self
        Xn = unit_rows(X)
        labels = np.asarray(self._cluster(Xn), dtype=np.int64)
        labels = drop_small(labels, self.min_cluster_size)
        keep = must_linked_rows(constraints, len(Xn)) if constraints else None
        labels = apply_constraints(Xn, labels, constraints)
        if self.cannot_link_same_image and groups is not None:
            labels = enforce_cannot_link(Xn, labels, groups, keep=keep)
        if self.reassign_noise is not None:
            labels = reassign_noise(Xn, labels, float(self.reassign_noise), groups if self.cannot_link_same_image else None,
                                    forbidden=cannot_link_map(constraints))
        self.labels_ = drop_small(labels, self.min_cluster_size, keep=keep)
        if self.probabilities_ is not None:  # HDBSCAN's, after post-processing
            self.probabilities_ = np.where(self.labels_ >= 0, self.probabilities_, 0.0)
        return self

    def fit_predict(self, X, y=None, groups=None, constraints: Constraints | None = None):
        return self.fit(X, groups=groups, constraints=constraints).labels_


def mean_pairwise_distance(Xn: np.ndarray) -> float:
    """Mean cosine distance over the distinct pairs of unit rows, in O(n d): the sum of all
    pairwise similarities is |sum of rows|^2, less the n self-similarities."""
    n = len(Xn)
    if n < 2:
        return 0.0
    s = Xn.sum(axis=0)
    return float(1.0 - (s @ s - n) / (n * (n - 1)))


def apply_constraints(Xn: np.ndarray, labels: np.ndarray, constraints: Constraints | None) -> np.ndarray:
    """Labels that satisfy `constraints` (see the module docstring); noise is -1.

    1. Each must-link group (overlapping groups unioned) takes one label: the most
       common non-noise label among its members (ties: the larger cluster), else a
       fresh label.
    2. Two groups that a cannot-link pair separates but that ended on one label are
       split: the smaller group gets a fresh label.
    3. Any other cannot-link pair still sharing a label loses one member to noise:
       a must-linked member stays, else the one farther from the cluster centre leaves.
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    if not constraints:
        return labels
    n = len(labels)
    groups = union_groups(constraints.must_link, n)
    fresh = int(labels.max(initial=-1)) + 1
    group_of = np.full(n, -1)
    sizes = np.bincount(labels[labels >= 0], minlength=fresh) if fresh else np.zeros(0, int)
    for gi, g in enumerate(groups):
        group_of[g] = gi
        current = labels[g]
        current = current[current >= 0]
        if len(current):
            vals, counts = np.unique(current, return_counts=True)
            best = max(zip(counts, sizes[vals], -vals))  # most members, then larger cluster, then lower id
            labels[g] = -best[2]
        else:
            labels[g] = fresh
            fresh += 1

    pairs = [(a, b) for a, b in constraints.cannot_link if a < n and b < n]
    # 2. groups forced onto one label by step 1 but cannot-linked: split off the smaller group.
    for a, b in pairs:
        ga, gb = group_of[a], group_of[b]
        if ga >= 0 and gb >= 0 and ga != gb and labels[a] == labels[b] >= 0:
            small = groups[ga] if len(groups[ga]) < len(groups[gb]) else groups[gb]
            labels[small] = fresh
            fresh += 1
    # 3. remaining violations: one member of the pair becomes noise.
    sims = similarity_to_centre(np.asarray(Xn, dtype=np.float64), labels)
    for a, b in pairs:
        if labels[a] < 0 or labels[a] != labels[b]:
            continue
        if group_of[a] >= 0 and group_of[b] >= 0:
            continue  # both in one must-link group: contradictory input, the must-link wins
        if group_of[a] >= 0:
            loser = b
        elif group_of[b] >= 0:
            loser = a
        else:
            loser = a if sims[a] < sims[b] else b
        labels[loser] = -1
    return labels


def relabel_by_size(labels, ties: str = "first") -> np.ndarray:
    """Cluster 0 is the largest, noise stays -1. O(n log n) at any cluster count.

    Equal sizes: `ties="first"` the cluster seen first in `labels` comes first; `ties="label"`
    the smaller old label (labels already in an order worth keeping, e.g. face identities
    numbered by size, then identities found later).
    """
    if ties not in ("first", "label"):
        raise ValueError(f"ties must be 'first' or 'label', got {ties!r}")
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), -1, dtype=np.int64)
    rows = np.flatnonzero(labels >= 0)
    ids, first, inv, counts = np.unique(labels[rows], return_index=True, return_inverse=True, return_counts=True)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.lexsort((first if ties == "first" else ids, -counts))] = np.arange(len(ids))
    out[rows] = rank[inv.ravel()]
    return out
