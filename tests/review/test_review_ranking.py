"""Merge suggestions and member order on the clusterer's own scale, on real LFW photos."""

from __future__ import annotations

from collections import Counter

import numpy as np
from starlette.testclient import TestClient

from idcluster.evidence import decisions as D
from idcluster.review.ranking import Ranking, recorded_threshold
from idcluster.review.server import create_app
from idcluster.review.store import ReviewStore

H = {"X-Review-Token": "t"}


def person_of(store: ReviewStore) -> dict[str, str]:
    return {k: store.images[i]["rel_path"].split("/")[0] for k, (i, _) in store.faces.items()}


def majority(store: ReviewStore) -> dict[int, str]:
    person = person_of(store)
    return {i: Counter(person[k] for k in store.state.members(i)).most_common(1)[0][0] for i in store.state.live_ids()}


def test_no_suggestions_on_a_correct_clustering(lfw_copy):
    """12 correctly separated people (the old centre-cosine criterion suggested ~18 pairs here, all
    false, since dlib centres of any two people are ~0.93 similar): at most a few, and none false."""
    store = ReviewStore(lfw_copy("correct"))
    owner = majority(store)
    assert len(set(owner.values())) == len(owner) == 12  # the clustering is correct
    suggestions = store.suggestions()
    assert len(suggestions) <= 2
    assert all(owner[s["a"]] == owner[s["b"]] for s in suggestions)
    # what the old criterion saw: every pair of centres within 1.5x the threshold of each other
    ids = sorted(store.state.live_ids())
    C = np.stack([store.centre(i) for i in ids])
    sims = (C @ C.T)[np.triu_indices(len(ids), 1)]
    assert (sims >= 1 - 1.5 * store.ranking.threshold).sum() >= 10


def test_over_split_clustering_gets_its_splits_suggested(lfw_copy):
    """The same people clustered at a stricter threshold than the calibrated one: most pairs of
    identities of one person are suggested, nearest first, and the suggestions are right."""
    store = ReviewStore(lfw_copy("over_split"))
    owner = majority(store)
    per_person = Counter(owner.values())
    true_pairs = sum(n * (n - 1) // 2 for n in per_person.values())
    assert len(owner) >= 20 and true_pairs >= 10  # really over-split
    suggestions = store.suggestions(limit=1000)
    hits = [owner[s["a"]] == owner[s["b"]] for s in suggestions]
    assert sum(hits) / true_pairs >= 0.8  # recall
    assert sum(hits) / len(hits) >= 0.8  # precision
    assert all(hits[:5])  # what the page shows first
    distances = [s["distance"] for s in suggestions]
    assert distances == sorted(distances) and distances[-1] <= 1.0
    for s in suggestions:  # member-level evidence comes with each
        assert 0 <= s["pairs_within"] <= 1 and 0 < s["a_matched"] <= 1 and 0 < s["b_matched"] <= 1


def test_suggestions_leave_out_hidden_reviewed_and_dismissed(lfw_copy):
    store = ReviewStore(lfw_copy("over_split"))
    first = store.suggestions()[0]
    store.act({"op": "dismiss", "a": first["a"], "b": first["b"]})
    assert (first["a"], first["b"]) not in {(s["a"], s["b"]) for s in store.suggestions()}
    second = store.suggestions()[0]
    store.act({"op": "hide", "id": second["a"]})
    assert second["a"] not in {i for s in store.suggestions() for i in (s["a"], s["b"])}
    third = store.suggestions()[0]
    store.act({"op": "rename", "id": third["a"], "name": "A"})
    store.act({"op": "rename", "id": third["b"], "name": "B"})  # both reviewed: the user keeps them apart
    assert (third["a"], third["b"]) not in {(s["a"], s["b"]) for s in store.suggestions()}


def test_second_person_of_a_merged_identity_sorts_first(lfw_copy):
    """Adrien Brody (10 photos) and Hugh Grant (6) clustered into one identity: doubtful first lists
    Hugh Grant's 6 faces, flagged (farther than the threshold from the identity's core); Adrien
    Brody's faces are within it."""
    store = ReviewStore(lfw_copy("merged"))
    person = person_of(store)
    (ident,) = store.state.live_ids()
    assert Counter(person[k] for k in store.state.members(ident)) == {"Adrien_Brody": 10, "Hugh_Grant": 6}
    with TestClient(create_app(store, token="t"), base_url="http://127.0.0.1") as c:
        page = c.get(f"/api/identity/{ident}", headers=H).json()
    members = page["members"]
    assert [person[m["face"]] for m in members[:6]] == ["Hugh_Grant"] * 6
    assert all(m["doubtful"] and m["distance"] > 1 for m in members[:6])
    assert not any(m["doubtful"] for m in members[6:]) and all(m["distance"] < 1 for m in members[6:])
    distances = [m["distance"] for m in members]
    assert distances == sorted(distances, reverse=True)
    # the old score (cosine to the centre, doubtful under 0.5) flagged none of them
    centre = store.centre(ident)
    assert min(float(store.ranking.X[store.ranking.row[m["face"]]] @ centre) for m in members) > 0.5


def test_member_order_typical_and_by_name(lfw_copy):
    store = ReviewStore(lfw_copy("merged"))
    (ident,) = store.state.live_ids()
    with TestClient(create_app(store, token="t"), base_url="http://127.0.0.1") as c:
        doubtful = [m["face"] for m in c.get(f"/api/identity/{ident}", headers=H).json()["members"]]
        typical = [m["face"] for m in c.get(f"/api/identity/{ident}?sort=typical", headers=H).json()["members"]]
        by_name = c.get(f"/api/identity/{ident}?sort=name", headers=H).json()["members"]
    assert typical == doubtful[::-1]
    assert [m["rel_path"] for m in by_name] == sorted(m["rel_path"] for m in by_name)


def test_threshold_is_the_recorded_calibrated_one(lfw_review):
    from idcluster.export.report import read_report

    report = read_report(lfw_review["over_split"])
    assert report["config"]["clusterer"]["distance_threshold"] == 0.035
    assert recorded_threshold(report) == report["config"]["embedder"]["distance_threshold"] == 0.07
    assert recorded_threshold({"config": {"clusterer": {"eps": 0.2}}}) == 0.2
    assert recorded_threshold({"config": {}}) is None


def test_without_vectors_members_keep_probability_order_and_no_suggestions(lfw_copy, tmp_path):
    store = ReviewStore(lfw_copy("over_split"), cache_dir=tmp_path / "empty-cache")
    assert store.suggestions() == []
    ident = sorted(store.state.live_ids())[0]
    dist = store.member_distances(ident)
    assert set(dist) == set(store.state.members(ident)) and all(v is not None for v in dist.values())


def test_ranking_on_a_state_it_was_not_built_from(lfw_review):
    """Ranking works on any partition of the run's faces (scripts/bench_suggestions.py scores the truth)."""
    from idcluster.export.report import read_report
    from idcluster.review.store import recorded_cache_dir

    report = read_report(lfw_review["correct"])
    ranking = Ranking(report, recorded_cache_dir(report))
    keys = ranking.keys
    one = D.State(assign={k: 0 for k in keys}, identities={}, next_id=1)
    assert ranking.suggestions(one, []) == []
    person = {D.face_key(img["sha256"], img["face_index"]): img["rel_path"].split("/")[0]
              for img in report["images"] if img.get("face_index") is not None}
    adrien = [k for k in keys if person[k] == "Adrien_Brody"]
    halves = D.State(assign={k: (i % 2 if k in adrien else D.NOISE) for i, k in enumerate(keys)}, identities={}, next_id=2)
    (pair,) = ranking.suggestions(halves, [])  # one person in two identities: joined
    assert {pair["a"], pair["b"]} == {0, 1} and pair["distance"] < 1
    mixed = D.State(assign={k: i % 2 for i, k in enumerate(keys)}, identities={}, next_id=2)
    assert ranking.suggestions(mixed, []) == []  # two halves of 12 people: on average farther than the threshold
