"""embedders/fused.py (instance=fused): [appearance | MobileNetV2] per image, the run's centred, weighted space."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from idcluster.config.compose import build, load_config
from idcluster.embedders.appearance import AppearanceEmbedder
from idcluster.embedders.fused import FusedEmbedder
from idcluster.embedders.mobilenet import MobileNetEmbedder
from idcluster.errors import ConfigError


@pytest.fixture(scope="module")
def fused():
    return FusedEmbedder(threads=1)


def test_per_image_vector_is_the_two_unit_blocks_side_by_side(fused, small_set):
    folder, truth = small_set
    names = sorted(truth)[:4]
    V = fused.embed_instances([fused.load(folder / n) for n in names])
    a = AppearanceEmbedder().dim
    assert V.shape == (4, a + 320) and V.dtype == np.float32 and fused.dim == V.shape[1]
    assert np.allclose(np.linalg.norm(V[:, :a], axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(V[:, a:], axis=1), 1, atol=1e-5)
    # The blocks are exactly what the two models give on their own.
    mn = MobileNetEmbedder(threads=1)
    assert np.allclose(V[:, a:], mn.embed([mn.load(folder / n) for n in names]), atol=1e-5)
    app = AppearanceEmbedder()
    assert np.allclose(V[:, :a], app.embed_instances([app.load(folder / n) for n in names]), atol=1e-6)


def test_run_space_centres_weights_and_is_unit(fused, small_set):
    folder, truth = small_set
    V = fused.embed_instances([fused.load(folder / n) for n in sorted(truth)])
    Z = fused.run_space(V)
    a = fused.split
    assert np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-9)
    assert np.allclose(np.linalg.norm(Z[:, :a], axis=1) ** 2, 0.3, atol=1e-9)  # sqrt(appearance_weight)
    # Centred: the run's mean block is gone before re-normalising.
    centred = V[:, a:] - V[:, a:].mean(axis=0)
    assert np.allclose(Z[:, a:], np.sqrt(0.7) * centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-6)
    # Centred on the reference rows where given (the images the stream places).
    ref = np.arange(len(V)) % 2 == 0
    on_ref = V[:, a:] - V[ref, a:].mean(axis=0)
    Zr = fused.run_space(V, ref)
    assert np.allclose(Zr[:, a:], np.sqrt(0.7) * on_ref / np.linalg.norm(on_ref, axis=1, keepdims=True), atol=1e-6)
    assert np.allclose(fused.run_space(V, np.zeros(len(V), bool)), Z)  # no reference rows: all rows
    raw = FusedEmbedder(centre=0.0, appearance_weight=0.5, threads=1).run_space(V)
    assert np.allclose(raw, np.hstack([V[:, :a], V[:, a:]]) * np.sqrt(0.5), atol=1e-6)
    # Same people closer than others in the run's space.
    y = np.array([truth[n] for n in sorted(truth)])
    S = Z @ Z.T
    same, other = S[(y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)], S[y[:, None] != y[None, :]]
    assert same.mean() > other.mean() + 0.2


def test_model_id_params_background_and_grey(fused, tmp_path):
    assert fused.model_id.startswith("fused:appearance-v1+mobilenetv2:") and fused.model_id.endswith(":320:bg808080")
    assert fused.params["mobilenet"] == {"layer": 320, "background": "#808080"}
    other = FusedEmbedder(mobilenet={"background": "#ffffff"}, threads=1)
    assert other.model_id != fused.model_id
    # A transparent cut-out: the MobileNetV2 block sees it on its own background.
    rgba = np.zeros((64, 48, 4), np.uint8)
    rgba[8:56, 8:40] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    grey_bg, white_bg = fused.load(tmp_path / "cut.png"), other.load(tmp_path / "cut.png")
    assert tuple(grey_bg[2][0, 0]) == (128, 128, 128) and tuple(white_bg[2][0, 0]) == (255, 255, 255)
    assert grey_bg[1].sum() == 48 * 32  # the alpha channel is the appearance block's mask
    Image.fromarray(np.dstack([np.tile(np.arange(64, dtype=np.uint8)[:, None] * 3, (1, 48))] * 3)).save(tmp_path / "g.png")
    V = fused.embed_instances([fused.load(tmp_path / "g.png"), fused.load(tmp_path / "cut.png")])
    assert fused.grey(V).tolist() == [True, False]


def test_with_threads_copies_and_configuration_errors():
    f = FusedEmbedder(threads=0)
    g = f.with_threads(1)
    assert g.mobilenet.threads == 1 and f.mobilenet.threads == 0 and g is not f
    with pytest.raises(ConfigError, match="appearance_weight"):
        FusedEmbedder(appearance_weight=1.5)
    with pytest.raises(ConfigError, match="centre"):
        FusedEmbedder(centre=-1)
    with pytest.raises(ConfigError, match="instance"):
        FusedEmbedder(mobilenet={"colour": 1})
    cfg = load_config(["input_dir=x", "instance.appearance_weight=0.5", "instance.mobilenet.layer=1280"])
    model = build(cfg, "instance")
    assert model.appearance_weight == 0.5 and model.mobilenet.layer == 1280 and model.neighbours == 5
