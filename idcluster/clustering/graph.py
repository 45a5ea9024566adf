"""Partitions of a weighted undirected similarity graph: Chinese Whispers, Leiden.

The one Chinese Whispers of the package: clusterer=chinese_whispers runs it on
the exact radius graph, clusterer=knn_graph on the kNN graph.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from .vote import tally


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l)."""
    total = int(lens.sum())
    return np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)


def chinese_whispers(graph: csr_matrix, iterations: int = 20, batches: int = 8, seed: int = 0) -> np.ndarray:
    """Chinese Whispers labels (0..c-1) of a weighted undirected graph, vectorised per batch of nodes.

    Each node takes the label with the largest summed edge weight among its
    neighbours (ties: the smaller label); isolated nodes keep their own. Nodes are
    updated in `batches` random batches per round (near-asynchronous, as in Biemann's
    algorithm, so cliques do not oscillate), each batch one sparse vote (vote.tally).

    Only nodes with a neighbour whose label changed since their own last vote are
    voted again: the others would vote for the label they hold. Same labels as voting
    every node every round, at a fraction of the work once most nodes have settled
    (at 10^6 faces most rounds touch a few percent of them).
    """
    n = graph.shape[0]
    labels = np.arange(n)
    indptr, indices, data = graph.indptr, graph.indices, graph.data
    degree = np.diff(indptr)
    stale = degree > 0  # a neighbour's label changed since this node last voted (isolated nodes never vote)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for batch in np.array_split(rng.permutation(n), max(1, batches)):
            batch = batch[stale[batch]]
            if not len(batch):
                continue
            stale[batch] = False
            lens = degree[batch]
            entries = _ranges(indptr[batch], lens)
            local = np.repeat(np.arange(len(batch)), lens)
            new = tally(local, labels[indices[entries]], data[entries], len(batch)).label
            moved = labels[batch] != new
            labels[batch] = new
            moved = batch[moved]
            changed += len(moved)
            stale[indices[_ranges(indptr[moved], degree[moved])]] = True
        if not changed:
            break
    return np.unique(labels, return_inverse=True)[1].ravel()


def leiden(graph: csr_matrix, resolution: float, seed: int = 0) -> np.ndarray:
    """Leiden communities (constant Potts model: no resolution limit on 10^6 nodes)."""
    from ..models.extras import require

    leidenalg, igraph = require("scale", "clusterer.method=leiden")  # one ModelError naming the extra
    upper = coo_matrix(graph)
    keep = upper.row < upper.col
    g = igraph.Graph(n=graph.shape[0], edges=np.stack([upper.row[keep], upper.col[keep]], axis=1).tolist())
    part = leidenalg.find_partition(g, leidenalg.CPMVertexPartition, weights=upper.data[keep].tolist(),
                                    resolution_parameter=resolution, seed=seed)
    return np.asarray(part.membership, dtype=np.int64)
