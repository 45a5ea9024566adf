"""Clusterers for L2-normalised face embeddings, in scikit-learn estimator style.

Each wraps a well-kept implementation (scikit-learn, scipy's graph tools) and
adds what identity clustering needs on top, in one place for all of them:

- `min_cluster_size`: smaller clusters become noise (-1): a one-photo
  "identity" is not an identity.
- `cannot_link_same_image`: faces detected in the same image (the `groups`
  passed to `fit_predict`) never share a cluster: per cluster and image, the
  face closest to the cluster's centre stays, the others become noise.
- `reassign_noise`: a noise point joins its nearest cluster when its cosine
  similarity to that cluster's centre is at least this value (None = off).

Thresholds are cosine distances (1 - cosine similarity); each embedder config
states its calibrated `distance_threshold` and the configs interpolate it.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn import cluster as skcluster
from joblib import Memory
from sklearn.base import BaseEstimator, ClusterMixin
# HDBSCAN's tree -> labels step; private in scikit-learn, so its version is
# pinned in pyproject.toml and a test checks labels against HDBSCAN.fit_predict.
from sklearn.cluster._hdbscan.hdbscan import tree_to_labels
from sklearn.neighbors import radius_neighbors_graph

from .constraints import Constraints, apply_constraints, cannot_link_map, must_linked_rows

log = logging.getLogger(__name__)


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _centres(Xn: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids and unit mean vectors: one sparse (clusters x rows) product, O(n d)."""
    clustered = np.flatnonzero(labels >= 0)
    ids, inv, counts = np.unique(labels[clustered], return_inverse=True, return_counts=True)
    if len(ids) == 0:
        return ids, np.zeros((0, Xn.shape[1]))
    member = csr_matrix((np.ones(len(clustered)), (inv.ravel(), clustered)), shape=(len(ids), len(Xn)))
    return ids, _unit(np.asarray(member @ Xn) / counts[:, None])


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
    ids, centres = _centres(Xn, labels)
    rows = np.flatnonzero(labels >= 0)
    if len(rows) == 0:
        return labels
    cidx = np.searchsorted(ids, labels[rows])
    sims = np.einsum("ij,ij->i", Xn[rows], centres[cidx])
    if keep is not None:
        sims = np.where(keep[rows], np.inf, sims)
    order = np.lexsort((rows, -sims, gid[rows], cidx))
    c, g = cidx[order], gid[rows][order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (c[1:] == c[:-1]) & (g[1:] == g[:-1])
    labels[rows[order[repeat]]] = -1
    return labels


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
    ids, centres = _centres(Xn, labels)
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
        sims = Xn[noise[lo:lo + step]] @ centres.T
        sel = (pos >= lo) & (pos < lo + step)
        sims[pos[sel] - lo, cidx[sel]] = -np.inf
        best[lo:lo + step] = sims.argmax(axis=1)
        top[lo:lo + step] = sims[np.arange(len(sims)), best[lo:lo + step]]
    ok = top >= min_similarity
    labels[noise[ok]] = ids[best[ok]]
    return labels


class _FaceClusterer(ClusterMixin, BaseEstimator):
    """Shared post-processing; subclasses implement `_cluster(Xn) -> labels`.

    `constraints` (idcluster.clustering.constraints.Constraints over the rows of X: seeds,
    review decisions, video tracks/frames) are applied here for every clusterer;
    must-linked rows are never dropped as too small nor lose a same-image contest.
    """

    def fit(self, X, y=None, groups=None, constraints: Constraints | None = None):
        Xn = _unit(X)
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
        if getattr(self, "probabilities_", None) is not None:  # HDBSCAN's, after post-processing
            self.probabilities_ = np.where(self.labels_ >= 0, self.probabilities_, 0.0)
        return self

    def fit_predict(self, X, y=None, groups=None, constraints: Constraints | None = None):
        return self.fit(X, groups=groups, constraints=constraints).labels_


# Brute force (a full distance matrix, BLAS) builds HDBSCAN's tree ~15x faster than
# the kd-tree at 512-d (10k faces: 7 s vs 100 s here) but needs n^2 * 8 bytes.
BRUTE_MAX_ROWS = 20_000


def single_linkage_tree(Xn: np.ndarray, min_samples: int, algorithm: str) -> np.ndarray:
    """The expensive part of HDBSCAN: the single-linkage tree of mutual reachability.

    It depends on the data and min_samples only, so min_cluster_size, epsilon and
    selection-method sweeps reuse it (cached via `memory`, as in sklearn's OPTICS).
    """
    est = skcluster.HDBSCAN(min_cluster_size=2, min_samples=min_samples, algorithm=algorithm, copy=True).fit(Xn)
    return est._single_linkage_tree_


class HDBSCAN(_FaceClusterer):
    """scikit-learn HDBSCAN on the unit vectors (euclidean there is monotone in cosine distance).

    `memory` (a folder; the config points it into cache_dir) caches the
    single-linkage tree with joblib, so re-runs and sweeps over min_cluster_size,
    cluster_selection_epsilon and cluster_selection_method skip the expensive
    part. `algorithm=auto` takes brute force up to BRUTE_MAX_ROWS faces.

    Above `knn_graph_above` faces (None = never) the tree would take tens of
    minutes (kd-tree at 512-d) or n^2 memory (brute): the kNN-graph clusterer
    (idcluster.clustering.knn_graph, O(n k)) clusters instead at `distance_threshold`, with
    one info line saying so; the post-processing is the same.
    """

    def __init__(self, min_cluster_size=10, min_samples=2, cluster_selection_epsilon=0.0,
                 cluster_selection_method="eom", allow_single_cluster=True, single_cluster_threshold=0.1,
                 algorithm="auto", memory=None, cannot_link_same_image=True, reassign_noise=None,
                 knn_graph_above=None, distance_threshold=0.1):
        self.min_cluster_size = min_cluster_size
        self.allow_single_cluster = allow_single_cluster
        self.single_cluster_threshold = single_cluster_threshold
        self.min_samples = min_samples
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.cluster_selection_method = cluster_selection_method
        self.algorithm = algorithm
        self.memory = memory
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise
        self.knn_graph_above = knn_graph_above
        self.distance_threshold = distance_threshold

    def _cluster(self, Xn):
        self.probabilities_ = None
        if self.knn_graph_above is not None and len(Xn) > self.knn_graph_above:
            from .knn_graph import KNNGraph

            log.info("%d faces > clusterer.knn_graph_above=%d: clustering a kNN graph (as clusterer=knn_graph, "
                     "distance_threshold=%g) instead of HDBSCAN's tree", len(Xn), self.knn_graph_above,
                     self.distance_threshold)
            return KNNGraph(distance_threshold=self.distance_threshold)._cluster(Xn)
        min_cluster_size = max(2, self.min_cluster_size)
        min_samples = self.min_samples if self.min_samples is not None else min_cluster_size
        if len(Xn) <= max(min_samples, 1):
            return np.full(len(Xn), -1)
        algorithm = self.algorithm
        if algorithm == "auto":
            algorithm = "brute" if len(Xn) <= BRUTE_MAX_ROWS else "kd_tree"
        tree_fn = Memory(self.memory, verbose=0).cache(single_linkage_tree) if self.memory else single_linkage_tree
        tree = tree_fn(np.ascontiguousarray(Xn), int(min_samples), algorithm)
        select = (min_cluster_size, self.cluster_selection_method)
        eps = float(self.cluster_selection_epsilon)
        labels, self.probabilities_ = _tree_to_labels(tree, *select, False, eps)
        if self.allow_single_cluster:
            # HDBSCAN never selects its root, so a folder of one character comes out as no
            # identity at all, or split into near-duplicate sub-clusters. Take the root when it
            # is one identity by the embedder's calibrated threshold (mean pairwise cosine
            # distance, as average linkage cuts); plain allow_single_cluster=True merges
            # everyone on LFW (BCubed F1 0.954 -> 0.087).
            single, probs = _tree_to_labels(tree, *select, True, eps)
            members = np.flatnonzero(single >= 0)
            if len(members) >= min_cluster_size and mean_pairwise_distance(Xn[members]) <= self.single_cluster_threshold:
                # The root's outliers that are as close to its members as average linkage
                # allows belong to the same identity (a re-compressed copy of one photo).
                s = Xn[members].sum(axis=0)
                outliers = np.flatnonzero(single < 0)
                near = outliers[1.0 - Xn[outliers] @ s / len(members) <= self.single_cluster_threshold]
                single[near], probs[near] = 0, 1.0
                labels, self.probabilities_ = single, probs
        return labels


def _tree_to_labels(tree, min_cluster_size, method, allow_single_cluster, eps):
    try:
        return tree_to_labels(tree, min_cluster_size, method, allow_single_cluster, eps, None)
    except TypeError as e:
        if eps > 0 and "0-dimensional" in str(e):
            # scikit-learn 1.9's epsilon search indexes size-1 arrays as scalars, which NumPy >= 2.4
            # refuses (scikit-learn issue #33219, fix pending in PR #34243): one clear line instead.
            raise ValueError(
                "HDBSCAN's cluster_selection_epsilon > 0 fails inside scikit-learn 1.9 with NumPy >= 2.4 "
                "(scikit-learn issue #33219): use cluster_selection_epsilon=0, or clusterer=agglomerative "
                "with distance_threshold") from None
        raise


def mean_pairwise_distance(Xn: np.ndarray) -> float:
    """Mean cosine distance over the distinct pairs of unit rows, in O(n d): the sum of all
    pairwise similarities is |sum of rows|^2, less the n self-similarities."""
    n = len(Xn)
    if n < 2:
        return 0.0
    s = Xn.sum(axis=0)
    return float(1.0 - (s @ s - n) / (n * (n - 1)))


class DBSCAN(_FaceClusterer):
    """scikit-learn DBSCAN with cosine distance: faces within `eps` chain into one identity."""

    def __init__(self, eps=0.1, min_samples=2, min_cluster_size=2, cannot_link_same_image=True, reassign_noise=None):
        self.eps = eps
        self.min_samples = min_samples
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise

    def _cluster(self, Xn):
        return skcluster.DBSCAN(eps=self.eps, min_samples=self.min_samples, metric="cosine").fit_predict(Xn)


class Agglomerative(_FaceClusterer):
    """scikit-learn agglomerative clustering, cosine distance, cut at `distance_threshold`.

    It needs the full pairwise distance matrix (n^2 * 8 bytes: 3.2 GB at 20k faces),
    so above `knn_graph_above` faces (None = never) it clusters a kNN graph at the
    same threshold instead (clusterer=knn_graph), with one info line.
    """

    def __init__(self, distance_threshold=0.1, linkage="average", min_cluster_size=2,
                 cannot_link_same_image=True, reassign_noise=None, knn_graph_above=None):
        self.distance_threshold = distance_threshold
        self.linkage = linkage
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise
        self.knn_graph_above = knn_graph_above

    def _cluster(self, Xn):
        if len(Xn) < 2:
            return np.zeros(len(Xn), dtype=np.int64)
        if self.knn_graph_above is not None and len(Xn) > self.knn_graph_above:
            from .knn_graph import KNNGraph

            log.info("%d faces > clusterer.knn_graph_above=%d: clustering a kNN graph (as clusterer=knn_graph, "
                     "distance_threshold=%g) instead of the full distance matrix", len(Xn), self.knn_graph_above,
                     self.distance_threshold)
            return KNNGraph(distance_threshold=self.distance_threshold)._cluster(Xn)
        return skcluster.AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage=self.linkage, distance_threshold=self.distance_threshold,
        ).fit_predict(Xn)


class ChineseWhispers(_FaceClusterer):
    """Graph clustering: an edge joins faces closer than `distance_threshold` (cosine),
    weighted by similarity; Chinese Whispers label propagation (Biemann 2006, the
    algorithm behind dlib's face-clustering example) splits weakly joined groups
    that plain connected components would chain together (`method=components`
    gives the latter).
    """

    def __init__(self, distance_threshold=0.1, method="whispers", iterations=20, min_cluster_size=2,
                 cannot_link_same_image=True, reassign_noise=None, random_state=0):
        self.distance_threshold = distance_threshold
        self.method = method
        self.iterations = iterations
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise
        self.random_state = random_state

    def _cluster(self, Xn):
        if self.method not in ("whispers", "components"):
            raise ValueError(f"method must be 'whispers' or 'components', got {self.method!r}")
        # On unit vectors, cosine distance t  <=>  euclidean distance sqrt(2 t).
        graph = radius_neighbors_graph(Xn, radius=np.sqrt(2 * self.distance_threshold), mode="distance")
        if self.method == "components":
            return connected_components(graph, directed=False)[1]
        graph = graph.tocsr()
        weights = graph.copy()
        weights.data = 1.0 - weights.data**2 / 2.0  # cosine similarity
        labels = np.arange(len(Xn))
        rng = np.random.default_rng(self.random_state)
        for _ in range(self.iterations):
            changed = 0
            for i in rng.permutation(len(Xn)):
                lo, hi = weights.indptr[i], weights.indptr[i + 1]
                if lo == hi:
                    continue
                votes: dict[int, float] = {}
                for j, w in zip(weights.indices[lo:hi], weights.data[lo:hi]):
                    votes[labels[j]] = votes.get(labels[j], 0.0) + w
                best = max(votes, key=votes.get)
                if best != labels[i]:
                    labels[i], changed = best, changed + 1
            if not changed:
                break
        return np.unique(labels, return_inverse=True)[1]
