"""kNN-graph clustering: same answers as the exact radius graph, approximate indexes, large-n plumbing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from idcluster.clustering.base import centres, enforce_cannot_link, reassign_noise, relabel_by_size, what_runs
from idcluster.clustering.clusterers import HDBSCAN, ChineseWhispers
from idcluster.clustering.graph import chinese_whispers
from idcluster.clustering.knn_graph import KNNGraph, list_centres, nearest_neighbours, neighbour_edges, similarity_graph
from idcluster.experiments.metrics import bcubed_prf


def identities(n_ids=300, per_id=6, dim=64, spread=0.025, seed=0):
    """Unit vectors around random identity centres: within-identity cosine distance ~0.04, between ~1."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_ids, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    X = np.repeat(c, per_id, axis=0) + rng.normal(0, spread, (n_ids * per_id, dim))
    return X / np.linalg.norm(X, axis=1, keepdims=True), np.repeat(np.arange(n_ids), per_id)


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_every_index_recovers_identities(index):
    X, y = identities()
    labels = KNNGraph(distance_threshold=0.2, index=index, k=10).fit_predict(X)
    assert bcubed_prf(y, labels)[2] >= 0.99


def test_exact_knn_matches_brute_force_neighbours():
    X, _ = identities(n_ids=50, per_id=4)
    sims, idx = nearest_neighbours(X, 5, "flat")
    S = X @ X.T
    assert np.allclose(sims, -np.sort(-S, axis=1)[:, :5], atol=1e-5)


def test_graph_keeps_only_edges_above_the_threshold_and_is_symmetric():
    X, _ = identities(n_ids=20, per_id=5)
    g = similarity_graph(*neighbour_edges(X, 8, 0.9, "flat"), len(X))
    assert (g != g.T).nnz == 0
    assert g.diagonal().sum() == 0
    assert (g.data >= 0.9).all()
    rows, cols = g.nonzero()
    assert np.allclose(g.data, np.einsum("ij,ij->i", X[rows], X[cols]), atol=1e-5)


def _edge_set(rows, cols):
    return set(zip(rows.tolist(), cols.tolist()))


def _brute_force_edges(X, k, min_similarity):
    """Each row's k most similar other rows at least min_similarity similar (ties: the smaller column)."""
    S = (X.astype(np.float32) @ X.astype(np.float32).T)
    np.fill_diagonal(S, -np.inf)
    out = set()
    for i, row in enumerate(S):
        order = np.lexsort((np.arange(len(row)), -row))
        out |= {(i, int(j)) for j in order[:k] if row[j] >= np.float32(min_similarity)}
    return out


@pytest.mark.parametrize("k, min_similarity", [(3, 0.9), (8, 0.95), (40, 0.0)])
def test_exact_edges_are_each_rows_k_most_similar_above_the_threshold(k, min_similarity):
    X, _ = identities(n_ids=30, per_id=6, spread=0.05)
    rows, cols, sims = neighbour_edges(X, k, min_similarity, "flat")
    assert _edge_set(rows, cols) == _brute_force_edges(X, k, min_similarity)
    assert np.allclose(sims, np.einsum("ij,ij->i", X[rows], X[cols]), atol=1e-5)


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_at_most_k_edges_per_face_when_everyone_looks_alike(index):
    """The search keeps k per face as it goes: memory stays n k when every pair is above the threshold."""
    rng = np.random.default_rng(0)
    X = 1.0 + rng.normal(0, 0.001, (3000, 16))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    rows, cols, _ = neighbour_edges(X, 5, 0.5, index, nprobe=4)
    assert (np.bincount(rows, minlength=len(X)) == 5).all() and (rows != cols).all()


def test_ivf_edges_are_faiss_ivf_search_edges():
    """One BLAS product per inverted list finds what faiss's IndexIVFFlat search over the same
    lists finds: each face's k most similar (above the threshold) among the nprobe probed lists."""
    import faiss

    X, _ = identities(n_ids=400, per_id=6, spread=0.06)
    X = np.ascontiguousarray(X, dtype=np.float32)
    k, min_similarity, nprobe = 10, 0.8, 3
    centres = list_centres(X, seed=0)
    quantizer = faiss.IndexFlatIP(X.shape[1])
    quantizer.add(centres)
    ivf = faiss.IndexIVFFlat(quantizer, X.shape[1], len(centres), faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    ivf.add(X)
    ivf.nprobe = nprobe
    sims, idx = ivf.search(X, k + 1)
    expected = {(i, int(j)) for i in range(len(X)) for s, j in zip(sims[i], idx[i])
                if j >= 0 and j != i and s >= np.float32(min_similarity)}
    rows, cols, _ = neighbour_edges(X, k, min_similarity, "ivf", nprobe=nprobe, seed=0)
    found = _edge_set(rows, cols)
    # faiss keeps k + 1 (the face itself among them), so a face that is not in its own
    # probed lists can get one extra neighbour there; ties at the k-th place may differ.
    assert len(found ^ expected) <= 0.001 * len(expected)
    assert len(found) > 3 * len(X)


def test_ivf_probing_every_list_is_exact():
    X, _ = identities(n_ids=200, per_id=6, spread=0.06)
    rows, cols, _ = neighbour_edges(X, 10, 0.8, "ivf", nprobe=10_000)
    assert _edge_set(rows, cols) == _brute_force_edges(X, 10, 0.8)


def test_mutual_graph_keeps_only_pairs_in_both_lists():
    X, _ = identities(n_ids=40, per_id=8, spread=0.06)
    rows, cols, sims = neighbour_edges(X, 3, 0.5, "flat")
    pairs = _edge_set(rows, cols)
    either = similarity_graph(rows, cols, sims, len(X))
    both = similarity_graph(rows, cols, sims, len(X), mutual=True)
    assert _edge_set(*both.nonzero()) == {(i, j) for i, j in pairs if (j, i) in pairs}
    assert _edge_set(*either.nonzero()) == pairs | {(j, i) for i, j in pairs}
    assert (both != both.T).nnz == 0 and both.nnz < either.nnz


def test_knn_graph_records_the_seconds_of_each_step():
    X, _ = identities(n_ids=50, per_id=4)
    est = KNNGraph(distance_threshold=0.2, k=10, index="ivf", exact_max_rows=10)
    est.fit_predict(X)
    assert set(est.timings_) == {"train_s", "assign_s", "search_s", "top_k_s", "graph_s", "partition_s"}


def _whispers_voting_every_node(graph, iterations=20, batches=8, seed=0):
    """graph.chinese_whispers before it skipped settled nodes: every node with a neighbour votes every round."""
    from idcluster.clustering.graph import _ranges
    from idcluster.clustering.vote import tally

    n = graph.shape[0]
    labels = np.arange(n)
    indptr, indices, data = graph.indptr, graph.indices, graph.data
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for batch in np.array_split(rng.permutation(n), max(1, batches)):
            lens = indptr[batch + 1] - indptr[batch]
            batch, lens = batch[lens > 0], lens[lens > 0]
            if not len(batch):
                continue
            entries = _ranges(indptr[batch], lens)
            local = np.repeat(np.arange(len(batch)), lens)
            new = tally(local, labels[indices[entries]], data[entries], len(batch)).label
            changed += int((labels[batch] != new).sum())
            labels[batch] = new
        if not changed:
            break
    return np.unique(labels, return_inverse=True)[1].ravel()


@pytest.mark.parametrize("seed", range(4))
def test_whispers_skipping_settled_nodes_gives_the_same_labels(seed):
    from scipy.sparse import random as sparse_random

    X, _ = identities(n_ids=150, per_id=8, spread=0.08, seed=seed)
    faces = similarity_graph(*neighbour_edges(X, 15, 0.6, "flat"), len(X))
    noisy = sparse_random(600, 600, density=0.01, random_state=seed, format="csr")  # many rounds to settle
    noisy = (noisy + noisy.T).tocsr()
    noisy.setdiag(0)
    noisy.eliminate_zeros()
    for g in (faces, noisy):
        for batches in (1, 8):
            assert (chinese_whispers(g, batches=batches, seed=seed)
                    == _whispers_voting_every_node(g, batches=batches, seed=seed)).all()


def _per_node_whispers(graph, iterations=20, seed=0):
    """Chinese Whispers as Biemann (and dlib) write it: one node at a time, in random order."""
    labels = np.arange(graph.shape[0])
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for i in rng.permutation(graph.shape[0]):
            lo, hi = graph.indptr[i], graph.indptr[i + 1]
            if lo == hi:
                continue
            votes: dict[int, float] = {}
            for j, w in zip(graph.indices[lo:hi], graph.data[lo:hi]):
                votes[labels[j]] = votes.get(labels[j], 0.0) + w
            best = max(votes, key=votes.get)
            if best != labels[i]:
                labels[i], changed = best, changed + 1
        if not changed:
            break
    return np.unique(labels, return_inverse=True)[1]


def test_vectorised_whispers_agrees_with_the_per_node_version():
    """Same graph (k large enough to hold every within-threshold pair): same partition quality,
    for the kNN graph and for the exact radius graph of clusterer=chinese_whispers."""
    from sklearn.neighbors import radius_neighbors_graph

    X, y = identities(n_ids=150, per_id=8, spread=0.05)
    graph = radius_neighbors_graph(X, radius=np.sqrt(2 * 0.3), mode="distance").tocsr()
    graph.data = 1.0 - graph.data**2 / 2.0
    reference = _per_node_whispers(graph)
    for ours in (KNNGraph(distance_threshold=0.3, k=40, index="flat").fit_predict(X),
                 ChineseWhispers(distance_threshold=0.3).fit_predict(X)):
        assert bcubed_prf(reference, ours)[2] >= 0.99
        assert bcubed_prf(y, ours)[2] == pytest.approx(bcubed_prf(y, reference)[2], abs=0.01)


def test_whispers_splits_two_cliques_joined_by_one_edge():
    from scipy.sparse import csr_matrix

    n = 10
    A = np.zeros((n, n))
    A[:5, :5] = A[5:, 5:] = 1.0
    np.fill_diagonal(A, 0)
    A[4, 5] = A[5, 4] = 1.0
    labels = chinese_whispers(csr_matrix(A))
    assert len(set(labels[:5])) == len(set(labels[5:])) == 1 and labels[0] != labels[9]


def test_cannot_link_and_noise_reassignment_apply():
    X, y = identities(n_ids=10, per_id=6)
    groups = np.arange(len(X))
    groups[1] = groups[0]
    labels = KNNGraph(distance_threshold=0.2, k=10).fit_predict(X, groups=groups)
    assert (labels[[0, 1]] >= 0).sum() == 1


def test_rejects_unknown_options():
    X, _ = identities(n_ids=5, per_id=3)
    with pytest.raises(ValueError, match="method must be one of"):
        KNNGraph(method="louvain").fit_predict(X)
    with pytest.raises(ValueError, match="index must be one of"):
        KNNGraph(index="annoy").fit_predict(X)


@pytest.mark.scale
def test_leiden_recovers_identities():
    pytest.importorskip("leidenalg")
    X, y = identities(n_ids=50)
    labels = KNNGraph(distance_threshold=0.2, k=10, method="leiden").fit_predict(X)
    assert bcubed_prf(y, labels)[2] >= 0.99


def test_hdbscan_switches_to_the_knn_graph_above_its_limit(caplog):
    X, y = identities(n_ids=40, per_id=5)
    with caplog.at_level(logging.INFO, logger="idcluster"):
        est = HDBSCAN(min_cluster_size=3, knn_graph_above=100, distance_threshold=0.2)
        labels = est.fit_predict(X)
    assert "knn_graph_above=100" in caplog.text
    assert bcubed_prf(y, labels)[2] >= 0.99
    # What ran is recorded: the kNN graph with this clusterer's threshold and post-processing.
    assert est.ran_["estimator"] == "idcluster.clustering.knn_graph.KNNGraph"
    assert est.ran_["instead_of"] == "idcluster.clustering.clusterers.HDBSCAN"
    assert est.ran_["params"]["distance_threshold"] == 0.2 and est.ran_["params"]["min_cluster_size"] == 3
    assert est.ran_ == what_runs(est, len(X))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="idcluster"):
        est = HDBSCAN(min_cluster_size=3, knn_graph_above=1000)
        est.fit_predict(X)
    assert "knn_graph" not in caplog.text and "KNNGraph" not in caplog.text
    assert est.ran_["estimator"] == "idcluster.clustering.clusterers.HDBSCAN" and "instead_of" not in est.ran_


@pytest.mark.parametrize("option", ["agglomerative", "hdbscan"])
def test_the_large_set_clusterer_is_explicit_config_and_recorded(option, caplog):
    """conf/clusterer/{agglomerative,hdbscan}.yaml name the large-set clusterer and its parameters
    (clusterer=knn_graph's, with this one's threshold and post-processing); fit records what ran."""
    from idcluster.config.compose import build, load_config

    cfg = load_config(["input_dir=x", f"clusterer={option}", "clusterer.min_cluster_size=3", "clusterer.knn_graph_above=100",
                       "clusterer.large_set.k=12", "embedder=facenet"])
    est = build(cfg, "clusterer")
    assert isinstance(est.large_set, KNNGraph)
    assert est.large_set.get_params()["k"] == 12 and est.large_set.distance_threshold == cfg.embedder.distance_threshold
    assert est.large_set.min_cluster_size == 3
    X, y = identities(n_ids=40, per_id=5)
    est.set_params(large_set__distance_threshold=0.2, **({"distance_threshold": 0.2} if option == "agglomerative" else {}))
    with caplog.at_level(logging.INFO, logger="idcluster"):
        labels = est.fit_predict(X)
    assert "200 faces > clusterer.knn_graph_above=100" in caplog.text and "KNNGraph" in caplog.text
    assert bcubed_prf(y, labels)[2] >= 0.99
    assert est.ran_["estimator"].endswith("KNNGraph") and est.ran_["params"]["k"] == 12 and est.ran_["faces"] == 200
    assert est.large_set.get_params()["k"] == 12 and not hasattr(est.large_set, "labels_")  # a clone ran
    assert what_runs(est, 100)["estimator"].endswith(type(est).__name__)


# ---------------------------------------------------------------- vectorised post-processing = the loops it replaced


def _loop_centres(Xn, labels):
    ids = np.unique(labels[labels >= 0])
    c = np.stack([Xn[labels == i].mean(axis=0) for i in ids])
    return ids, c / np.linalg.norm(c, axis=1, keepdims=True)


def _loop_cannot_link(Xn, labels, groups, keep=None):
    labels, groups = labels.copy(), np.asarray(groups)
    for cid, centre in zip(*_loop_centres(Xn, labels)):
        members = np.flatnonzero(labels == cid)
        sims = Xn[members] @ centre
        if keep is not None:
            sims = np.where(keep[members], np.inf, sims)
        seen = set()
        for m in members[np.argsort(-sims, kind="stable")]:
            if groups[m] in seen:
                labels[m] = -1
            seen.add(groups[m])
    return labels


def _loop_reassign(Xn, labels, min_similarity, groups, forbidden=None):
    labels = labels.copy()
    ids, centres = _loop_centres(Xn, labels)
    noise = np.flatnonzero(labels < 0)
    sims = Xn[noise] @ centres.T
    for row, n in enumerate(noise):
        taken = set(labels[(groups == groups[n]) & (labels >= 0)].tolist())
        taken |= {int(labels[m]) for m in (forbidden or {}).get(n, ()) if labels[m] >= 0}
        sims[row, np.isin(ids, list(taken))] = -np.inf
    best = sims.argmax(axis=1)
    ok = sims[np.arange(len(noise)), best] >= min_similarity
    labels[noise[ok]] = ids[best[ok]]
    return labels


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_post_processing_equals_the_per_cluster_loops(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 2000))
    X = rng.normal(size=(n, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = rng.integers(-1, int(rng.integers(2, 40)), n)
    groups = rng.integers(0, max(2, n // 2), n)
    ids, c = centres(X, labels)
    assert np.allclose(c, _loop_centres(X, labels)[1])
    kept = enforce_cannot_link(X, labels, groups)
    assert (kept == _loop_cannot_link(X, labels, groups)).all()
    assert (reassign_noise(X, kept, 0.2, groups) == _loop_reassign(X, kept, 0.2, groups)).all()
    keep = rng.random(n) < 0.05  # must-linked rows win their same-image contest
    kept = enforce_cannot_link(X, labels, groups, keep=keep)
    reference = _loop_cannot_link(X, labels, groups, keep=keep)
    assert (kept == reference).all()
    pairs = rng.integers(0, n, (20, 2))
    forbidden = {}
    for a, b in pairs:
        forbidden.setdefault(int(a), set()).add(int(b))
        forbidden.setdefault(int(b), set()).add(int(a))
    assert (reassign_noise(X, kept, 0.2, groups, forbidden=forbidden)
            == _loop_reassign(X, kept, 0.2, groups, forbidden)).all()


def test_relabel_by_size_orders_by_size_then_first_seen():
    assert relabel_by_size(np.array([5, 2, 2, -1, 5, 7, 7, 7])).tolist() == [1, 2, 2, -1, 1, 0, 0, 0]


@pytest.mark.slow
def test_bench_scale_quick_writes_json_and_a_table(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_scale.py"
    for args, key in ((["--quick"], "results"), (["--cache-entries", "200"], "cache")):
        out = tmp_path / key
        proc = subprocess.run([sys.executable, str(script), *args, "--out", str(out)], capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        data = json.loads(out.with_suffix(".json").read_text())
        assert data[key]
        assert out.with_suffix(".md").read_text().startswith("| ")
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert {r["clusterer"] for r in rows} == {"knn_graph", "chinese_whispers"}
    assert all(r["status"] == "ok" and r["bcubed_f1_truth"] > 0.9 for r in rows)
