"""detector=scrfd: the detection model of an InsightFace pack (SCRFD, 5 landmarks).

The model file is found by `idcluster.model_store.find_pack_model` (explicit
path, $INSIGHTFACE_HOME / ~/.insightface/models/<pack>, then InsightFace's
download after a reachability probe) and loaded, routed and run by InsightFace's
own `model_zoo.get_model` and `SCRFD.detect`, with our providers (device) and
thread count. The packs' weights are for non-commercial research use.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..records import Face
from ..runtime import onnx_providers, onnx_session_options
from ..weights import file_sha256
from ._layout import RETINAFACE_BOX, landmarks_in_box


def load_insightface_model(path, kind: type, device: str, threads: int):
    """insightface.model_zoo.get_model on one file, checked to route to `kind` (SCRFD, ArcFaceONNX)."""
    from insightface.model_zoo import get_model

    try:
        model = get_model(str(path), providers=onnx_providers(device), sess_options=onnx_session_options(threads))
    except Exception as e:  # noqa: BLE001 - onnxruntime/protobuf errors on a bad file: one line
        raise ModelError(f"InsightFace could not load {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    if not isinstance(model, kind):
        raise ModelError(f"InsightFace routes {path} to {type(model).__name__ if model is not None else 'nothing'}, "
                         f"not {kind.__name__}")
    return model


class SCRFDDetector:
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
        self._model = None

    def model_path(self):
        if self._path is None:
            from ..model_store import find_pack_model

            self._path = find_pack_model(self.pack, "detection", root=self.root, download=self.download)
        return self._path

    @property
    def model_id(self) -> str:
        p = self.model_path()
        return f"insightface-scrfd:{p.name}:{file_sha256(p)[:16]}"

    def _get_model(self):
        if self._model is None:
            from insightface.model_zoo.scrfd import SCRFD

            self._model = load_insightface_model(self.model_path(), SCRFD, self.device, self.threads)
            self._model.nms_thresh = float(self.nms_threshold)
        return self._model

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state

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
