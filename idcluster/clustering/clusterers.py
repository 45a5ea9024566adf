"""Clusterers for L2-normalised face embeddings, in scikit-learn estimator style.

Each wraps a well-kept implementation (scikit-learn, scipy's graph tools); what
identity clustering needs on top (min_cluster_size, cannot-link per image,
constraints, noise re-assignment) is the shared post-processing of
idcluster.clustering.base.

Thresholds are cosine distances (1 - cosine similarity); each embedder config
states its calibrated `distance_threshold` and the configs interpolate it.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components
from sklearn import cluster as skcluster
from joblib import Memory
# HDBSCAN's tree -> labels step; private in scikit-learn, so its version is
# pinned in pyproject.toml and a test checks labels against HDBSCAN.fit_predict.
from sklearn.cluster._hdbscan.hdbscan import tree_to_labels
from sklearn.base import clone
from sklearn.neighbors import radius_neighbors_graph

from .base import FaceClusterer, ParameterError, mean_pairwise_distance, separate
from .constraints import Constraints
from .graph import chinese_whispers
from .knn_graph import KNNGraph


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


class _LargeSetSwitch:
    """Above `knn_graph_above` faces (None = never) the clusterer `large_set` partitions instead
    (conf/clusterer/*.yaml names it: the kNN-graph clusterer, O(n k) memory, with this one's
    threshold and post-processing; without one, that same KNNGraph). One info line says so, and
    `ran_` / base.what_runs record it with its parameters."""

    def estimator_for(self, n_rows: int):
        if self.knn_graph_above is None or n_rows <= self.knn_graph_above:
            return self, None
        if self.large_set is not None:
            chosen = clone(self.large_set)
        else:
            chosen = KNNGraph(distance_threshold=self.distance_threshold, min_cluster_size=self.min_cluster_size,
                              cannot_link_same_image=self.cannot_link_same_image, reassign_noise=self.reassign_noise)
        return chosen, f"{n_rows} faces > clusterer.knn_graph_above={self.knn_graph_above}"


class HDBSCAN(_LargeSetSwitch, FaceClusterer):
    """scikit-learn HDBSCAN on the unit vectors (euclidean there is monotone in cosine distance).

    `memory` (a folder; the config points it into cache_dir) caches the
    single-linkage tree with joblib, so re-runs and sweeps over min_cluster_size,
    cluster_selection_epsilon and cluster_selection_method skip the expensive
    part. `algorithm=auto` takes brute force up to BRUTE_MAX_ROWS faces.

    Above `knn_graph_above` faces (None = never) the tree would take tens of
    minutes (kd-tree at 512-d) or n^2 memory (brute): `large_set` clusters instead
    (see _LargeSetSwitch; `distance_threshold` is its edge threshold).
    """

    def __init__(self, min_cluster_size=10, min_samples=2, cluster_selection_epsilon=0.0,
                 cluster_selection_method="eom", allow_single_cluster=True, single_cluster_threshold=0.1,
                 algorithm="auto", memory=None, cannot_link_same_image=True, reassign_noise=None,
                 knn_graph_above=None, distance_threshold=0.1, large_set=None):
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
        self.large_set = large_set

    def _cluster(self, Xn):
        if self.cluster_selection_method not in ("eom", "leaf"):
            raise ParameterError(f"cluster_selection_method must be 'eom' or 'leaf', got {self.cluster_selection_method!r}")
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
            raise ParameterError(
                "HDBSCAN's cluster_selection_epsilon > 0 fails inside scikit-learn 1.9 with NumPy >= 2.4 "
                "(scikit-learn issue #33219): use cluster_selection_epsilon=0, or clusterer=agglomerative "
                "with distance_threshold") from None
        raise


class DBSCAN(FaceClusterer):
    """scikit-learn DBSCAN with cosine distance: faces within `eps` chain into one identity."""

    def __init__(self, eps=0.1, min_samples=2, min_cluster_size=2, cannot_link_same_image=True, reassign_noise=None):
        self.eps = eps
        self.min_samples = min_samples
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise

    def _cluster(self, Xn):
        return skcluster.DBSCAN(eps=self.eps, min_samples=self.min_samples, metric="cosine").fit_predict(Xn)


class Agglomerative(_LargeSetSwitch, FaceClusterer):
    """scikit-learn agglomerative clustering, cosine distance, cut at `distance_threshold`.

    It needs the full pairwise distance matrix (n^2 * 8 bytes: 3.2 GB at 20k faces),
    so above `knn_graph_above` faces (None = never) `large_set` clusters instead
    (see _LargeSetSwitch).
    """

    def __init__(self, distance_threshold=0.1, linkage="average", min_cluster_size=2,
                 cannot_link_same_image=True, reassign_noise=None, knn_graph_above=None, large_set=None):
        self.distance_threshold = distance_threshold
        self.linkage = linkage
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise
        self.knn_graph_above = knn_graph_above
        self.large_set = large_set

    def _cluster(self, Xn):
        if len(Xn) < 2:
            return np.zeros(len(Xn), dtype=np.int64)
        return skcluster.AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage=self.linkage, distance_threshold=self.distance_threshold,
        ).fit_predict(Xn)


def average_linkage(D: np.ndarray, threshold: float, constraints: Constraints | None = None) -> np.ndarray:
    """Average-linkage labels of a precomputed distance matrix cut at `threshold`: the algorithm of
    Agglomerative, for callers that shape the distances themselves (the faceless stage). Cannot-
    linked pairs are set to the largest cosine distance first (base.separate, in place), so they
    join last, if ever; a caller splits what the average still joined (base.keep_compatible)."""
    if len(D) < 2:
        return np.zeros(len(D), dtype=np.int64)
    separate(D, constraints)
    return skcluster.AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                             distance_threshold=threshold).fit_predict(D)


class ChineseWhispers(FaceClusterer):
    """Graph clustering: an edge joins faces closer than `distance_threshold` (cosine),
    weighted by similarity; Chinese Whispers label propagation (Biemann 2006, the
    algorithm behind dlib's face-clustering example; graph.chinese_whispers, the one
    the kNN-graph clusterer runs too) splits weakly joined groups that plain
    connected components would chain together (`method=components` gives the latter).
    The graph is exact (every pair within the threshold); clusterer=knn_graph is the
    approximate, O(n k) one for large sets.
    """

    def __init__(self, distance_threshold=0.1, method="whispers", iterations=20, min_cluster_size=2,
                 cannot_link_same_image=True, reassign_noise=None, random_state=0, batches=8):
        self.distance_threshold = distance_threshold
        self.method = method
        self.iterations = iterations
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise
        self.random_state = random_state
        self.batches = batches

    def _cluster(self, Xn):
        if self.method not in ("whispers", "components"):
            raise ParameterError(f"method must be 'whispers' or 'components', got {self.method!r}")
        # On unit vectors, cosine distance t  <=>  euclidean distance sqrt(2 t).
        graph = radius_neighbors_graph(Xn, radius=np.sqrt(2 * self.distance_threshold), mode="distance")
        if self.method == "components":
            return connected_components(graph, directed=False)[1]
        weights = graph.tocsr()
        weights.data = 1.0 - weights.data**2 / 2.0  # cosine similarity
        return chinese_whispers(weights, int(self.iterations), int(self.batches), int(self.random_state))
