"""reduce_and_cluster: what the user caused is one IdclusterError line; a bug stays a bug."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import FunctionTransformer

from idcluster.cache.store import StageCache
from idcluster.clustering import base
from idcluster.clustering.clusterers import Agglomerative, ChineseWhispers
from idcluster.errors import ConfigError, IdclusterError, InputError
from idcluster.pipeline.stages import Result, Spec, reduce_and_cluster
from tests.clustering.test_clusterers import blobs


def _run(tmp_path, clusterer, reducer=None, n_ids=3, per_id=5):
    X, _ = blobs(n_ids=n_ids, per_id=per_id)
    spec = Spec(input_dir=tmp_path, cache_dir=tmp_path / "cache", detector=None,
                reducer=reducer or FunctionTransformer(), clusterer=clusterer,
                params={"reducer": {"r": repr(reducer)}, "clusterer": {"c": repr(clusterer)}})
    result = Result(records=[], keys={"embeddings": "test"})
    labels, _ = reduce_and_cluster(spec, X.astype(np.float32), StageCache(spec.cache_dir), result)
    return labels, result


def test_a_numpy_error_inside_post_processing_is_a_bug_not_an_input_error(tmp_path, monkeypatch):
    def broken(Xn, labels, groups, keep=None):
        return labels + np.zeros(len(labels) + 1)  # a shape bug

    monkeypatch.setattr(base, "enforce_cannot_link", broken)
    with pytest.raises(ValueError, match="could not be broadcast") as info:
        _run(tmp_path, Agglomerative(distance_threshold=0.2))
    assert not isinstance(info.value, IdclusterError)


def test_a_parameter_scikit_learn_refuses_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^clusterer: The 'linkage' parameter of AgglomerativeClustering") as info:
        _run(tmp_path, Agglomerative(distance_threshold=0.2, linkage="median"))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^reducer: The 'n_components' parameter of PCA"):
        _run(tmp_path, Agglomerative(distance_threshold=0.2), reducer=PCA(n_components=-3))


def test_our_own_clusterers_refuse_bad_options_as_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="method must be 'whispers' or 'components'"):
        _run(tmp_path, ChineseWhispers(method="louvain"))


def test_too_few_faces_for_the_reducer_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"reducer.n_components=32 needs at least 34 faces, found 15: use reducer=none"):
        _run(tmp_path, Agglomerative(distance_threshold=0.2), reducer=PCA(n_components=32))
    with pytest.raises(ConfigError, match="reducer.n_components=64 is more than the embeddings' 32 dimensions"):
        _run(tmp_path, Agglomerative(distance_threshold=0.2), reducer=PCA(n_components=64), n_ids=10, per_id=10)
    labels, _ = _run(tmp_path, Agglomerative(distance_threshold=0.2), reducer=PCA(n_components=8))
    assert len(set(labels.tolist()) - {-1}) == 3


def test_the_result_records_what_ran_also_from_the_cache(tmp_path):
    clusterer = Agglomerative(distance_threshold=0.2, knn_graph_above=10)
    labels, result = _run(tmp_path, clusterer)
    assert len(set(labels.tolist()) - {-1}) == 3
    assert result.clusterer_ran["estimator"] == "idcluster.clustering.knn_graph.KNNGraph"
    assert result.clusterer_ran == clusterer.ran_ and result.computed["cluster"] == 1
    again, cached = _run(tmp_path, Agglomerative(distance_threshold=0.2, knn_graph_above=10))
    assert cached.computed["cluster"] == 0 and cached.clusterer_ran == result.clusterer_ran
    assert (again == labels).all()
