"""Detector options beyond RetinaFace: OpenCV cascade, whole image, anime, MTCNN, the auto chain.

Real models on real faces (insightface's shipped photos, ../shared/eval where
present); MTCNN only where torch and facenet-pytorch are installed.
"""

from __future__ import annotations

import logging
import pickle
import sys

import numpy as np
import pytest

from idcluster.align import ARCFACE_112
from idcluster.demo_data import insightface_image
from idcluster.detectors.anime import AnimeFaceDetector, animeface_detect
from idcluster.detectors.cascade import CascadeDetector
from idcluster.detectors.chain import ChainDetector
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.detectors.whole_image import WholeImageDetector
from idcluster.errors import ConfigError, ModelError
from idcluster.images import load_image
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


def test_mtcnn_finds_the_six_people(group_photo, retina_faces):
    pytest.importorskip("facenet_pytorch", reason="needs pip install 'idcluster[torch]'")
    from idcluster.detectors.mtcnn import MTCNNDetector

    det = MTCNNDetector()
    faces = det.detect(group_photo)
    assert len(faces) == 6  # its two low-probability false positives (~0.86) fall under score_threshold 0.9
    for g in retina_faces:
        assert max(iou(g.box, f.box) for f in faces) > 0.5
    assert all(f.detector == "mtcnn" and f.score >= 0.9 and landmarks_inside(f) for f in faces)
    assert det.model_id.startswith("facenet-pytorch-mtcnn:")
    small = MTCNNDetector(max_size=640).detect(group_photo)  # boxes come back in original coordinates
    assert len(small) == 6 and all(max(iou(f.box, g.box) for g in small) > 0.6 for f in faces)
    assert pickle.loads(pickle.dumps(det)).detect(group_photo)[0].box == faces[0].box


def test_mtcnn_without_torch_is_one_clear_error(monkeypatch):
    from idcluster.detectors.mtcnn import MTCNNDetector

    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails as if not installed
    with pytest.raises(ModelError, match=r"detector=mtcnn needs facenet_pytorch: pip install 'idcluster\[torch\]'"):
        MTCNNDetector().detect(np.zeros((64, 64, 3), np.uint8))


def test_mtcnn_cuda_without_cuda_warns_and_runs_on_cpu(caplog):
    torch = pytest.importorskip("torch")
    pytest.importorskip("facenet_pytorch")
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from idcluster.detectors.mtcnn import MTCNNDetector
    from idcluster.runtime import _warn_once

    _warn_once.cache_clear()
    tom = load_image(insightface_image("Tom_Hanks_54745.png"))
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        faces = MTCNNDetector(device="cuda").detect(np.pad(tom, ((40, 40), (40, 40), (0, 0))))
    assert len(faces) == 1
    assert "device=cuda asked for, but torch sees no CUDA device: running on CPU" in caplog.text


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


def test_auto_config_builds_the_guides_chain(group_photo):
    from idcluster.config import build, load_config, params

    cfg = load_config(["input_dir=x", "detector=auto", "device=cuda", "detector.threads=3"])
    chain = build(cfg, "detector")
    assert chain.names == ["retinaface", "mtcnn", "opencv"]
    assert [type(d).__name__ for d in chain.detectors] == ["RetinaFaceDetector", "MTCNNDetector", "CascadeDetector"]
    assert chain.detectors[0].device == "cuda" and chain.detectors[1].threads == 3
    chain.threads = 1  # what the pipeline does for worker processes reaches every member
    assert chain.detectors[0].threads == 1 and chain.detectors[1].threads == 1
    p = params(cfg, "detector")
    assert "device" not in str(p) and "threads" not in str(p)  # runtime keys stay out of cache keys
    assert params(load_config(["input_dir=x", "detector=auto", "detector.detectors.2.min_neighbors=8"]), "detector") != p
    faces = build(load_config(["input_dir=x", "detector=auto"]), "detector").detect(group_photo)
    assert len(faces) == 6 and {f.detector for f in faces} == {"retinaface"}


def test_auto_falls_back_on_an_image_retinaface_misses():
    """A face RetinaFace misses at its default threshold (a strongly blurred, dark face): the chain moves on."""
    pytest.importorskip("facenet_pytorch", reason="needs pip install 'idcluster[torch]'")
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


def test_one_cv2_and_one_onnxruntime_distribution():
    """Two distributions that provide the same module overwrite each other's files (README, Decisions)."""
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
    cv2_dists = names & {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
    assert cv2_dists == {"opencv-python"}, cv2_dists
    assert len(names & {"onnxruntime", "onnxruntime-gpu"}) == 1
