"""Clustering 10^5-10^6 faces: a k-nearest-neighbour similarity graph, then graph clustering.

Memory is O(n * k) (never the n x n distance matrix of agglomerative, DBSCAN's
radius graph on dense data or HDBSCAN's brute-force tree):

1. Each face's k most similar faces among those at least the calibrated similarity
   (1 - the embedder's `distance_threshold`; inner product on unit vectors = cosine
   similarity): faiss's exact search (`IndexFlatIP`) for small n, an inverted file
   above `exact_max_rows` (faiss's k-means lists; each list compared
   with the faces that probe it in one BLAS product: the pairs faiss's IndexIVFFlat
   search finds), or faiss's HNSW graph (`index=hnsw`).
2. Those pairs make an undirected sparse graph weighted by similarity: an edge where
   i is in j's list and j in i's (`mutual`, the default) or either (mutual=false).
3. Chinese Whispers on that graph (graph.chinese_whispers, vectorised: the one
   clusterer=chinese_whispers runs too). `method=components` gives connected
   components, `method=leiden` the Leiden algorithm (leidenalg, extra
   `idcluster[scale]`).

The shared post-processing of `base.FaceClusterer` (min_cluster_size,
cannot-link per image, constraints, noise re-assignment) follows, as for every
clusterer.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from .base import FaceClusterer, ParameterError
from .graph import chinese_whispers, leiden

INDEXES = ("auto", "flat", "ivf", "hnsw")
METHODS = ("whispers", "components", "leiden")


def nearest_neighbours(X: np.ndarray, k: int, index: str = "flat", hnsw_m: int = 32, ef_search: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """faiss's k nearest neighbours (similarities, neighbour rows), each n x k, most similar first;
    -1 rows where fewer exist. `flat`: exact; `hnsw`: an HNSW graph (index=hnsw's search)."""
    import faiss  # imported here: only this clusterer needs it

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    k = min(k, n)
    if index == "flat":
        ix = faiss.IndexFlatIP(d)
    elif index == "hnsw":
        ix = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efSearch = max(ef_search, k)
    else:
        raise ParameterError(f"nearest_neighbours: index must be flat or hnsw, got {index!r}")
    ix.add(X)
    return ix.search(X, k)


def _top_k(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, k: int, n: int):
    """Of candidate pairs (rows, cols, sims), each row's k most similar (ties: the smaller column).
    Only the rows holding more than k candidates are sorted."""
    over = np.bincount(rows, minlength=n) > k
    if not over.any():
        return rows, cols, sims
    sel = over[rows]
    r, c, s = rows[sel], cols[sel], sims[sel]
    order = np.lexsort((c, -s, r))
    r, c, s = r[order], c[order], s[order]
    keep = np.arange(len(r)) - np.searchsorted(r, r) < k
    rest = ~sel
    return (np.concatenate([rows[rest], r[keep]]), np.concatenate([cols[rest], c[keep]]),
            np.concatenate([sims[rest], s[keep]]))


def _pairs_above(Q: np.ndarray, q_ids: np.ndarray, C: np.ndarray, c_ids: np.ndarray, min_similarity: float, k: int):
    """Each query's k most similar candidates at least min_similarity similar, never itself, as
    (query id, candidate id, similarity): one matrix product (BLAS) for the whole block. Keeping
    only k per query here bounds memory by n k even when everyone looks alike."""
    S = Q @ C.T
    hit = np.flatnonzero(S >= np.float32(min_similarity))
    local, cols = hit // len(c_ids), c_ids[hit % len(c_ids)]
    other = q_ids[local] != cols
    local, cols, sims = _top_k(local[other], cols[other], S.ravel()[hit[other]], k, len(q_ids))
    return q_ids[local], cols, sims


def list_centres(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """Centres of ~4 sqrt(n) inverted lists: faiss's spherical k-means (10 rounds, as faiss's
    IndexIVF trains) on a sample of 40 faces per list (what its k-means wants)."""
    import faiss  # imported here: only this clusterer needs it

    n, d = X.shape
    nlist = int(max(1, min(4 * np.sqrt(n), n // 40)))
    sample = X[np.random.default_rng(seed).choice(n, size=min(n, 40 * nlist), replace=False)]
    km = faiss.Kmeans(d, nlist, niter=10, seed=seed, spherical=True, max_points_per_centroid=40)
    km.train(sample)
    return km.centroids


def _ivf_pairs(X: np.ndarray, centres: np.ndarray, min_similarity: float, k: int, nprobe: int, timings: dict):
    """An inverted file searched a list at a time.

    Each face belongs to the list of its most similar centre and searches the `nprobe`
    lists whose centres are most similar to it (faiss's IndexIVFFlat rule, so the same
    pairs as its search). In place of one scan per face, each list is compared at once
    with every face that probes it: one BLAS matrix product per list.
    """
    import faiss  # imported here: only this clusterer needs it

    t0 = time.perf_counter()
    nlist = len(centres)
    nprobe = max(1, min(nprobe, nlist))
    quantizer = faiss.IndexFlatIP(centres.shape[1])
    quantizer.add(np.ascontiguousarray(centres, dtype=np.float32))
    _, probes = quantizer.search(X, nprobe)  # each face's lists, its own first
    probes = probes.astype(np.int32)
    members = np.argsort(probes[:, 0], kind="stable").astype(np.int32)
    member_bounds = np.concatenate([[0], np.cumsum(np.bincount(probes[:, 0], minlength=nlist))])
    flat = probes.ravel()
    askers = (np.argsort(flat, kind="stable") // nprobe).astype(np.int32)  # the faces probing each list, by list
    asker_bounds = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=nlist))])
    del probes, flat
    timings["assign_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    parts = []
    for lst in range(nlist):
        m = members[member_bounds[lst]:member_bounds[lst + 1]]
        q = askers[asker_bounds[lst]:asker_bounds[lst + 1]]
        if len(m) and len(q):
            parts.append(_pairs_above(X[q], q, X[m], m, min_similarity, k))
    timings["search_s"] = time.perf_counter() - t0
    return parts


def neighbour_edges(X: np.ndarray, k: int, min_similarity: float, index: str = "auto", exact_max_rows: int = 50_000,
                    nprobe: int = 16, seed: int = 0, timings: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each face's k most similar other faces among those at least `min_similarity` similar.

    Returns (rows, cols, similarities) of those pairs (i -> j; j -> i only where i is
    among j's). `flat`: faiss's exact search; `ivf`: inverted lists (_ivf_pairs);
    `hnsw`: faiss's HNSW graph; `auto`: flat up to exact_max_rows. `timings`
    (optional) receives seconds per step.
    """
    timings = {} if timings is None else timings
    if index not in INDEXES:
        raise ParameterError(f"index must be one of {', '.join(INDEXES)}, got {index!r}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    if index == "auto":
        index = "flat" if n <= exact_max_rows else "ivf"
    t0 = time.perf_counter()
    if n < 2:
        parts = []
    elif index == "ivf":
        centres = list_centres(X, seed)
        timings["train_s"] = time.perf_counter() - t0
        parts = _ivf_pairs(X, centres, min_similarity, k, nprobe, timings)
    else:  # faiss's exact search is faster than blocked products here (5*10^4 faces: 14 vs 19 CPU-s)
        sims, idx = nearest_neighbours(X, k + 1, index)  # +1: a face is its own nearest neighbour
        rows = np.repeat(np.arange(n, dtype=np.int32), idx.shape[1])
        keep = (idx.ravel() >= 0) & (idx.ravel() != rows) & (sims.ravel() >= np.float32(min_similarity))
        parts = [(rows[keep], idx.ravel()[keep].astype(np.int32), sims.ravel()[keep])]
        timings["search_s"] = time.perf_counter() - t0
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    t0 = time.perf_counter()
    edges = _top_k(*(np.concatenate(a) for a in zip(*parts)), k, n)
    timings["top_k_s"] = time.perf_counter() - t0
    return edges


def similarity_graph(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, n: int, mutual: bool = False) -> csr_matrix:
    """Symmetric sparse graph of the pairs: i in j's list or j in i's (mutual: both) makes one
    edge, weighted by its similarity."""
    g = coo_matrix((sims.astype(np.float64), (rows, cols)), shape=(n, n)).tocsr()
    return (g.minimum(g.T) if mutual else g.maximum(g.T)).tocsr()


class KNNGraph(FaceClusterer):
    """kNN-graph clustering for large face sets (10^4-10^6+): neighbours above the calibrated
    similarity, Chinese Whispers.

    `distance_threshold` is the embedder's calibrated cosine distance (as for the
    other clusterers): an edge joins two faces only when their similarity is at
    least 1 - distance_threshold. `k` neighbours per face bound memory to O(n k).
    `mutual` (default): an edge only where each face is among the other's k, so a
    face with many look-alikes cannot bridge two people (synthetic dlib sets, BCubed
    F1: the same at 10^3-10^4, 0.932 -> 0.956 at 10^5, 0.827 -> 0.887 at 10^6);
    mutual=false: where either is.
    After fit, `timings_` holds the seconds of each step (train_s, assign_s,
    search_s: the neighbour search; graph_s; partition_s).
    """

    def __init__(self, distance_threshold=0.1, k=30, method="whispers", index="auto", exact_max_rows=50_000,
                 nprobe=16, mutual=True, iterations=20, batches=8, resolution=0.5, min_cluster_size=2,
                 cannot_link_same_image=True, reassign_noise=None, random_state=0):
        self.distance_threshold = distance_threshold
        self.k = k
        self.method = method
        self.index = index
        self.exact_max_rows = exact_max_rows
        self.nprobe = nprobe
        self.mutual = mutual
        self.iterations = iterations
        self.batches = batches
        self.resolution = resolution
        self.min_cluster_size = min_cluster_size
        self.cannot_link_same_image = cannot_link_same_image
        self.reassign_noise = reassign_noise
        self.random_state = random_state

    def graph(self, Xn: np.ndarray, timings: dict | None = None) -> csr_matrix:
        if self.method not in METHODS:
            raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        timings = {} if timings is None else timings
        rows, cols, sims = neighbour_edges(Xn, int(self.k), 1.0 - float(self.distance_threshold), self.index,
                                           int(self.exact_max_rows), nprobe=int(self.nprobe),
                                           seed=int(self.random_state), timings=timings)
        t0 = time.perf_counter()
        g = similarity_graph(rows, cols, sims, len(Xn), mutual=bool(self.mutual))
        timings["graph_s"] = time.perf_counter() - t0
        return g

    def _cluster(self, Xn):
        self.timings_ = {}
        g = self.graph(Xn, self.timings_)
        t0 = time.perf_counter()
        if self.method == "components":
            labels = connected_components(g, directed=False)[1]
        elif self.method == "leiden":
            labels = leiden(g, float(self.resolution), int(self.random_state))
        else:
            labels = chinese_whispers(g, int(self.iterations), int(self.batches), int(self.random_state))
        self.timings_["partition_s"] = time.perf_counter() - t0
        return labels
