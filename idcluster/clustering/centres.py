"""THE cluster centre (unit mean of the members' vectors) and the similarity to it.

NumPy and SciPy only, no scikit-learn: the review page imports these to open its first
view fast (`clustering.base` re-exports them for the clusterers).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float64 (a zero row stays zero)."""
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def centres(X: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """(cluster ids, sorted; their centres): each centre is the unit-length mean of the rows of X
    labelled with that id (noise, label < 0, belongs to none), float64.

    One sparse (clusters x rows) product, O(n d) at any number of clusters. Rows are used as
    given: pass unit rows (embeddings are) for the usual cosine centre.
    """
    labels = np.asarray(labels)
    clustered = np.flatnonzero(labels >= 0)
    ids, inv, counts = np.unique(labels[clustered], return_inverse=True, return_counts=True)
    if len(ids) == 0:
        return ids, np.zeros((0, np.shape(X)[1]))
    member = csr_matrix((np.ones(len(clustered)), (inv.ravel(), clustered)), shape=(len(ids), len(X)))
    return ids, unit_rows(np.asarray(member @ X) / counts[:, None])


def centre(X: np.ndarray) -> np.ndarray:
    """The centre of all rows of X (one cluster): `centres` with every row in it."""
    return centres(X, np.zeros(len(X), dtype=np.int64))[1][0]


def similarity_to_centre(X: np.ndarray, labels) -> np.ndarray:
    """Cosine similarity of each (unit) row to its own cluster's centre (noise: -inf)."""
    labels = np.asarray(labels)
    sims = np.full(len(labels), -np.inf)
    ids, c = centres(X, labels)
    rows = np.flatnonzero(labels >= 0)
    if len(rows):
        sims[rows] = np.einsum("ij,ij->i", np.asarray(X[rows], dtype=np.float64), c[np.searchsorted(ids, labels[rows])])
    return sims
