"""The torch stand-ins of the GPU paths, run on the CPU (this machine has no GPU): they must
give what onnxruntime gives. dlib's ResNet as a torch module: tests/models/test_dlib_convert.py."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from idcluster.models import runtime
from idcluster.experiments.demo_data import insightface_image
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.embedders.dlib_resnet import DlibEmbedder
from idcluster.inputs.images import load_image

_skip = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnx2torch") is None,
    reason="torch + onnx2torch (the torch extra) not installed")


def needs_onnx2torch(test):
    return pytest.mark.torch(_skip(test))


@needs_onnx2torch
def test_retinaface_through_torch_equals_onnxruntime():
    from retinaface.weights import WEIGHTS

    image = load_image(insightface_image("t1.jpg"))
    det = RetinaFaceDetector(threads=1)
    ref = det.detect(image)
    det._session = runtime.TorchOnnxSession(WEIGHTS, device="cpu")
    out = det.detect(image)
    assert len(out) == len(ref) == 6
    assert max(abs(a - b) for f, g in zip(ref, out) for a, b in zip(f.box, g.box)) < 0.01  # px


def test_cuda_without_a_gpu_is_one_warning_and_a_cpu_run(caplog):
    if runtime.onnx_has_cuda() or runtime.torch_has_cuda():
        pytest.skip("a GPU is present")
    runtime._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        emb = DlibEmbedder(device="cuda", threads=1)
        assert emb.runs_on() == "onnxruntime CPU"
        emb.forward()
        RetinaFaceDetector(device="cuda")._get_session()
    assert sum("device=cuda asked for" in r.message for r in caplog.records) == 1
