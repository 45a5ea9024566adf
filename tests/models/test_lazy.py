"""The shared bases: every detector/embedder option has its Protocol's members; loaded models never travel."""

from __future__ import annotations

import copy
import pickle

import pytest
from hydra.utils import get_class

from idcluster.config.compose import group_options, load_config
from idcluster.detectors.base import Detector
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.embedders.base import Embedder
from idcluster.embedders.dlib_resnet import DlibEmbedder
from idcluster.models.lazy import LazyModel, rethreaded


def _members(protocol) -> set[str]:
    return {n for n in vars(protocol) if not n.startswith("_")} | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("group, protocol", [("detector", Detector), ("embedder", Embedder)])
def test_every_option_has_its_protocols_members(group, protocol):
    assert _members(protocol) >= {"model_id"}
    for option in group_options(group):
        cls = get_class(load_config(["input_dir=x", f"{group}={option}"])[group]._target_)
        missing = {m for m in _members(protocol) if not hasattr(cls, m)}
        assert not missing, f"{group}={option}: {cls.__name__} lacks {missing}"


def test_loaded_models_are_none_until_loaded_and_never_pickled_or_copied():
    det, emb = RetinaFaceDetector(), DlibEmbedder()
    assert det._session is None and (emb._predictor, emb._rec, emb._forward) == (None, None, None)
    det._session, emb._forward = object(), object()
    for clone in (pickle.loads(pickle.dumps(det)), copy.copy(det), det.with_threads(2)):
        assert clone._session is None and clone.model_id == det.model_id
    assert pickle.loads(pickle.dumps(emb))._forward is None and emb._forward is not None
    assert det.with_threads(2).threads == 2 and det.threads == 0


def test_rethreaded_copies_only_what_has_a_thread_setting():
    class Plain:
        threads = 0

    class NoThreads(LazyModel):
        _loaded = ("_model",)

    plain, none = Plain(), NoThreads()
    assert rethreaded(plain, 1).threads == 1 and plain.threads == 0
    assert rethreaded(none, 1) is none and not hasattr(none, "threads")
