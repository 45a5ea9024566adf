"""embedder=arcface: InsightFace ArcFace from a model pack (buffalo_l w600k_r50,
antelopev2 glintr100, ...) or any ArcFace ONNX file by path.

Lookup: `pack` as a path (folder or .onnx file), then <pack> under
$INSIGHTFACE_HOME/models and ~/.insightface/models, then InsightFace's download
(after a reachability probe: offline it is one ModelError within seconds that
names the folder to fill and the offline embedders). Loaded, routed and
preprocessed by InsightFace's own `get_model` / `ArcFaceONNX.get_feat`
(BGR in, swapRB, its mean/std detection for MXNet-converted graphs).
Alignment: InsightFace's `norm_crop` template (ArcFace 5 points) at the model's
input size. The packs' weights are for non-commercial research use.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..models.insightface_pack import PackModel
from ..records import Face


class ArcFaceEmbedder(PackModel):
    role, id_prefix = "recognition", "insightface-arcface"
    alignment = "InsightFace norm_crop: similarity warp to the ArcFace 5-point template at the model's input size"
    normalisation = "InsightFace's: RGB, (x - 127.5) / 127.5 (none for MXNet-converted graphs, detected from the graph)"

    def __init__(
        self,
        pack: str = "buffalo_l",
        batch_size: int = 32,
        root: str | None = None,
        download: bool = True,
        device: str = "cpu",
        threads: int = 0,
    ):
        self.pack = pack
        self.batch_size = batch_size
        self.root = root
        self.download = download
        self.device = device
        self.threads = threads
        self._path = None

    def _get_model(self):
        if self._model is None:
            from insightface.model_zoo.arcface_onnx import ArcFaceONNX

            self._model = self._load(ArcFaceONNX)
            out = self._model.output_shape
            if len(out) != 2 or not isinstance(out[1], int):
                raise ModelError(f"{self.model_path()} outputs {out}, not one [n, d] embedding")
        return self._model

    @property
    def input_size(self) -> int:
        return int(self._get_model().input_size[0])

    @property
    def dim(self) -> int:
        return int(self._get_model().output_shape[1])

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        import warnings

        from insightface.utils.face_align import norm_crop

        with warnings.catch_warnings():  # its skimage SimilarityTransform.estimate call is deprecated, not wrong
            warnings.simplefilter("ignore", FutureWarning)
            return norm_crop(image, face.landmarks_array(), image_size=self.input_size)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not len(chips):
            return np.zeros((0, self.dim), np.float32)
        model = self._get_model()
        fixed = model.input_shape[0]
        step = 1 if isinstance(fixed, int) and fixed == 1 else max(1, int(self.batch_size))  # graphs with batch 1 baked in
        out = []
        for start in range(0, len(chips), step):
            batch = [np.ascontiguousarray(c[:, :, ::-1]) for c in chips[start:start + step]]  # RGB -> BGR
            out.append(np.asarray(model.get_feat(batch), dtype=np.float32).reshape(len(batch), -1))
        X = np.concatenate(out)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
