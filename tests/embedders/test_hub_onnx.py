"""embedder=ccip / embedder=clip: lookup (model_dir, Hugging Face cache, download), batching, errors.

The models here are tiny ONNX graphs generated in the test, in the hubs' file layouts;
they are not character models: they run the real loading, preprocessing and batching code.
`tiny_feature_model`: input [n, 3, S, S] -> 8x8 average pool -> flatten -> fixed random
matrix -> [n, d] (`reference` recomputes it in numpy).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from idcluster.config.compose import build, load_config
from idcluster.embedders.hub_onnx import CLIP_MEAN, CLIP_STD, CCIPEmbedder, ClipEmbedder
from idcluster.errors import ModelError
from idcluster.records import Face

DIM = 16


def _weights(size: int) -> np.ndarray:
    cells = (size // (size // 8)) ** 2 * 3
    return np.random.default_rng(1).normal(size=(cells, DIM)).astype(np.float32)


def tiny_feature_model(path, size: int, input_name: str, output_name: str, batch=None):
    k = size // 8
    W = _weights(size)
    nodes = [
        helper.make_node("AveragePool", [input_name], ["pool"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch or "n", 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch or "n", DIM])],
        [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def reference(x: np.ndarray) -> np.ndarray:
    """What the tiny model computes for one preprocessed CHW input."""
    size = x.shape[1]
    k = size // 8
    pooled = x.reshape(3, 8, k, 8, k).mean(axis=(2, 4)).reshape(-1)
    y = pooled @ _weights(size)
    return y / np.linalg.norm(y)


def ccip_folder(root, model="ccip-caformer-24-randaug-pruned"):
    d = root / model
    tiny_feature_model(d / "model_feat.onnx", 384, "input", "output")
    (d / "metrics.json").write_text(json.dumps({"threshold": 0.1785}))
    return d


def test_ccip_from_model_dir_preprocesses_and_batches(tmp_path):
    d = ccip_folder(tmp_path)
    emb = CCIPEmbedder(model_dir=str(d), batch_size=3)
    rng = np.random.default_rng(0)
    chips = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(100, 80), (384, 384), (50, 200), (90, 90), (64, 64)]]
    X = emb.embed(chips)  # 5 chips in batches of 3 + 2
    assert X.shape == (5, DIM) and emb.dim == DIM
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # Preprocessing: 384x384 RGB, CLIP mean/std, CHW (the reference on a constant image).
    flat = np.full((20, 30, 3), (200, 100, 50), np.uint8)
    x = emb.preprocess(flat)
    assert x.shape == (3, 384, 384)
    assert np.allclose(x[:, 0, 0], (np.array([200, 100, 50]) / 255.0 - CLIP_MEAN) / CLIP_STD, atol=1e-5)
    assert np.allclose(emb.embed([flat])[0], reference(x), atol=1e-4)
    assert emb.threshold == pytest.approx(0.1785)
    assert emb.model_id.startswith("ccip:ccip-caformer-24-randaug-pruned:")
    # align crops the instance box (detector=none: the whole image)
    img = np.zeros((50, 60, 3), np.uint8)
    assert emb.align(img, Face(box=(10, 5, 40, 45), landmarks=((0, 0),) * 5, score=1.0)).shape == (40, 30, 3)


def test_clip_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """The local store is the real Hugging Face cache layout (refs/main -> snapshots/<commit>/...)."""
    cache = tmp_path / "hub"
    repo = cache / "models--Xenova--clip-vit-base-patch32"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    tiny_feature_model(repo / "snapshots" / commit / "onnx" / "vision_model.onnx", 224, "pixel_values", "image_embeds")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    emb = ClipEmbedder()
    assert emb.paths()[0].name == "vision_model.onnx" and str(cache) in str(emb.paths()[0])
    chip = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    x = emb.preprocess(chip)
    assert x.shape == (3, 224, 224)
    assert np.allclose(emb.embed([chip])[0], reference(x), atol=1e-4)


def test_missing_model_offline_is_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: unreachable at once
    with pytest.raises(ModelError) as e:
        CCIPEmbedder().model_id
    msg = str(e.value)
    assert "\n" not in msg and "embedder.model_dir" in msg and "embedder=appearance" in msg and "cannot be reached" in msg
    with pytest.raises(ModelError, match="downloads off"):
        CCIPEmbedder(download=False).paths()
    with pytest.raises(ModelError, match="missing .*model_feat.onnx"):
        CCIPEmbedder(model_dir=str(tmp_path)).paths()


def test_corrupt_model_file_is_a_model_error(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model_feat.onnx").write_bytes(b"not onnx")
    (d / "metrics.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot load"):
        CCIPEmbedder(model_dir=str(d)).embed([np.zeros((8, 8, 3), np.uint8)])


@pytest.mark.parametrize("option", ["ccip", "clip"])
def test_configs_build_and_run_on_cuda_fallback(option, tmp_path, caplog):
    d = ccip_folder(tmp_path) if option == "ccip" else tiny_feature_model(tmp_path / "c" / "vision_model.onnx", 224, "pixel_values", "image_embeds").parent
    cfg = load_config([f"input_dir={tmp_path}", f"embedder={option}", f"embedder.model_dir={d}", "device=cuda"])
    emb = build(cfg, "embedder")
    X = emb.embed([np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 255, np.uint8)])
    assert X.shape == (2, DIM)
