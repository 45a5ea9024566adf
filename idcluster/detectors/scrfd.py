"""detector=scrfd: the detection model of an InsightFace pack (SCRFD, 5 landmarks).

The model file is found by `idcluster.models.lookup.find_pack_model` (explicit
path, $INSIGHTFACE_HOME / ~/.insightface/models/<pack>, then InsightFace's
download after a reachability probe) and loaded, routed and run by InsightFace's
own `model_zoo.get_model` and `SCRFD.detect`, with our providers (device) and
thread count. The packs' weights are for non-commercial research use.
"""

from __future__ import annotations

import numpy as np

from ..models.insightface_pack import PackModel
from ..records import Face
from ._layout import RETINAFACE_BOX, landmarks_in_box


class SCRFDDetector(PackModel):
    role, id_prefix = "detection", "insightface-scrfd"

    def __init__(
        self,
        pack: str = "buffalo_l",
        input_size: int | list[int] = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        root: str | None = None,
        download: bool = True,
        device: str = "cpu",
        threads: int = 0,
    ):
        self.pack = pack
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.root = root
        self.download = download
        self.device = device
        self.threads = threads
        self._path = None

    def _get_model(self):
        if self._model is None:
            from insightface.model_zoo.scrfd import SCRFD

            self._model = self._load(SCRFD)
            self._model.nms_thresh = float(self.nms_threshold)
        return self._model

    def _size(self) -> tuple[int, int]:
        s = self.input_size
        if isinstance(s, (int, float)):
            return int(s), int(s)
        w, h = (int(v) for v in s)
        return w, h

    def detect(self, image: np.ndarray) -> list[Face]:
        model = self._get_model()
        # InsightFace works on BGR images (its blob swaps to RGB).
        det, kpss = model.detect(np.ascontiguousarray(image[:, :, ::-1]), input_size=self._size(),
                                 det_thresh=float(self.score_threshold))
        h, w = image.shape[:2]
        faces = []
        for i, (x1, y1, x2, y2, score) in enumerate(det.tolist()):
            box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            if kpss is not None:
                lm = tuple((float(x), float(y)) for x, y in kpss[i])
            else:  # SCRFD variants without keypoints (6/10 outputs)
                lm = landmarks_in_box(box, RETINAFACE_BOX)
            faces.append(Face(box=box, landmarks=lm, score=float(score), detector="scrfd"))
        faces.sort(key=lambda f: -f.score)
        return faces
