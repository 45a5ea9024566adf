"""embedder=ccip and embedder=clip: learned whole-instance embedders, ONNX files from the Hugging Face hub.

- `ccip`: DeepGHS CCIP (anime character similarity), `deepghs/ccip_onnx`, one
  folder per model (`<model>/model_feat.onnx`, `<model>/model_metrics.onnx`,
  `<model>/metrics.json` with the model's same-character threshold). We run
  the feature model: RGB resized to 384x384, /255, CLIP mean/std, NCHW.
- `clip`: OpenAI CLIP's vision tower as exported for transformers.js
  (`Xenova/clip-vit-base-patch32`: `onnx/vision_model.onnx`, input
  `pixel_values`, output `image_embeds`): shorter side to 224 (bicubic),
  centre crop 224, CLIP mean/std.

Lookup (DESIGN.md; `models.lookup.find_hub_files`): `model_dir` (an explicit folder holding the files), then
the local Hugging Face cache (huggingface_hub, local files only), then a
download from the hub after a reachability probe; offline, one ModelError line
naming `embedder.model_dir` and the offline embedders. Never a silent switch.
Batched (`batch_size`); `device=cuda` takes onnxruntime's CUDA provider where
installed, else runs on CPU with one warning (runtime.onnx_providers).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError
from ..models.lookup import find_hub_files
from ..records import Face
from ..models.runtime import onnx_session
from ..models.weights import file_sha256
from .base import LazyModel

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


class HubOnnxEmbedder(LazyModel):
    """Shared loading/batching; subclasses set repo_id, files(), id_prefix and preprocess()."""

    _loaded = ("_session",)

    repo_id: str
    id_prefix: str
    input_size: int
    alignment = "none: the detected box (whole image with detector=none)"

    def __init__(self, model: str, model_dir: str | None = None, batch_size: int = 16, download: bool = True,
                 device: str = "cpu", threads: int = 0):
        self.model, self.model_dir, self.batch_size = model, model_dir, batch_size
        self.download, self.device, self.threads = download, device, threads
        self._paths: list[Path] | None = None

    def files(self) -> list[str]:
        raise NotImplementedError

    def paths(self) -> list[Path]:
        if self._paths is None:
            self._paths = find_hub_files(self.repo_id, self.files(), self.model_dir, "embedder.model_dir", self.download)
        return self._paths

    @property
    def model_id(self) -> str:
        p = self.paths()[0]
        return f"{self.id_prefix}:{self.model}:{file_sha256(p)[:16]}"

    def session(self):
        if self._session is None:
            path = self.paths()[0]
            try:
                self._session = onnx_session(str(path), self.device, self.threads)
            except Exception as e:  # noqa: BLE001 - onnxruntime/protobuf errors on a bad file: one line
                raise ModelError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
        return self._session

    @property
    def dim(self) -> int:
        return int(self.embed([np.zeros((self.input_size, self.input_size, 3), np.uint8)]).shape[1])

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = face.box
        x1, y1, x2, y2 = max(int(x1), 0), max(int(y1), 0), min(int(round(x2)), w), min(int(round(y2)), h)
        return np.ascontiguousarray(image[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else image)

    def preprocess(self, chip: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _output(self, outputs: list[np.ndarray], names: list[str]) -> np.ndarray:
        return outputs[0]

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        sess = self.session()
        inp = sess.get_inputs()[0].name
        names = [o.name for o in sess.get_outputs()]
        out = []
        step = max(1, int(self.batch_size))
        for start in range(0, len(chips), step):
            batch = np.stack([self.preprocess(c) for c in chips[start:start + step]]).astype(np.float32)
            y = np.asarray(self._output(sess.run(None, {inp: batch}), names), np.float32)
            if y.ndim == 3:  # token sequence: the class token
                y = y[:, 0]
            out.append(y.reshape(len(batch), -1))
        if not out:
            return np.zeros((0, 0), np.float32)
        X = np.concatenate(out)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _clip_normalise(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float32) / 255.0
    return ((x - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)


class CCIPEmbedder(HubOnnxEmbedder):
    repo_id, id_prefix, input_size = "deepghs/ccip_onnx", "ccip", 384
    normalisation = "RGB resized to 384x384 (bilinear), /255, CLIP mean/std"

    def __init__(self, model: str = "ccip-caformer-24-randaug-pruned", **kw):
        super().__init__(model, **kw)

    def files(self) -> list[str]:
        return [f"{self.model}/model_feat.onnx", f"{self.model}/metrics.json"]

    @property
    def threshold(self) -> float | None:
        """The model's own same-character threshold (on its comparator's difference), from metrics.json."""
        try:
            return float(json.loads(self.paths()[1].read_text())["threshold"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def preprocess(self, chip: np.ndarray) -> np.ndarray:
        return _clip_normalise(cv2.resize(chip, (self.input_size, self.input_size), interpolation=cv2.INTER_LINEAR))


class ClipEmbedder(HubOnnxEmbedder):
    repo_id, id_prefix, input_size = "Xenova/clip-vit-base-patch32", "clip", 224
    normalisation = "shorter side to 224 (bicubic), centre crop 224, /255, CLIP mean/std"

    def __init__(self, model: str = "Xenova/clip-vit-base-patch32", file: str = "onnx/vision_model.onnx", **kw):
        super().__init__(model, **kw)
        self.repo_id, self.file = model, file

    def files(self) -> list[str]:
        return [self.file]

    def preprocess(self, chip: np.ndarray) -> np.ndarray:
        s = self.input_size
        h, w = chip.shape[:2]
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        im = cv2.resize(chip, (nw, nh), interpolation=cv2.INTER_CUBIC)
        top, left = (nh - s) // 2, (nw - s) // 2
        return _clip_normalise(im[top:top + s, left:left + s])

    def _output(self, outputs, names):
        return outputs[names.index("image_embeds")] if "image_embeds" in names else outputs[0]
