"""CCIP and CLIP as their references define them: whole images, the references' PIL preprocessing,
CCIP's comparator and threshold, lookup (model_dir, Hugging Face cache, download), errors.

The models are tiny ONNX graphs generated here in the hubs' real file layouts (not character
models): `tiny_feature_model` is input [n, 3, S, S] -> 8x8 average pool -> flatten -> a fixed
random matrix -> [n, d] (`features` recomputes it in NumPy); `tiny_comparator` is CCIP's
model_metrics.onnx as its exporter builds it (normalised features, exp(logit_scale) * cosine,
mapped to a difference in [0, 1]). The references' preprocessing is written out here again with
PIL (imgutils `load_image(..., mode='RGB')` + `_preprocess_image`; transformers' CLIPImageProcessor
with Xenova/clip-vit-base-patch32's preprocessor_config.json), independently of our preprocess().
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

from idcluster.config.compose import build, load_config
from idcluster.embedders.hub_onnx import CCIPEmbedder, ClipEmbedder, equivalent_cosine_distance
from idcluster.errors import ConfigError, ModelError
from idcluster.pipeline import stages as pipeline
from idcluster.records import Face
from idcluster.workflows.cluster import make_spec

DIM = 16
MEAN = np.asarray((0.48145466, 0.4578275, 0.40821073))
STD = np.asarray((0.26862954, 0.26130258, 0.27577711))
CCIP_MODEL = "ccip-caformer-24-randaug-pruned"


def _weights(size: int) -> np.ndarray:
    cells = (size // (size // 8)) ** 2 * 3
    return np.random.default_rng(1).normal(size=(cells, DIM)).astype(np.float32)


def _save(model, path):
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_feature_model(path, size: int, input_name: str, output_name: str):
    k = size // 8
    nodes = [
        helper.make_node("AveragePool", [input_name], ["pool"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["n", DIM])],
        [numpy_helper.from_array(_weights(size), "W")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def tiny_comparator(path, logit_scale: float = np.log(1 / 0.07), sigmoid_gain: float | None = None, raw_norm: bool = False):
    """[n, d] features -> [n, n] differences. CCIP's: clip(1 - logits / scale, 0, 1) with logits =
    exp(logit_scale) * cos of the normalised features and scale the self-logit. sigmoid_gain: a
    non-linear (still monotone) mapping instead; raw_norm: depends on the feature norms too (not a
    function of the cosine: no cosine threshold is equivalent)."""
    scale = float(np.exp(logit_scale))
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis"], ["ss"], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["norm"]),
        helper.make_node("Div", ["input", "norm"], ["unit"]),
        helper.make_node("Transpose", ["unit"], ["unit_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["unit", "unit_t"], ["cos"]),
        helper.make_node("Mul", ["cos", "scale"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis"), numpy_helper.from_array(np.array(scale, np.float32), "scale")]
    if sigmoid_gain is None:
        nodes += [helper.make_node("Div", ["logits", "scale"], ["c"]), helper.make_node("Sub", ["one", "c"], ["d"])]
    else:
        nodes += [helper.make_node("Div", ["logits", "scale"], ["c"]), helper.make_node("Sub", ["half", "c"], ["m"]),
                  helper.make_node("Mul", ["m", "gain"], ["g"]), helper.make_node("Sigmoid", ["g"], ["d"])]
        inits += [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                  numpy_helper.from_array(np.array(sigmoid_gain, np.float32), "gain")]
    if raw_norm:
        nodes += [helper.make_node("Transpose", ["norm"], ["norm_t"], perm=[1, 0]),
                  helper.make_node("Mul", ["norm", "norm_t"], ["nn"]), helper.make_node("Mul", ["nn", "tenth"], ["nt"]),
                  helper.make_node("Add", ["d", "nt"], ["d2"])]
        inits.append(numpy_helper.from_array(np.array(0.1, np.float32), "tenth"))
    last = "d2" if raw_norm else "d"
    nodes.append(helper.make_node("Clip", [last, "zero", "one"], ["output"]))
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    graph = helper.make_graph(nodes, "metrics", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", DIM])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", "n"])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def ccip_folder(root, threshold=0.17847511429108218, metrics=True, **comparator):
    """deepghs/ccip_onnx's layout: <model>/model_feat.onnx, model_metrics.onnx, metrics.json."""
    d = root / CCIP_MODEL
    tiny_feature_model(d / "model_feat.onnx", 384, "input", "output")
    if metrics:
        tiny_comparator(d / "model_metrics.onnx", **comparator)
        (d / "metrics.json").write_text(json.dumps({"threshold": threshold, "f1": 0.917}))
    return d


def features(x: np.ndarray) -> np.ndarray:
    """What the tiny feature model computes for one preprocessed CHW input (unit length)."""
    size = x.shape[1]
    k = size // 8
    y = x.reshape(3, 8, k, 8, k).mean(axis=(2, 4)).reshape(-1) @ _weights(size)
    return y / np.linalg.norm(y)


# ---------------------------------------------------------------- the references, written out again with PIL


def ccip_reference_input(path) -> np.ndarray:
    """imgutils: load_image(path, mode='RGB', force_background='white'), then _preprocess_image(image, 384)."""
    image = Image.open(path)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:  # has_alpha_channel
        ret = Image.new("RGBA", image.size, "white")  # add_background_for_rgba
        ret.paste(image, (0, 0), mask=image)
        image = ret.convert("RGB")
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = image.resize((384, 384), resample=Image.BILINEAR)
    data = np.array(image).transpose(2, 0, 1).astype(np.float32) / 255.0
    return np.asarray((data - MEAN[:, None, None]) / STD[:, None, None], dtype=np.float32)


def clip_reference_input(path) -> np.ndarray:
    """CLIPImageProcessor with {shortest_edge: 224, resample: 3, crop 224x224, rescale 1/255, CLIP mean/std}."""
    image = Image.open(path).convert("RGB")  # convert_to_rgb: the alpha channel dropped
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = 224, int(224 * long / short)  # get_resize_output_image_size(default_to_square=False)
    new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
    arr = np.array(image.resize((new_w, new_h), resample=Image.BICUBIC))
    top, left = (new_h - 224) // 2, (new_w - 224) // 2  # center_crop
    arr = arr[top:top + 224, left:left + 224]
    x = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)  # rescale
    x = (x - MEAN.astype(np.float32)) / STD.astype(np.float32)  # normalize, channels last
    return x.transpose(2, 0, 1)


def drawn_character(path, size, hair, body, transparent: bool):
    """A flat-coloured drawn figure (a character instance), optionally cut out (transparent around it)."""
    w, h = size
    im = Image.new("RGBA", size, (0, 0, 0, 0) if transparent else (235, 240, 250, 255))
    d = ImageDraw.Draw(im)
    d.ellipse((w * 0.3, h * 0.08, w * 0.7, h * 0.38), fill=(250, 220, 200, 255), outline=(40, 30, 30, 255), width=3)
    d.pieslice((w * 0.25, h * 0.02, w * 0.75, h * 0.4), 180, 360, fill=hair + (255,))
    d.rectangle((w * 0.32, h * 0.4, w * 0.68, h * 0.9), fill=body + (255,), outline=(40, 30, 30, 255), width=3)
    d.ellipse((w * 0.4, h * 0.2, w * 0.46, h * 0.26), fill=(60, 90, 200, 255))
    d.ellipse((w * 0.54, h * 0.2, w * 0.6, h * 0.26), fill=(60, 90, 200, 255))
    if transparent:  # soft edges: semi-transparent pixels too
        alpha = np.asarray(im)[:, :, 3].astype(np.float32)
        im.putalpha(Image.fromarray(np.clip(alpha * 0.8 + 20 * (alpha > 0), 0, 255).astype(np.uint8)))
    (im if transparent else im.convert("RGB")).save(path)
    return path


@pytest.fixture
def characters(tmp_path):
    folder = tmp_path / "chars"
    folder.mkdir()
    specs = [((301, 517), (230, 60, 60), (40, 40, 160), True), ((517, 301), (230, 60, 60), (40, 40, 160), False),
             ((200, 200), (250, 230, 90), (20, 120, 40), True), ((383, 385), (250, 230, 90), (20, 120, 40), False),
             ((640, 360), (120, 60, 200), (200, 200, 200), False)]
    paths = []
    for k, (size, hair, body, cut) in enumerate(specs):
        paths.append(drawn_character(folder / f"c{k}.{'png' if cut else 'jpg'}", size, hair, body, cut))
    return folder, paths


# ---------------------------------------------------------------- CCIP


def test_ccip_matches_the_reference_preprocessing(characters, tmp_path):
    folder, paths = characters
    emb = CCIPEmbedder(model_dir=str(ccip_folder(tmp_path)), batch_size=2)
    X = emb.embed([emb.load(p) for p in paths])  # 5 images: batches of 2, 2, 1
    for x, p in zip(X, paths):
        assert np.allclose(x, features(ccip_reference_input(p)), atol=1e-5), p.name
    assert np.allclose(emb.preprocess(emb.load(paths[0])), ccip_reference_input(paths[0]), atol=1e-6)
    # An RGBA array given directly is composited on the same white as the file.
    rgba = np.asarray(Image.open(paths[0]))
    assert rgba.shape[2] == 4 and np.allclose(emb.embed([rgba])[0], X[0], atol=1e-6)
    assert X.shape == (5, DIM) and emb.dim == DIM and np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)


def test_ccip_background_is_configurable_and_in_the_model_id(characters, tmp_path):
    folder, paths = characters
    d = ccip_folder(tmp_path)
    white, black = CCIPEmbedder(model_dir=str(d)), CCIPEmbedder(model_dir=str(d), background="#000000")
    assert white.model_id.endswith(":bgffffff") and black.model_id.endswith(":bg000000")
    assert white.params != black.params
    cut, flat = paths[0], paths[1]  # transparent around the figure / no alpha
    assert not np.allclose(white.embed([white.load(cut)]), black.embed([black.load(cut)]), atol=1e-3)
    assert np.allclose(white.embed([white.load(flat)]), black.embed([black.load(flat)]), atol=1e-6)
    with pytest.raises(ConfigError, match="background"):
        CCIPEmbedder(model_dir=str(d), background="purple-ish")


def test_ccip_decides_with_its_comparator_and_metrics_threshold(characters, tmp_path):
    folder, paths = characters
    emb = CCIPEmbedder(model_dir=str(ccip_folder(tmp_path)))
    assert emb.threshold == pytest.approx(0.17847511429108218)
    # This comparator maps cosine c to 1 - c: the equivalent distance is the threshold itself.
    assert emb.distance_threshold == pytest.approx(0.17847511429108218, abs=1e-6)
    X = emb.embed([emb.load(p) for p in paths])
    D = emb.differences(X)
    cosine = 1 - X @ X.T
    assert np.array_equal(D <= emb.threshold, cosine <= emb.distance_threshold)
    assert np.allclose(D, np.clip(cosine, 0, 1), atol=1e-5)


def test_a_nonlinear_comparator_gets_its_own_equivalent_and_a_foreign_one_is_refused(tmp_path):
    emb = CCIPEmbedder(model_dir=str(ccip_folder(tmp_path / "a", threshold=0.3, sigmoid_gain=10.0)))
    # sigmoid((0.5 - c) * 10) = 0.3 at c = 0.5 - logit(0.3) / 10
    c = 0.5 - np.log(0.3 / 0.7) / 10
    assert emb.distance_threshold == pytest.approx(1 - c, abs=1e-5)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, DIM))
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert np.array_equal(emb.differences(X) <= 0.3, (1 - U @ U.T) <= emb.distance_threshold)
    foreign = CCIPEmbedder(model_dir=str(ccip_folder(tmp_path / "b", raw_norm=True)))
    with pytest.raises(ModelError, match="not a function of the cosine"):
        foreign.distance_threshold
    with pytest.raises(ModelError, match="does not fall"):
        equivalent_cosine_distance(lambda X: (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (X / np.linalg.norm(
            X, axis=1, keepdims=True)).T, 0.5, DIM)  # a "difference" that rises with the cosine


def test_metrics_files_are_optional_for_embedding_and_named_when_missing(characters, tmp_path):
    folder, paths = characters
    d = ccip_folder(tmp_path, metrics=False)
    emb = CCIPEmbedder(model_dir=str(d))
    assert emb.embed([emb.load(paths[0])]).shape == (1, DIM)  # the feature model alone embeds
    with pytest.raises(ModelError, match="metrics.json"):
        emb.threshold
    (d / "metrics.json").write_text(json.dumps({"threshold": 0.2}))
    with pytest.raises(ModelError, match="model_metrics.onnx"):
        emb.distance_threshold
    (d / "metrics.json").write_text(json.dumps({"f1": 0.9}))
    with pytest.raises(ModelError, match="threshold"):
        emb.threshold


def hf_snapshot(cache: Path, repo_folder: str, commit: str) -> Path:
    """The snapshot folder of `repo_folder` in a Hugging Face hub cache, refs/main naming `commit`
    (the layout huggingface_hub writes), for the test to fill."""
    repo = cache / repo_folder
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_ccip_from_the_hugging_face_cache(characters, tmp_path, monkeypatch):
    """The local store is the real Hugging Face cache layout (refs/main -> snapshots/<commit>/...)."""
    folder, paths = characters
    cache = tmp_path / "hub"
    snapshot = hf_snapshot(cache, "models--deepghs--ccip_onnx", "1" * 40)
    ccip_folder(snapshot)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    emb = CCIPEmbedder()
    assert str(cache) in str(emb.model_path) and emb.model_path.name == "model_feat.onnx"
    assert np.allclose(emb.embed([emb.load(paths[2])])[0], features(ccip_reference_input(paths[2])), atol=1e-5)
    assert emb.distance_threshold == pytest.approx(0.1785, abs=1e-4)


# ---------------------------------------------------------------- CLIP


def test_clip_matches_the_reference_preprocessing(characters, tmp_path, monkeypatch):
    """From the real Hugging Face cache layout; odd sizes and aspect ratios exercise the rounding of
    the resize (int(), not round()) and of the centre crop."""
    folder, paths = characters
    cache = tmp_path / "hub"
    snapshot = hf_snapshot(cache, "models--Xenova--clip-vit-base-patch32", "0" * 40)
    tiny_feature_model(snapshot / "onnx" / "vision_model.onnx", 224, "pixel_values", "image_embeds")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    emb = ClipEmbedder(batch_size=3)
    assert emb.model_path.name == "vision_model.onnx" and str(cache) in str(emb.model_path)
    X = emb.embed([emb.load(p) for p in paths])
    for x, p in zip(X, paths):
        assert np.allclose(emb.preprocess(emb.load(p)), clip_reference_input(p), atol=1e-5), p.name
        assert np.allclose(x, features(clip_reference_input(p)), atol=1e-5), p.name
    assert emb.model_id.endswith(":bgkeep")  # the reference drops the alpha channel
    white = ClipEmbedder(background="#ffffff")
    assert white.model_id.endswith(":bgffffff")
    assert not np.allclose(white.embed([white.load(paths[0])]), X[:1], atol=1e-3)


# ---------------------------------------------------------------- whole images, never face crops


def test_embedder_ccip_sends_every_whole_image_to_the_model(characters, small_set, tmp_path, monkeypatch, config):
    """A folder of drawn characters and photos with faces: every image reaches the model, whole
    (at its own size, never a detected box), through the instance stream; no face is embedded."""
    from idcluster.embedders import hub_onnx

    chars, paths = characters
    photos, truth = small_set
    for p in paths:
        (photos / p.name).write_bytes(p.read_bytes())
    d = ccip_folder(tmp_path)
    seen = []
    real = hub_onnx.CCIPEmbedder.preprocess

    def spy(self, image):
        seen.append(image.size)
        return real(self, image)

    monkeypatch.setattr(hub_onnx.CCIPEmbedder, "preprocess", spy)
    result = pipeline.run(make_spec(config(photos, "embedder=ccip", f"embedder.model_dir={d}"), "cluster", progress=False))
    sizes = sorted(Image.open(photos / r.rel_path).size for r in result.records)
    assert len(seen) == len(result.records) == len(truth) + len(paths)
    assert sorted(seen) == sizes  # whole images
    assert len(result.embeddings) == 0 and "embed" not in result.computed  # no face crop embedded
    assert any(r.faces for r in result.records)  # the photos' faces were found, and left to the record
    assert {r.evidence for r in result.records if r.label >= 0} <= {"appearance"}
    assert result.instance_model.startswith("ccip:") and result.computed["instance"] == len(seen)
    with pytest.raises(ConfigError, match="appearance.enabled=false leaves nothing"):
        pipeline.run(make_spec(config(photos, "embedder=ccip", f"embedder.model_dir={d}", "appearance.enabled=false"),
                               "cluster", progress=False))


def test_instance_ccip_keeps_human_faces_on_the_face_embedder(characters, small_set, tmp_path, config):
    chars, paths = characters
    photos, truth = small_set
    for p in paths:
        (photos / p.name).write_bytes(p.read_bytes())
    d = ccip_folder(tmp_path)
    result = pipeline.run(make_spec(config(photos, "instance=ccip", f"instance.model_dir={d}"), "cluster", progress=False))
    by = {r.rel_path: r for r in result.records}
    assert all(by[n].evidence == "face" for n in truth)
    assert len(result.embeddings) == len(truth)
    assert result.instance_model.startswith("ccip:")


def test_embedder_ccip_or_clip_decides_with_its_own_threshold_not_the_instance_models(characters, tmp_path, config):
    """embedder=ccip is the whole-instance model: the stream takes CCIP's own decision (metrics.json
    through its comparator), never the default instance=fused thresholds; embedder=clip its own 0.15."""
    chars, paths = characters
    d = ccip_folder(tmp_path)
    spec = make_spec(config(chars, "embedder=ccip", f"embedder.model_dir={d}"), "cluster", progress=False)
    assert spec.appearance.distance_threshold is None and spec.appearance.grey_distance_threshold is None
    pipeline.run(spec)
    assert spec.appearance.thresholds_.colour == pytest.approx(spec.embedder.distance_threshold)
    assert spec.appearance.thresholds_.grey is None
    own = make_spec(config(chars, "embedder=ccip", f"embedder.model_dir={d}", "embedder.distance_threshold=0.3"),
                    "cluster", progress=False)
    assert own.appearance.distance_threshold == 0.3
    clip = make_spec(config(chars, "embedder=clip"), "cluster", progress=False)
    assert (clip.appearance.distance_threshold, clip.appearance.grey_distance_threshold) == (0.15, None)
    fused = make_spec(config(chars), "cluster", progress=False)  # the default: instance=fused's calibration
    assert (fused.appearance.distance_threshold, fused.appearance.grey_distance_threshold) == (0.62, 0.72)


# ---------------------------------------------------------------- lookup and errors


def test_missing_model_offline_is_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: unreachable at once
    with pytest.raises(ModelError) as e:
        CCIPEmbedder().model_id
    msg = str(e.value)
    assert "\n" not in msg and "instance.model_dir" in msg and "instance=fused" in msg and "cannot be reached" in msg
    with pytest.raises(ModelError, match="downloads off"):
        CCIPEmbedder(download=False).model_path
    with pytest.raises(ModelError, match="missing .*model_feat.onnx"):
        CCIPEmbedder(model_dir=str(tmp_path)).model_path


def test_corrupt_model_file_is_a_model_error(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model_feat.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        CCIPEmbedder(model_dir=str(d)).embed([np.zeros((8, 8, 3), np.uint8)])


@pytest.mark.parametrize("group", ["embedder", "instance"])
@pytest.mark.parametrize("option", ["ccip", "clip"])
def test_configs_build_and_run_on_cuda_fallback(group, option, tmp_path):
    d = ccip_folder(tmp_path) if option == "ccip" else tiny_feature_model(tmp_path / "c" / "vision_model.onnx", 224, "pixel_values", "image_embeds").parent
    cfg = load_config([f"input_dir={tmp_path}", f"{group}={option}", f"{group}.model_dir={d}", "device=cuda"])
    emb = build(cfg, group)
    assert emb.whole_instance
    X = emb.embed([np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 255, np.uint8)])
    assert X.shape == (2, DIM)
    # align is the detected box: only for saving face chips (export.save_faces)
    img = np.zeros((50, 60, 3), np.uint8)
    assert emb.align(img, Face(box=(10, 5, 40, 45), landmarks=((0, 0),) * 5, score=1.0)).shape == (40, 30, 3)
