"""Must-link / cannot-link constraints: the shared post-processing every clusterer applies."""

from __future__ import annotations

import numpy as np
import pytest

from idcluster.pipeline import stages as pipeline
from idcluster.workflows.cluster import make_spec
from idcluster.clustering.clusterers import HDBSCAN, Agglomerative, ChineseWhispers, DBSCAN
from idcluster.clustering.base import apply_constraints
from idcluster.clustering.constraints import Constraints, rows_by_content, union_groups

from tests.clustering.test_clusterers import blobs

ALL = [HDBSCAN(min_cluster_size=3), Agglomerative(distance_threshold=0.2, min_cluster_size=3),
       ChineseWhispers(distance_threshold=0.2, min_cluster_size=3), DBSCAN(eps=0.2, min_cluster_size=3)]


def test_key_ignores_order_and_union_adds_both():
    a = Constraints(must_link=[(3, 1, 2)], cannot_link=[(5, 4)])
    b = Constraints(must_link=[(2, 1, 3)], cannot_link=[(4, 5)])
    assert a.key() == b.key() != Constraints().key()
    both = a | Constraints(cannot_link=[(7, 8)])
    assert both.cannot_link == ((5, 4), (7, 8)) and both.must_link == ((3, 1, 2),)
    assert not Constraints() and both


def test_overlapping_must_link_groups_are_unioned():
    groups = union_groups([(0, 1), (1, 2), (5, 6)], 10)
    assert sorted(map(list, groups)) == [[0, 1, 2], [5, 6]]


@pytest.mark.parametrize("clusterer", ALL, ids=lambda c: type(c).__name__)
def test_must_link_joins_two_identities_and_cannot_link_splits_one(clusterer):
    X, y = blobs(n_ids=3, per_id=8)
    base = clusterer.fit_predict(X)
    assert len(set(base[y == 0])) == 1 and base[0] != base[8]
    # must-link every member of identities 0 and 1: one identity
    merged = clusterer.fit_predict(X, constraints=Constraints(must_link=[tuple(np.flatnonzero(y < 2))]))
    assert len(set(merged[y < 2])) == 1 and merged[0] >= 0 and merged[16] != merged[0]
    # cannot-link between rows 0 and 1 (same identity): never one label again
    split = clusterer.fit_predict(X, constraints=Constraints(cannot_link=[(0, 1)]))
    assert split[0] != split[1] or split[0] == -1


def test_cannot_link_separates_two_seed_groups_forced_together():
    X, y = blobs(n_ids=2, per_id=8)
    labels = np.zeros(16, dtype=np.int64)  # everything in one cluster
    c = Constraints(must_link=[(0, 1, 2), (8, 9)], cannot_link=[(0, 8)])
    out = apply_constraints(X, labels, c)
    assert len(set(out[[0, 1, 2]])) == 1 and len(set(out[[8, 9]])) == 1 and out[0] != out[8]
    assert out[8] >= 0  # the smaller group got its own identity, not noise


def test_cannot_link_pair_loses_the_member_farther_from_the_centre_unless_must_linked():
    X = np.array([[1.0, 0.0], [0.99, 0.14], [0.9, 0.43], [0.0, 1.0]])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = np.array([0, 0, 0, 1])
    assert apply_constraints(X, labels, Constraints(cannot_link=[(0, 2)])).tolist() == [0, 0, -1, 1]
    kept = apply_constraints(X, labels, Constraints(must_link=[(2,)], cannot_link=[(0, 2)]))
    assert kept.tolist() == [-1, 0, 0, 1]


def test_must_linked_pair_survives_min_cluster_size_and_noise_reassignment_respects_cannot_link():
    X, y = blobs(n_ids=2, per_id=8)
    clusterer = Agglomerative(distance_threshold=0.2, min_cluster_size=20, reassign_noise=0.5)
    labels = clusterer.fit_predict(X, constraints=Constraints(must_link=[(0, 1)]))
    assert labels[0] == labels[1] >= 0  # a user-confirmed pair outlives min_cluster_size=20
    c = Constraints(must_link=[tuple(range(8))], cannot_link=[(8, 0)])
    labels = Agglomerative(distance_threshold=0.001, min_cluster_size=3, reassign_noise=-1.0).fit_predict(X, constraints=c)
    assert labels[8] != labels[0]


def test_pipeline_passes_constraints_from_sources_on_real_faces(small_set, config):
    folder, truth = small_set
    cfg = config(folder, "clusterer=agglomerative", "clusterer.min_cluster_size=2")
    plain = pipeline.run(make_spec(cfg, "cluster", progress=False))
    by_name = {r.rel_path: r for r in plain.records}
    people = sorted(set(truth.values()))
    a = [n for n in sorted(truth) if truth[n] == people[0]]
    b = [n for n in sorted(truth) if truth[n] == people[1]]
    assert by_name[a[0]].label != by_name[b[0]].label

    def join_two_people(records):
        rows = rows_by_content(records)
        wanted = {by_name[n].sha256 for n in a + b}
        return Constraints(must_link=[tuple(r for (sha, k), r in rows.items() if sha in wanted)])

    spec = make_spec(cfg, "cluster", progress=False)
    spec.constraint_sources = [join_two_people]
    joined = pipeline.run(spec)
    labels = {r.rel_path: r.label for r in joined.records}
    assert len({labels[n] for n in a + b}) == 1 and labels[a[0]] >= 0
    assert joined.keys["cluster"] != plain.keys["cluster"]  # constraints enter the cache key
    assert joined.constraints and not plain.constraints
