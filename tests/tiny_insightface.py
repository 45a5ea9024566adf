"""Tiny ONNX models in the shapes InsightFace routes, built with onnx.helper.

They are not face models. They exist so the real loading, routing,
preprocessing and decoding code (InsightFace's model_zoo.get_model, SCRFD,
ArcFaceONNX and ours around them) runs in tests without the packs' weights:

- `scrfd_like`: input [1, 3, H, W] (dynamic H, W), 9 outputs like a keypoint
  SCRFD (scores, box distances, keypoint offsets for strides 8/16/32, two anchors
  per cell). Only stride 8 fires, where the 8x8 cell is bright: a white square on
  black gives one face around it. Box distances are a constant 3 strides; the
  keypoints sit at fixed offsets (`KPS_OFFSETS` strides) from the anchor centre.
- `arcface_like`: input [n, 3, 112, 112] -> [n, 512]: an 8x8 average pool of
  the normalised RGB input times a fixed random matrix (`arcface_reference`
  computes the same in numpy, to check channel order and normalisation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
ANCHORS = 2
BOX_DISTANCE = 3.0  # strides on each side of the anchor centre
KPS_OFFSETS = np.array([[-1.0, -0.5], [1.0, -0.5], [0.0, 0.25], [-0.75, 1.0], [0.75, 1.0]], np.float32)


def _head(name: str, x: str, stride: int, ch: int, weight: np.ndarray, bias: np.ndarray, nodes, inits, sigmoid=False) -> str:
    """AveragePool(stride) -> 1x1 conv (ch x 3) -> NHWC -> [-1, ch / ANCHORS]."""
    pool = f"{name}_pool"
    if f"pool{stride}" not in {n.output[0] for n in nodes}:
        nodes.append(helper.make_node("AveragePool", [x], [f"pool{stride}"], kernel_shape=[stride, stride], strides=[stride, stride]))
    pool = f"pool{stride}"
    inits += [numpy_helper.from_array(weight.astype(np.float32), f"{name}_w"), numpy_helper.from_array(bias.astype(np.float32), f"{name}_b")]
    nodes.append(helper.make_node("Conv", [pool, f"{name}_w", f"{name}_b"], [f"{name}_conv"]))
    last = f"{name}_conv"
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", [last], [f"{name}_sig"]))
        last = f"{name}_sig"
    nodes.append(helper.make_node("Transpose", [last], [f"{name}_t"], perm=[0, 2, 3, 1]))
    inits.append(numpy_helper.from_array(np.array([-1, ch // ANCHORS], np.int64), f"{name}_shape"))
    nodes.append(helper.make_node("Reshape", [f"{name}_t", f"{name}_shape"], [name]))
    return name


def scrfd_like(path: Path) -> Path:
    nodes, inits, outputs = [], [], []
    x = "input.1"
    groups = {"score": [], "bbox": [], "kps": []}
    for s in STRIDES:
        # score logit = 20 * mean(normalised RGB) - 10 at stride 8 (white ~ +1 -> 0.99996, black ~ -1 -> 0), never elsewhere.
        w = np.full((ANCHORS, 3, 1, 1), 20.0 / 3.0) if s == 8 else np.zeros((ANCHORS, 3, 1, 1))
        b = np.full(ANCHORS, -10.0 if s == 8 else -50.0)
        groups["score"].append(_head(f"score_{s}", x, s, ANCHORS, w, b, nodes, inits, sigmoid=True))
        groups["bbox"].append(_head(f"bbox_{s}", x, s, 4 * ANCHORS, np.zeros((4 * ANCHORS, 3, 1, 1)),
                                    np.full(4 * ANCHORS, BOX_DISTANCE), nodes, inits))
        groups["kps"].append(_head(f"kps_{s}", x, s, 10 * ANCHORS, np.zeros((10 * ANCHORS, 3, 1, 1)),
                                   np.tile(KPS_OFFSETS.ravel(), ANCHORS), nodes, inits))
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for name in groups[kind]:
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_n", width]))
    graph = helper.make_graph(nodes, "tiny_scrfd_like", [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, "h", "w"])],
                              outputs, inits)
    return _save(graph, path)


def _arcface_matrix(dim: int = 512) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(3 * 8 * 8, dim)).astype(np.float32)


def arcface_like(path: Path, size: int = 112, dim: int = 512, batch: int | str = "n") -> Path:
    k = size // 8
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["fc1"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface_like",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, dim])],
        [numpy_helper.from_array(_arcface_matrix(dim), "proj")],
    )
    return _save(graph, path)


def arcface_reference(chip_rgb: np.ndarray, dim: int = 512) -> np.ndarray:
    """What arcface_like computes for one RGB chip under InsightFace's (x - 127.5) / 127.5."""
    x = (chip_rgb.astype(np.float32) - 127.5) / 127.5
    k = chip_rgb.shape[0] // 8
    pooled = x.reshape(8, k, 8, k, 3).mean(axis=(1, 3)).transpose(2, 0, 1).reshape(-1)
    return pooled @ _arcface_matrix(dim)


def landmark_like(path: Path) -> Path:
    """A 192x192-input model: InsightFace routes it to Landmark, never to a detector or ArcFace."""
    nodes = [helper.make_node("GlobalAveragePool", ["data"], ["out"])]
    graph = helper.make_graph(nodes, "tiny_landmark_like",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 1, 1])])
    return _save(graph, path)


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_pack(folder: Path, detector: bool = True, recognizer: bool = True, extra: bool = True) -> Path:
    """A pack folder laid out like buffalo_l (file names included), holding the tiny models."""
    folder = Path(folder)
    if detector:
        scrfd_like(folder / "det_10g.onnx")
    if recognizer:
        arcface_like(folder / "w600k_r50.onnx")
    if extra:
        landmark_like(folder / "2d106det.onnx")
    return folder
