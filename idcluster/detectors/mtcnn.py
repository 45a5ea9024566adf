"""detector=mtcnn: facenet-pytorch's MTCNN (P/R/O-nets, 5 landmarks).

The three nets' weights ship inside the facenet-pytorch wheel, so it runs
offline. It needs torch: `pip install 'idcluster[torch]'` (see README, Models).
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from ..errors import ModelError
from ..records import Face
from ..runtime import torch_device
from ..weights import file_sha256, package_file

TORCH_EXTRA = "pip install 'idcluster[torch]' (torch, torchvision, facenet-pytorch; see README Models)"


def require_torch(what: str):
    """Import torch and facenet_pytorch, or one clear ModelError."""
    try:
        import torch
        import facenet_pytorch  # noqa: F401 - imports torchvision at module level
    except ImportError as e:
        raise ModelError(f"{what} needs {e.name or 'torch'}: {TORCH_EXTRA}") from None
    return torch


class MTCNNDetector:
    def __init__(
        self,
        score_threshold: float = 0.9,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        min_face_size: int = 20,
        factor: float = 0.709,
        max_size: int = 1280,
        device: str = "cpu",
        threads: int = 0,
    ):
        self.score_threshold = score_threshold
        self.thresholds = [float(t) for t in thresholds]
        self.min_face_size = min_face_size
        self.factor = factor
        self.max_size = max_size
        self.device = device
        self.threads = threads
        self._mtcnn = None

    def _weights(self):
        return [package_file("facenet_pytorch", f"data/{n}.pt", "'idcluster[torch]'") for n in ("pnet", "rnet", "onet")]

    @property
    def model_id(self) -> str:
        h = hashlib.sha256("".join(file_sha256(p) for p in self._weights()).encode()).hexdigest()
        return f"facenet-pytorch-mtcnn:{h[:16]}"

    def _get(self):
        if self._mtcnn is None:
            torch = require_torch("detector=mtcnn")
            from facenet_pytorch import MTCNN

            if self.threads:
                torch.set_num_threads(int(self.threads))
            self._mtcnn = MTCNN(
                min_face_size=self.min_face_size, thresholds=self.thresholds, factor=self.factor,
                keep_all=True, post_process=False, device=torch_device(self.device),
            )
        return self._mtcnn

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mtcnn"] = None
        return state

    def detect(self, image: np.ndarray) -> list[Face]:
        mtcnn = self._get()
        h, w = image.shape[:2]
        scale = min(1.0, self.max_size / max(h, w))
        if scale < 1.0:
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        import torch

        with torch.inference_mode():
            boxes, probs, points = mtcnn.detect(np.ascontiguousarray(image), landmarks=True)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4) / scale  # facenet-pytorch returns object arrays
        probs = np.asarray(probs, np.float64).reshape(-1)
        points = np.asarray(points, np.float64).reshape(-1, 5, 2) / scale
        faces = []
        for (x1, y1, x2, y2), p, lm in zip(boxes, probs, points):
            if p < self.score_threshold:
                continue
            box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            faces.append(Face(box=box, landmarks=tuple((float(x), float(y)) for x, y in lm), score=float(p), detector="mtcnn"))
        faces.sort(key=lambda f: -f.score)
        return faces
