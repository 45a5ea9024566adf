"""Clustering 10^5-10^6 faces: a k-nearest-neighbour similarity graph, then graph clustering.

Memory is O(n * k) (never the n x n distance matrix of agglomerative, DBSCAN's
radius graph on dense data or HDBSCAN's brute-force tree):

1. faiss finds each face's k most similar faces (inner product on unit vectors =
   cosine similarity): exact (`IndexFlatIP`) for small n, an inverted file
   (`IndexIVFFlat`) or HNSW graph (`IndexHNSWFlat`) above `exact_max_rows`.
2. Edges below the calibrated similarity (1 - the embedder's `distance_threshold`)
   are dropped; the rest, symmetrised, weighted by similarity, form a sparse graph.
3. Chinese Whispers on that graph (graph.chinese_whispers, vectorised: the one
   clusterer=chinese_whispers runs too). `method=components` gives connected
   components, `method=leiden` the Leiden algorithm (leidenalg, extra
   `idcluster[scale]`).

The shared post-processing of `base.FaceClusterer` (min_cluster_size,
cannot-link per image, constraints, noise re-assignment) follows, as for every
clusterer.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from .base import FaceClusterer, ParameterError
from .graph import chinese_whispers, leiden

INDEXES = ("auto", "flat", "ivf", "hnsw")
METHODS = ("whispers", "components", "leiden")


def nearest_neighbours(X: np.ndarray, k: int, index: str = "auto", exact_max_rows: int = 50_000,
                       nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, neighbour rows), each n x k, most similar first; -1 rows where fewer exist."""
    import faiss  # imported here: only this clusterer needs it

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    k = min(k, n)
    if index == "auto":
        index = "flat" if n <= exact_max_rows else "ivf"
    if index == "flat":
        ix = faiss.IndexFlatIP(d)
    elif index == "ivf":
        # ~4 sqrt(n) lists; training on 40 points per list is what faiss's k-means needs.
        nlist = int(max(1, min(4 * np.sqrt(n), n // 40)))
        ix = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = X[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        ix.cp.seed = seed
        ix.train(sample)
        ix.nprobe = min(nprobe, nlist)
    elif index == "hnsw":
        ix = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efSearch = max(ef_search, k)
    else:
        raise ParameterError(f"index must be one of {', '.join(INDEXES)}, got {index!r}")
    ix.add(X)
    sims, idx = ix.search(X, k)
    return sims, idx


def similarity_graph(sims: np.ndarray, idx: np.ndarray, min_similarity: float) -> csr_matrix:
    """Symmetric sparse graph of the kNN pairs at least `min_similarity` apart (no self-loops)."""
    n = len(idx)
    rows = np.repeat(np.arange(n), idx.shape[1])
    cols, w = idx.ravel(), sims.ravel()
    keep = (cols >= 0) & (cols != rows) & (w >= min_similarity)
    g = coo_matrix((w[keep].astype(np.float64), (rows[keep], cols[keep])), shape=(n, n)).tocsr()
    return g.maximum(g.T).tocsr()  # i in j's list or j in i's: one edge, its similarity


class KNNGraph(FaceClusterer):
    """kNN-graph clustering for large face sets (10^4-10^6+): faiss neighbours, calibrated edges, Chinese Whispers.

    `distance_threshold` is the embedder's calibrated cosine distance (as for the
    other clusterers): an edge joins two faces only when their similarity is at
    least 1 - distance_threshold. `k` neighbours per face bound memory to O(n k).
    """

    def __init__(self, distance_threshold=0.1, k=30, method="whispers", index="auto", exact_max_rows=50_000,
                 nprobe=16, iterations=20, batches=8, resolution=0.5, min_cluster_size=2,
                 cannot_link_same_image=True, reassign_noise=None, random_state=0):
        self.distance_threshold = distance_threshold
        self.k = k
        self.method = method
        self.index = index
        self.exact_max_rows = exact_max_rows
        self.nprobe = nprobe
        self.iterations = iterations
        self.batches = batches
        self.resolution = resolution
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise
        self.random_state = random_state

    def graph(self, Xn: np.ndarray) -> csr_matrix:
        if self.method not in METHODS:
            raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.index not in INDEXES:
            raise ParameterError(f"index must be one of {', '.join(INDEXES)}, got {self.index!r}")
        # +1: a face is its own nearest neighbour.
        sims, idx = nearest_neighbours(Xn, int(self.k) + 1, self.index, int(self.exact_max_rows),
                                       nprobe=int(self.nprobe), seed=int(self.random_state))
        return similarity_graph(sims, idx, 1.0 - float(self.distance_threshold))

    def _cluster(self, Xn):
        g = self.graph(Xn)
        if self.method == "components":
            return connected_components(g, directed=False)[1]
        if self.method == "leiden":
            return leiden(g, float(self.resolution), int(self.random_state))
        return chinese_whispers(g, int(self.iterations), int(self.batches), int(self.random_state))
