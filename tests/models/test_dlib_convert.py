"""dlib's face ResNet read from its .dat and run in onnxruntime (torch where installed),
checked against dlib's own forward pass on real faces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from idcluster.models import dlib_convert as dlib_dnn
from idcluster.clustering.clusterers import ChineseWhispers
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.embedders.dlib_resnet import DlibEmbedder
from idcluster.errors import ModelError
from idcluster.inputs.images import load_image
from idcluster.models.weights import file_sha256

# Max abs difference allowed between dlib's and our 128-d descriptors (raw, before L2
# normalisation; their norms are ~1.4). Measured: 3e-7 on the demo faces and LFW.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def embedder():
    return DlibEmbedder(threads=1)


@pytest.fixture(scope="module")
def net(embedder):
    return dlib_dnn.read_net(embedder._rec_path)


def chips_of(paths, embedder, limit):
    det = RetinaFaceDetector(threads=1)
    chips = []
    for p in paths:
        image = load_image(p)
        faces = det.detect(image)
        if faces:
            chips.append(embedder.align(image, faces[0]))
        if len(chips) == limit:
            break
    return np.stack(chips)


def test_reads_the_resnet_of_the_dat(net):
    kinds = [l.kind for l in net.layers]
    assert net.size == 150 and np.allclose(net.mean, [122.782, 117.001, 104.298], atol=1e-3)
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14 and kinds[-2:] == ["avg_pool", "fc"]
    shapes = dlib_dnn.shapes(net)
    assert shapes[0] == (32, 72, 72) and shapes[-2] == (256, 1, 1) and shapes[-1] == (128, 1, 1)
    # the residual_down blocks grow the channels through add_prev's zero padding
    assert [s[0] for l, s in zip(net.layers, shapes) if l.kind == "add_prev"][-1] == 256


def test_equals_dlib_on_real_faces(demo_set, embedder):
    folder, truth = demo_set
    chips = chips_of(sorted(folder / n for n in truth)[::4], embedder, 14)
    ours = embedder.forward()(chips)
    theirs = np.asarray(embedder._dlib_net().compute_face_descriptor(list(chips)), np.float32)
    assert np.abs(ours - theirs).max() < TOLERANCE
    assert (np.linalg.norm(theirs, axis=1) > 0.5).all()  # real descriptors, not zeros


@pytest.mark.slow
def test_equals_dlib_on_lfw_and_clusters_the_same(eval_root, embedder):
    paths = sorted((eval_root / "lfw_150px_40ids").glob("[!_]*/*.jpg"))[::3]
    chips = chips_of(paths, embedder, 80)
    ours = DlibEmbedder(threads=1).embed(list(chips))
    theirs = DlibEmbedder(backend="dlib").embed(list(chips))
    assert np.abs(ours - theirs).max() < TOLERANCE
    cw = dict(distance_threshold=0.07, random_state=0)
    assert (ChineseWhispers(**cw).fit_predict(ours) == ChineseWhispers(**cw).fit_predict(theirs)).all()


def test_batched_equals_one_at_a_time(demo_set, embedder):
    folder, truth = demo_set
    chips = list(chips_of(sorted(folder / n for n in truth)[1::7], embedder, 6))
    one = np.concatenate([embedder.embed([c]) for c in chips])
    assert np.abs(embedder.embed(chips) - one).max() < 1e-5


def test_flip_averages_the_mirror(demo_set):
    folder, truth = demo_set
    emb = DlibEmbedder(flip=True, threads=1)
    chip = chips_of([folder / sorted(truth)[0]], emb, 1)[0]
    a, b = emb.embed([chip]), emb.embed([chip[:, ::-1]])
    assert np.abs(a - b).max() < 1e-5  # a face and its mirror get one embedding
    assert np.abs(a - DlibEmbedder(threads=1).embed([chip])).max() > 1e-3


def test_conversion_is_cached_by_the_dat_hash(tmp_path, monkeypatch, embedder):
    monkeypatch.setenv("IDCLUSTER_CACHE", str(tmp_path / "c"))
    path = dlib_dnn.converted_onnx(embedder._rec_path)
    assert path.parent == tmp_path / "c" / "dlib-onnx" and file_sha256(Path(embedder._rec_path)) in path.name
    monkeypatch.setattr(dlib_dnn, "to_onnx", lambda net: pytest.fail("converted twice"))
    assert dlib_dnn.converted_onnx(embedder._rec_path) == path


def test_a_file_that_is_not_the_network_is_one_error(tmp_path):
    bad = tmp_path / "x.dat"
    bad.write_bytes(b"\x01\x01\x05hello")
    with pytest.raises(ModelError, match="not a dlib face-recognition network"):
        dlib_dnn.read_net(bad)


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_torch_module_equals_onnx(net, demo_set, embedder):
    import torch

    folder, truth = demo_set
    chips = chips_of(sorted(folder / n for n in truth)[2::9], embedder, 4)
    with torch.inference_mode():
        out = dlib_dnn.to_torch(net)(torch.from_numpy(chips)).numpy()
    assert np.abs(out - embedder.forward()(chips)).max() < TOLERANCE
