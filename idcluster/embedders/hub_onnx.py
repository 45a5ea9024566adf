"""CCIP and CLIP: learned whole-instance embedders, ONNX files from the Hugging Face hub.

Both describe a whole image (one character instance), never a face crop: they are
instance models (`whole_instance = True`); as `instance=ccip|clip` they are the
whole-instance stream, and as `embedder=ccip|clip` they take every image there too
(pipeline.stages: the face stream then embeds nothing). Each preprocesses exactly as
its reference does, with PIL:

- `ccip`: DeepGHS CCIP (anime character similarity), `deepghs/ccip_onnx`, one folder
  per model (`<model>/model_feat.onnx`, `<model>/model_metrics.onnx`,
  `<model>/metrics.json`). Reference: imgutils `metrics/ccip.py` +
  `data/image.py`: `load_image(..., mode='RGB', force_background='white')` (a
  transparent image pasted on white with its alpha as the mask), PIL
  `resize((384, 384), BILINEAR)`, /255, CLIP mean/std, NCHW input `input`, output
  `output` [n, 768]. Same character when the comparator `model_metrics.onnx` gives a
  difference <= metrics.json's `threshold`; `distance_threshold` is the cosine
  distance at which the comparator reaches that threshold (found on the comparator
  itself and checked against it, so clustering on cosine decides as CCIP does).
  metrics.json and the comparator are needed only for that threshold.
- `clip`: OpenAI CLIP ViT-B/32's vision tower as exported for transformers.js
  (`Xenova/clip-vit-base-patch32`: `onnx/vision_model.onnx`, input `pixel_values`,
  output `image_embeds`). Reference: the repo's preprocessor_config.json through
  transformers' CLIPImageProcessor: convert to RGB (transparency dropped, as
  `Image.convert('RGB')`), shortest side to 224 with PIL bicubic (the long side
  `int(224 * long / short)`), centre crop 224 (offset `(size - 224) // 2`), /255,
  CLIP mean/std.

`background` is each model's composite colour for transparent pixels ('#ffffff' for
CCIP as its reference; null for CLIP: the alpha channel is dropped as its reference
does); it is part of the model id, so the cached vectors follow it. EXIF orientation is
applied before (the image as its viewer sees it; the references do not rotate).

Lookup (DESIGN.md; `models.lookup.find_hub_files`): `model_dir` (an explicit folder
holding the files), then the local Hugging Face cache, then a download after a
reachability probe; offline, one ModelError line naming `model_dir` and the offline
options. Batched (`batch_size`); `device=cuda` takes onnxruntime's CUDA provider where
installed, else runs on CPU with one warning (runtime.onnx_providers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import ModelError
from ..inputs.images import ImageDecodeError
from ..models.lookup import find_hub_files
from ..models.runtime import check_device, onnx_session
from ..models.weights import file_sha256
from ..records import Face
from .base import LazyModel
from .mobilenet import parse_colour

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def parse_background(value) -> tuple[int, int, int] | None:
    """A composite colour ('#rrggbb', 'white', three ints), or None: drop the alpha channel."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    if isinstance(value, str) and value.strip().lower() in ("white", "black"):
        return (255, 255, 255) if value.strip().lower() == "white" else (0, 0, 0)
    return parse_colour(value)


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info


def to_rgb(im: Image.Image, background: tuple[int, int, int] | None) -> Image.Image:
    """RGB with transparent pixels on `background` (pasted with the alpha as the mask, as imgutils
    does), or with the alpha channel dropped (background None, as `Image.convert('RGB')`)."""
    if background is not None and has_alpha(im):
        rgba = im.convert("RGBA")
        out = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        out.paste(rgba, (0, 0), mask=rgba)
        return out.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


class HubOnnxEmbedder(LazyModel):
    """Shared lookup, loading and batching; subclasses set the files, the input and preprocess()."""

    _loaded = ("_session",)
    whole_instance = True  # the whole image, never a face crop (pipeline.stages routes it to the instance stream)

    repo_id: str
    id_prefix: str
    input_size: int
    input_name: str
    default_background: str | None
    alignment = "none: the whole image (a detected box only when saving face chips)"

    def __init__(self, model: str, model_dir: str | None = None, batch_size: int = 16, download: bool = True,
                 device: str = "cpu", threads: int = 0, background: str | None = "default"):
        self.model, self.model_dir, self.batch_size = model, model_dir, max(1, int(batch_size))
        self.download, self.device, self.threads = download, check_device(device), threads
        self.background = parse_background(self.default_background if background == "default" else background)
        self._paths: dict[str, Path] = {}

    # ---------------------------------------------------------------- files

    def files(self) -> list[str]:
        """The files embedding needs (hub paths)."""
        raise NotImplementedError

    def path(self, hub_file: str) -> Path:
        if hub_file not in self._paths:
            self._paths[hub_file] = find_hub_files(self.repo_id, [hub_file], self.model_dir, self._option("model_dir"),
                                                   self.download)[0]
        return self._paths[hub_file]

    @staticmethod
    def _option(key: str) -> str:
        return f"instance.{key} (embedder.{key} with embedder=ccip|clip)"

    @property
    def model_path(self) -> Path:
        return self.path(self.files()[0])

    @property
    def background_id(self) -> str:
        return "keep" if self.background is None else "%02x%02x%02x" % self.background

    @property
    def model_id(self) -> str:
        return f"{self.id_prefix}:{self.model}:{file_sha256(self.model_path)[:16]}:bg{self.background_id}"

    @property
    def params(self) -> dict:
        return {"background": self.background_id}

    def session(self):
        if self._session is None:
            path = self.model_path
            try:
                self._session = onnx_session(str(path), self.device, self.threads)
            except Exception as e:  # noqa: BLE001 - onnxruntime/protobuf errors on a bad file: one line
                raise ModelError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
        return self._session

    # ---------------------------------------------------------------- images

    def load(self, path: str | Path) -> Image.Image:
        """The file as this model's RGB input (ImageDecodeError if it gives no pixels)."""
        try:
            with Image.open(path) as im:
                return to_rgb(ImageOps.exif_transpose(im), self.background)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageDecodeError(f"{type(e).__name__}: {e}") from None

    def _pil(self, image) -> Image.Image:
        if isinstance(image, Image.Image):
            return to_rgb(image, self.background)
        arr = np.ascontiguousarray(image, dtype=np.uint8)
        return to_rgb(Image.fromarray(arr), self.background)  # 4 channels: RGBA

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """float32 [3, S, S] for one RGB image, as the reference computes it."""
        raise NotImplementedError

    def _output(self, outputs: list[np.ndarray], names: list[str]) -> np.ndarray:
        return outputs[0]

    def embed(self, images) -> np.ndarray:
        """[n, d] float32 unit rows for whole images (PIL images, or RGB/RGBA uint8 arrays)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            out.append(self._features(np.stack([self.preprocess(self._pil(im))
                                                for im in images[start:start + self.batch_size]])))
        if not out:
            return np.zeros((0, 0), np.float32)
        X = np.concatenate(out)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    embed_instances = embed  # the instance-stream name: items from load()

    def _features(self, batch: np.ndarray) -> np.ndarray:
        """The model's raw [n, d] features of a preprocessed NCHW batch."""
        sess = self.session()
        names = [o.name for o in sess.get_outputs()]
        y = np.asarray(self._output(sess.run(None, {self.input_name: batch.astype(np.float32)}), names), np.float32)
        if y.ndim == 3:  # token sequence: the class token
            y = y[:, 0]
        return y.reshape(len(batch), -1)

    def run_space(self, V: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The space the run clusters in: the unit vectors themselves (cosine, as the model compares)."""
        return np.asarray(V, dtype=np.float64)

    @property
    def dim(self) -> int:
        """The feature width, from one blank input tensor (no image: nothing counts as seen)."""
        s = self.input_size
        return int(self._features(np.zeros((1, 3, s, s), np.float32)).shape[1])

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The detected box (only for saving face chips: the model itself sees whole images)."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = face.box
        x1, y1, x2, y2 = max(int(x1), 0), max(int(y1), 0), min(int(round(x2)), w), min(int(round(y2)), h)
        return np.ascontiguousarray(image[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else image)


def clip_normalise(image: Image.Image) -> np.ndarray:
    """/255 then CLIP mean/std, HWC uint8 -> CHW float32."""
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return ((x - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]).astype(np.float32)


class CCIPEmbedder(HubOnnxEmbedder):
    repo_id, id_prefix, input_size, input_name = "deepghs/ccip_onnx", "ccip", 384, "input"
    default_background = "#ffffff"  # imgutils load_image(force_background='white')
    normalisation = "RGB (transparency on white), PIL bilinear to 384x384, /255, CLIP mean/std"

    _loaded = ("_session", "_comparator")

    def __init__(self, model: str = "ccip-caformer-24-randaug-pruned", **kw):
        super().__init__(model, **kw)
        self._distance: float | None = None

    def files(self) -> list[str]:
        return [f"{self.model}/model_feat.onnx"]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return clip_normalise(image.resize((self.input_size, self.input_size), resample=Image.BILINEAR))

    # ---------------------------------------------------------------- the model's own decision

    @property
    def threshold(self) -> float:
        """The model's same-character threshold on its comparator's difference (metrics.json)."""
        path = self.path(f"{self.model}/metrics.json")
        try:
            return float(json.loads(path.read_text())["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{path}: no readable 'threshold' ({type(e).__name__}: {e})") from None

    def comparator(self):
        if self._comparator is None:
            path = self.path(f"{self.model}/model_metrics.onnx")
            try:
                self._comparator = onnx_session(str(path), "cpu", 1)
            except Exception as e:  # noqa: BLE001 - a bad file: one line
                raise ModelError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
        return self._comparator

    def differences(self, X: np.ndarray) -> np.ndarray:
        """The comparator's [n, n] difference matrix of features X (model_metrics.onnx)."""
        sess = self.comparator()
        return np.asarray(sess.run(None, {sess.get_inputs()[0].name: np.asarray(X, np.float32)})[0], np.float64)

    @property
    def distance_threshold(self) -> float:
        """The cosine distance equivalent to the comparator at metrics.json's threshold.

        The comparator turns the cosine of two features into a difference (CCIP: exp(logit_scale)
        * cos, mapped to [0, 1]). The cosine where it reaches the threshold is found by bisection on
        pairs of unit vectors with a known cosine; then random pairs check that the comparator and
        the cosine decide alike (a comparator that is not a monotone function of the cosine alone is
        a ModelError: clustering on cosine would not decide as CCIP does).
        """
        if self._distance is None:
            self._distance = equivalent_cosine_distance(self.differences, self.threshold, self.dim)
        return self._distance


def _pair(cos: float, dim: int) -> np.ndarray:
    v = np.zeros((2, dim))
    v[0, 0] = 1.0
    v[1, 0], v[1, 1] = cos, np.sqrt(max(0.0, 1.0 - cos * cos))
    return v


def equivalent_cosine_distance(differences, threshold: float, dim: int, checks: int = 256, seed: int = 0) -> float:
    """Cosine distance d* with comparator(a, b) <= threshold exactly when 1 - cos(a, b) <= d*.

    `differences(X)` is the comparator ([n, d] features -> [n, n] differences)."""
    grid = np.linspace(-1.0, 1.0, 41)
    diffs = np.array([differences(_pair(c, dim))[0, 1] for c in grid])
    if np.any(np.diff(diffs) > 1e-6):
        raise ModelError("the CCIP comparator does not fall as the cosine rises: its threshold has no cosine equivalent")
    if threshold < diffs[-1] or threshold >= diffs[0]:
        raise ModelError(f"the CCIP threshold {threshold} is outside the comparator's range "
                         f"[{diffs[-1]:.4f}, {diffs[0]:.4f}]")
    lo, hi = -1.0, 1.0  # comparator(lo) > threshold >= comparator(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if differences(_pair(mid, dim))[0, 1] <= threshold:
            hi = mid
        else:
            lo = mid
    distance = 1.0 - hi
    # The proof on this model: random pairs (random norms, directions and cosines) decide alike.
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(checks, dim)) * rng.uniform(0.5, 3.0, size=(checks, 1))
    D = differences(X)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    cosine = 1.0 - U @ U.T
    margin = np.abs(cosine - distance) > 1e-4  # pairs right at the threshold may round either way
    if np.any(((D <= threshold) != (cosine <= distance)) & margin):
        raise ModelError("the CCIP comparator is not a function of the cosine alone: its threshold has no cosine equivalent")
    return float(distance)


class ClipEmbedder(HubOnnxEmbedder):
    repo_id, id_prefix, input_size, input_name = "Xenova/clip-vit-base-patch32", "clip", 224, "pixel_values"
    default_background = None  # transformers' convert_to_rgb: Image.convert('RGB') drops the alpha channel
    normalisation = "RGB, PIL bicubic shortest side to 224, centre crop 224, /255, CLIP mean/std"

    def __init__(self, model: str = "Xenova/clip-vit-base-patch32", file: str = "onnx/vision_model.onnx", **kw):
        super().__init__(model, **kw)
        self.repo_id, self.file = model, file

    def files(self) -> list[str]:
        return [self.file]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        s = self.input_size
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = s, int(s * long / short)  # transformers' get_resize_output_image_size
        size = (new_short, new_long) if w <= h else (new_long, new_short)  # PIL: (width, height)
        im = image.resize(size, resample=Image.BICUBIC)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        return clip_normalise(im.crop((left, top, left + s, top + s)))

    def _output(self, outputs, names):
        return outputs[names.index("image_embeds")] if "image_embeds" in names else outputs[0]
