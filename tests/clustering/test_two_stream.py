"""clustering/two_stream.py: which faces are evidence, and the unit-level clustering of the instance stream."""

from __future__ import annotations

import numpy as np
import pytest

from idcluster.clustering import two_stream
from idcluster.clustering.constraints import Constraints
from idcluster.clustering.two_stream import (PairThresholds, cluster_units, face_in_domain, neighbour_average,
                                             unit_distances, unit_sums)


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def on_sphere(rng, centre, n, distance):
    """n unit vectors at about `distance` (cosine) from the unit `centre`."""
    noise = unit(rng.normal(size=(n, len(centre))))
    noise -= (noise @ centre)[:, None] * centre  # orthogonal to the centre
    noise = unit(noise)
    c = 1.0 - distance
    return unit(c * centre + np.sqrt(1 - c * c) * noise)


def human_like(rng, people=12, each=6, dim=128):
    """Identities whose faces are close (cosine distance ~0.02) and far from other identities (~0.4)."""
    centres = unit(rng.normal(size=(people, dim)))
    return np.concatenate([on_sphere(rng, c, each, 0.02) for c in centres])


def collapsed(rng, n=60, dim=128):
    """Every pair at distance ~0.08: inside the band where a calibrated face model sees neither
    one person nor two (a human-face model on drawn faces)."""
    return on_sphere(rng, unit(rng.normal(size=(1, dim)))[0], n, 0.04)


def test_faces_that_separate_are_in_domain_collapsed_ones_are_not():
    rng = np.random.default_rng(0)
    band = (0.06, 0.10)
    assert face_in_domain(human_like(rng), band, 0.35, 10).all()
    X = collapsed(rng)
    D = 1 - X @ X.T
    assert np.mean((D[np.triu_indices(len(X), 1)] >= 0.06) & (D[np.triu_indices(len(X), 1)] < 0.10)) > 0.8
    assert not face_in_domain(X, band, 0.35, 10).any()
    # One person's many photos (all close): in domain, a folder of one person is not a collapse.
    one = on_sphere(rng, unit(rng.normal(size=(1, 128)))[0], 40, 0.015)
    assert face_in_domain(one, band, 0.35, 10).all()


def test_look_alike_people_in_a_small_run_keep_their_faces():
    """Two people, one photo of the first close to the second (every distance to the second inside the
    band: its share 8/15) is a look-alike, not a collapse: its in-band neighbours are faces the
    embedder places clearly, so every face counts."""
    rng = np.random.default_rng(2)
    a = unit(rng.normal(size=(1, 128)))[0]
    b = on_sphere(rng, a, 1, 0.3)[0]
    X = np.concatenate([on_sphere(rng, a, 7, 0.01), on_sphere(rng, b, 8, 0.01), on_sphere(rng, b, 1, 0.07)])
    D = 1 - X @ X.T
    share = ((D[-1, 7:15] >= 0.06) & (D[-1, 7:15] < 0.10)).mean()
    assert share == 1.0  # that face alone looks out of domain
    assert face_in_domain(X, (0.06, 0.10), 0.35, 10).all()


def test_face_domain_needs_a_band_and_enough_faces():
    rng = np.random.default_rng(1)
    X = collapsed(rng, n=60)
    assert face_in_domain(X, None, 0.35, 10).all()  # no calibration for this embedder: every face counts
    assert face_in_domain(X[:9], (0.06, 0.10), 0.35, 10).all()  # too few to judge


def test_mixed_run_keeps_the_human_faces(monkeypatch):
    """Per face, not per run: photos of people and drawn faces in one folder."""
    rng = np.random.default_rng(2)
    people, drawn = human_like(rng, people=10, each=5), collapsed(rng, n=40)
    X = np.concatenate([people, drawn])
    ok = face_in_domain(X, (0.06, 0.10), 0.35, 10)
    assert ok[:50].all() and not ok[50:].any()
    # On large runs each face is compared with a fixed sample: the same decisions here.
    monkeypatch.setattr(two_stream, "SHARE_SAMPLE", 30)
    sampled = face_in_domain(X, (0.06, 0.10), 0.35, 10)
    assert sampled[:50].all() and not sampled[50:].any()


def test_unit_distance_is_the_mean_over_pairs_of_rows():
    rng = np.random.default_rng(3)
    Z = unit(rng.normal(size=(7, 5)))
    members = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5, 6])]
    S, n = unit_sums(Z, members)
    D = unit_distances(S, n)
    for a, ma in enumerate(members):
        for b, mb in enumerate(members):
            assert D[a, b] == pytest.approx(np.mean(1 - Z[ma] @ Z[mb].T), abs=1e-12)


def test_pair_thresholds_by_kind():
    t = PairThresholds(colour=0.5, grey=0.7, face=0.3)
    grey = np.array([True, True, False, False])
    face = np.array([False, False, True, True])
    T = t.matrix(grey, face)
    assert T[0, 1] == 0.7 and T[0, 2] == 0.3 and T[2, 3] == 0.3
    assert t.matrix(grey, face, open_face=np.array([False, False, True, False]))[0, 2] == 0.5  # vouched for: colour
    assert PairThresholds(0.5).matrix(grey, face)[0, 2] == 0  # no calibrated bar: no joins into faces
    assert t.pair(True, True, False, False) == 0.7 and t.pair(False, False, True, False) == 0.3
    assert PairThresholds(0.5).pair(False, False, True, False) == 0


def groups_of(rng, centres, each, spread=0.05):
    return np.concatenate([on_sphere(rng, c, each, spread) for c in centres])


def test_faces_decide_face_pairs_instances_the_rest():
    """Two face units that look identical stay apart; images without a face join the face unit
    they resemble, under the face bar; the rest cluster among themselves."""
    rng = np.random.default_rng(4)
    c = unit(rng.normal(size=(3, 16)))
    Z = np.concatenate([groups_of(rng, c[:1], 4), groups_of(rng, c[:1], 4), groups_of(rng, c[1:2], 3), groups_of(rng, c[2:], 3)])
    members = [np.arange(0, 4), np.arange(4, 8)] + [np.array([i]) for i in range(8, 14)]
    face = np.array([True, True] + [False] * 6)
    groups = cluster_units(Z, members, face, np.zeros(8, bool), PairThresholds(0.3, face=0.3))
    assert groups[0] != groups[1]  # face against face
    assert len(set(groups[2:5])) == 1 and len(set(groups[5:8])) == 1 and groups[2] != groups[5]
    assert groups[2] not in (groups[0], groups[1])
    # Faceless look-alikes of the first face unit join one of the two face units, never both.
    Z2 = np.concatenate([Z, groups_of(rng, c[:1], 2)])
    members2 = members + [np.array([14]), np.array([15])]
    g = cluster_units(Z2, members2, np.append(face, [False, False]), np.zeros(10, bool), PairThresholds(0.3, face=0.3))
    assert g[8] == g[9] and g[8] in (g[0], g[1])
    # A bar too tight (or none): they stay off the face units.
    g = cluster_units(Z2, members2, np.append(face, [False, False]), np.zeros(10, bool), PairThresholds(0.3, face=0.001))
    assert g[8] not in (g[0], g[1])
    g = cluster_units(Z2, members2, np.append(face, [False, False]), np.zeros(10, bool), PairThresholds(0.3))
    assert g[8] not in (g[0], g[1])


def test_grey_pairs_take_their_own_threshold_and_cannot_links_hold():
    rng = np.random.default_rng(5)
    c = unit(rng.normal(size=(1, 16)))
    Z = groups_of(rng, c, 4, spread=0.2)  # pairs 0.15-0.6 apart (0.36 on average)
    members = [np.array([i]) for i in range(4)]
    none = np.zeros(4, bool)
    assert len(set(cluster_units(Z, members, none, none, PairThresholds(0.1)).tolist())) == 4
    grey = np.ones(4, bool)
    assert len(set(cluster_units(Z, members, none, grey, PairThresholds(0.1, grey=0.7)).tolist())) == 1
    g = cluster_units(Z, members, none, grey, PairThresholds(0.1, grey=0.7), cannot=Constraints(cannot_link=((0, 1),)))
    assert g[0] != g[1]


def test_large_path_agrees_with_average_linkage_on_clear_groups():
    rng = np.random.default_rng(6)
    c = unit(rng.normal(size=(5, 32)))
    Z = groups_of(rng, c, 8, spread=0.05)
    members = [np.array([i]) for i in range(len(Z))]
    face = np.zeros(len(Z), bool)
    face[[0, 8]] = True  # the first two groups each hold a face unit
    exact = cluster_units(Z, members, face, np.zeros(len(Z), bool), PairThresholds(0.3, face=0.3))
    graph = cluster_units(Z, members, face, np.zeros(len(Z), bool), PairThresholds(0.3, face=0.3),
                          exact_max_units=0, k=10)
    same = lambda g: g[:, None] == g[None, :]  # noqa: E731
    assert (same(exact) == same(graph)).all()
    assert len(set(exact.tolist())) == 5


def test_neighbour_average_pulls_an_identity_together_and_spares_small_runs():
    rng = np.random.default_rng(7)
    c = unit(rng.normal(size=(4, 32)))
    Z = groups_of(rng, c, 10, spread=0.3)
    A = neighbour_average(Z, 4)
    within = lambda X: np.mean([np.mean(1 - X[g * 10:(g + 1) * 10] @ X[g * 10:(g + 1) * 10].T) for g in range(4)])  # noqa: E731
    assert within(A) < within(Z) * 0.8
    assert np.allclose(np.linalg.norm(A, axis=1), 1.0)
    assert np.array_equal(neighbour_average(Z[:15], 4), Z[:15])  # under 20 rows: untouched
