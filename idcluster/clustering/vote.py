"""The weighted label vote every neighbour-based placement shares.

Chinese Whispers (each node takes its neighbours' strongest label), `idcluster
add` (a new face joins the identity its nearest known faces vote for) and the
faceless stage (an image joins the identity its appearance neighbours vote
for) are one operation: votes (query, label, weight) summed per query and
label; the label with the largest sum wins, ties to the smaller label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix


@dataclass(frozen=True)
class Votes:
    """Per query: the winning label (-1 where no vote was cast), its summed weight, the summed
    weight of all its votes, and how many votes the winner got."""

    label: np.ndarray
    weight: np.ndarray
    total: np.ndarray
    count: np.ndarray

    @property
    def share(self) -> np.ndarray:
        """The winner's share of the query's votes (0 where none)."""
        return np.divide(self.weight, self.total, out=np.zeros(len(self.total)), where=self.total > 0)

    @property
    def mean(self) -> np.ndarray:
        """Mean weight of the winner's votes (its voters' mean similarity; 0 where none)."""
        return np.divide(self.weight, self.count, out=np.zeros(len(self.count)), where=self.count > 0)


def tally(query: np.ndarray, label: np.ndarray, weight: np.ndarray, n_queries: int) -> Votes:
    """Sum the votes (query[i] votes for label[i] >= 0 with weight[i]) per query and label.

    Weights are summed in float64. One sparse aggregation, O(votes log votes): a coo -> csr
    conversion adds duplicate (query, label) cells and sorts each row's labels, so the first
    maximum of a row is its smallest tied label.
    """
    query = np.asarray(query, dtype=np.int64)
    label = np.asarray(label, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float64)
    out_label = np.full(n_queries, -1, dtype=np.int64)
    out_weight = np.zeros(n_queries)
    total = np.bincount(query, weights=weight, minlength=n_queries)[:n_queries] if len(query) else np.zeros(n_queries)
    count = np.zeros(n_queries, dtype=np.int64)
    if not len(query):
        return Votes(out_label, out_weight, total, count)
    votes = coo_matrix((weight, (query, label)), shape=(n_queries, int(label.max()) + 1)).tocsr()
    votes.sum_duplicates()
    per_row = np.diff(votes.indptr)
    rows = np.flatnonzero(per_row)
    best_w = np.maximum.reduceat(votes.data, votes.indptr[rows])
    is_best = votes.data == np.repeat(best_w, per_row[rows])
    row_of = np.repeat(np.arange(n_queries), per_row)
    first = np.flatnonzero(is_best)
    first = first[np.unique(row_of[first], return_index=True)[1]]  # smallest label among ties
    out_label[rows] = votes.indices[first]
    out_weight[rows] = best_w
    won = label == out_label[query]
    count = np.bincount(query[won], minlength=n_queries)[:n_queries]
    return Votes(out_label, out_weight, total, count)


def neighbour_vote(sims: np.ndarray, neighbour_labels: np.ndarray, min_similarity) -> Votes:
    """kNN vote: row q of `sims` / `neighbour_labels` holds query q's neighbours (any order); each
    neighbour at least `min_similarity` similar (a number, or one per query) whose label is >= 0
    votes for it with its similarity."""
    sims = np.asarray(sims)
    neighbour_labels = np.asarray(neighbour_labels)
    # The bar in the similarities' own precision (float32 embeddings: float32), as a plain
    # `sims >= 0.85` compares.
    bar = np.asarray(min_similarity).astype(sims.dtype)
    q, j = np.nonzero((sims >= (bar[:, None] if bar.ndim else bar)) & (neighbour_labels >= 0))
    return tally(q, neighbour_labels[q, j], sims[q, j], len(sims))
