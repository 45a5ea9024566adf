"""The shared clustering primitives: the kNN vote, centres, relabel by size, cannot-link helpers."""

from __future__ import annotations

import numpy as np
import pytest

from idcluster.clustering.base import ParameterError, keep_compatible, relabel_by_size, separate
from idcluster.clustering.centres import centre, centres, similarity_to_centre
from idcluster.clustering.constraints import Constraints, cannot_link_map
from idcluster.clustering.vote import neighbour_vote, tally
from idcluster.errors import ConfigError


def test_tally_sums_per_label_and_breaks_ties_to_the_smaller_label():
    query = np.array([0, 0, 0, 1, 1, 3])
    label = np.array([5, 2, 5, 7, 4, 1])
    weight = np.array([0.5, 0.9, 0.5, 0.6, 0.6, 0.2])
    v = tally(query, label, weight, 4)
    assert v.label.tolist() == [5, 4, -1, 1]  # query 1: 7 and 4 tie at 0.6 -> 4; query 2 cast no vote
    assert np.allclose(v.weight, [1.0, 0.6, 0.0, 0.2])
    assert np.allclose(v.total, [1.9, 1.2, 0.0, 0.2])
    assert v.count.tolist() == [2, 1, 0, 1]
    assert np.allclose(v.share, [1.0 / 1.9, 0.5, 0.0, 1.0])
    assert np.allclose(v.mean, [0.5, 0.6, 0.0, 0.2])
    empty = tally([], [], [], 2)
    assert empty.label.tolist() == [-1, -1] and empty.total.tolist() == [0.0, 0.0]


def test_tally_equals_a_per_query_dictionary_vote():
    rng = np.random.default_rng(0)
    n_q, n = 200, 3000
    query, label, weight = rng.integers(0, n_q, n), rng.integers(0, 30, n), rng.random(n)
    v = tally(query, label, weight, n_q)
    for q in range(n_q):
        votes: dict[int, float] = {}
        for lab, w in zip(label[query == q], weight[query == q]):
            votes[int(lab)] = votes.get(int(lab), 0.0) + w
        if not votes:
            assert v.label[q] == -1
            continue
        top = max(votes.values())
        assert v.label[q] == min(lab for lab, w in votes.items() if np.isclose(w, top, rtol=0, atol=1e-12))
        assert v.weight[q] == pytest.approx(top)
        assert v.count[q] == int(((query == q) & (label == v.label[q])).sum())


def test_neighbour_vote_counts_only_neighbours_at_the_bar():
    sims = np.array([[0.95, 0.90, 0.80], [0.70, 0.60, 0.50], [0.99, 0.97, 0.96]], dtype=np.float32)
    labels = np.array([[1, 2, 2], [0, 0, 0], [3, -1, 4]])
    v = neighbour_vote(sims, labels, 0.85)
    assert v.label.tolist() == [1, -1, 3]  # 0.80 does not vote: 0.95 (1) beats 0.90 (2); an unlabelled neighbour never votes
    assert v.count.tolist() == [1, 0, 1] and v.total[2] == pytest.approx(0.99 + 0.96)
    per_query = neighbour_vote(sims, labels, np.array([0.85, 0.5, 0.98]))
    assert per_query.label.tolist() == [1, 0, 3] and per_query.count.tolist() == [1, 3, 1]
    # The bar is compared in the similarities' precision, as `sims >= bar` compares a float32 array.
    s = np.float32(0.7)
    assert neighbour_vote(np.array([[s]]), np.array([[0]]), float(s)).label[0] == 0


def test_centres_are_unit_means_of_their_members():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 6))
    labels = rng.integers(-1, 5, 50)
    ids, c = centres(X, labels)
    assert ids.tolist() == sorted(set(labels.tolist()) - {-1})
    for cid, ci in zip(ids, c):
        m = X[labels == cid].mean(axis=0)
        assert np.allclose(ci, m / np.linalg.norm(m))
    assert np.allclose(centre(X), X.mean(axis=0) / np.linalg.norm(X.mean(axis=0)))
    sims = similarity_to_centre(X, labels)
    assert np.isneginf(sims[labels < 0]).all()
    row = int(np.flatnonzero(labels == ids[0])[0])
    assert sims[row] == pytest.approx(X[row] @ c[0])
    none = centres(X, np.full(50, -1))
    assert len(none[0]) == 0 and none[1].shape == (0, 6)


def test_relabel_by_size_can_tie_by_label():  # ties by first seen: test_knn_graph
    labels = np.array([5, 2, 2, -1, 5, 7, 7, 7])
    assert relabel_by_size(labels, ties="label").tolist() == [2, 1, 1, -1, 2, 0, 0, 0]
    with pytest.raises(ValueError, match="ties"):
        relabel_by_size(labels, ties="size")


def test_separate_and_keep_compatible_honour_cannot_links():
    c = Constraints(cannot_link=[(0, 2), (3, 1)])
    D = separate(np.zeros((4, 4)), c)
    assert D[0, 2] == D[2, 0] == D[1, 3] == D[3, 1] == 2.0 and D.sum() == 8.0
    assert separate(np.zeros((2, 2)), None).sum() == 0
    forbidden = cannot_link_map(c)
    assert keep_compatible([2, 0, 1, 3], forbidden) == [2, 1]  # 0 and 3 are cannot-linked with rows kept before them
    assert keep_compatible([0, 1], {}) == [0, 1]


def test_a_bad_clusterer_parameter_is_the_users_and_a_value_error():
    assert issubclass(ParameterError, ConfigError) and issubclass(ParameterError, ValueError)


def test_average_linkage_on_a_precomputed_matrix_keeps_cannot_linked_rows_apart():
    from idcluster.clustering.clusterers import average_linkage

    D = np.full((4, 4), 0.05)
    D[3, :3] = D[:3, 3] = 0.9
    np.fill_diagonal(D, 0.0)
    assert len(set(average_linkage(D.copy(), 0.2).tolist())) == 2  # {0, 1, 2}, {3}
    labels = average_linkage(D.copy(), 0.2, Constraints(cannot_link=[(0, 1)]))
    assert labels[0] != labels[1] and len(set(labels.tolist())) == 3
    assert average_linkage(np.zeros((1, 1)), 0.2).tolist() == [0]


def test_what_runs_describes_any_estimator():
    from sklearn.cluster import DBSCAN as SkDBSCAN

    from idcluster.clustering.base import what_runs

    assert what_runs(SkDBSCAN(eps=0.3), 10) == {"estimator": "sklearn.cluster._dbscan.DBSCAN",
                                               "params": SkDBSCAN(eps=0.3).get_params(), "faces": 10}

    class OnlyFitPredict:
        def fit_predict(self, X):
            return np.zeros(len(X), dtype=int)

    assert what_runs(OnlyFitPredict(), 3)["params"] == {}
