"""embedder=appearance: an offline, deterministic descriptor of a whole instance.

For drawn and animated characters identity is carried by the design (hair
colour, clothes, accessories) more than by a face. The descriptor is:

- a foreground mask: the alpha channel where the file has one (SAM-style RGBA
  instance crops), else the flat background found along the border (crops
  pasted on one colour; also the neutral grey that images.load_image
  composites alpha onto), else the whole image;
- colour layout: hue x saturation histograms (plus a few grey bins for
  unsaturated pixels, by lightness) of the foreground in horizontal bands
  (head, torso, legs) and of the whole instance, Hellinger-mapped (square root
  of the normalised histogram, so a dot product is the Bhattacharyya
  coefficient);
- texture: a HOG of the greyscale instance (scikit-image).

Blocks are weighted, concatenated and L2-normalised. No model, a few ms per
image. `describe(rgb, mask)` is the pure function; the class is the embedder
protocol (align = crop of the detected box, so with detector=none the whole
image, and it also feeds the faceless-assignment stage, idcluster.evidence.instance).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..inputs.images import ImageDecodeError, load_image
from ..records import Face

VERSION = "appearance-v1"
GREY_SHARE = 0.95  # an instance this much without colour counts as a grey image


def foreground_mask(rgb: np.ndarray, tolerance: float = 12.0, min_border_share: float = 0.6) -> np.ndarray:
    """Boolean mask of the instance on a flat background, all True when the border is not flat.

    The background colour is the median of the border pixels; it counts as flat when
    at least `min_border_share` of the border lies within `tolerance` (RGB distance).
    """
    h, w = rgb.shape[:2]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    if (np.linalg.norm(border - bg, axis=1) <= tolerance).mean() < min_border_share:
        return np.ones((h, w), bool)
    mask = np.linalg.norm(rgb.astype(np.float32) - bg, axis=2) > tolerance
    if mask.mean() < 0.05:  # almost nothing left: a flat image, not a cut-out
        return np.ones((h, w), bool)
    return mask


def load_instance(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """RGB array and foreground mask of an instance file (alpha where present)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            alpha = np.asarray(im.convert("RGBA"))[:, :, 3] if has_alpha else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None
    rgb = load_image(path)
    if alpha is not None and (alpha > 127).mean() > 0.02:
        return rgb, alpha > 127
    return rgb, foreground_mask(rgb)


def _hs_hist(hsv: np.ndarray, mask: np.ndarray, h_bins: int, s_bins: int, grey_bins: int) -> np.ndarray:
    """Hue x saturation histogram of saturated pixels plus lightness bins of grey ones."""
    h, s, v = hsv[..., 0][mask], hsv[..., 1][mask], hsv[..., 2][mask]
    colour = (s >= 40) & (v >= 40)
    hist = np.zeros(h_bins * s_bins + grey_bins, np.float64)
    if colour.any():
        hi = np.minimum((h[colour].astype(np.int32) * h_bins) // 180, h_bins - 1)
        si = np.minimum(((s[colour].astype(np.int32) - 40) * s_bins) // 216, s_bins - 1)
        np.add.at(hist, hi * s_bins + si, 1.0)
    grey = ~colour
    if grey.any():
        vi = np.minimum((v[grey].astype(np.int32) * grey_bins) // 256, grey_bins - 1)
        np.add.at(hist, h_bins * s_bins + vi, 1.0)
    total = hist.sum()
    return np.sqrt(hist / total) if total else hist


def describe(rgb: np.ndarray, mask: np.ndarray | None = None, size: int = 96, bands: int = 3,
             h_bins: int = 12, s_bins: int = 2, grey_bins: int = 4, hog_weight: float = 1.5) -> np.ndarray:
    """The appearance vector of one instance (float32, unit length)."""
    from skimage.feature import hog

    if mask is None:
        mask = np.ones(rgb.shape[:2], bool)
    img = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    if m.sum() < 16:
        m = np.ones_like(m)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # H in [0, 180)
    blocks = [_hs_hist(hsv, m, h_bins, s_bins, grey_bins)]
    # Bands over the foreground's own vertical extent, so head/torso/legs line up across crops.
    rows = np.flatnonzero(m.any(axis=1))
    top, bottom = rows[0], rows[-1] + 1
    edges = np.linspace(top, bottom, bands + 1).round().astype(int)
    for a, b in zip(edges[:-1], edges[1:]):
        band = np.zeros_like(m)
        band[a:max(b, a + 1)] = True
        blocks.append(_hs_hist(hsv, m & band, h_bins, s_bins, grey_bins) / np.sqrt(bands))
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey[~m] = grey[m].mean()
    texture = hog(grey, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2), feature_vector=True)
    texture = texture / max(np.linalg.norm(texture), 1e-12)
    blocks.append(hog_weight * texture)
    x = np.concatenate(blocks).astype(np.float32)
    return x / max(float(np.linalg.norm(x)), 1e-12)


def grey_share(vector: np.ndarray, h_bins: int = 12, s_bins: int = 2, grey_bins: int = 4) -> float:
    """Share of the instance's pixels without colour, read back from the whole-instance histogram block."""
    n = h_bins * s_bins
    block = vector[:n + grey_bins].astype(np.float64)
    total = float(block @ block)
    return float(block[n:] @ block[n:]) / total if total else 1.0


class AppearanceEmbedder:
    """The embedder protocol over `describe`: align crops the detected box (the whole
    image with detector=none); the mask is the flat-background mask of the crop
    (alpha was composited onto a flat grey by load_image, so it is found again)."""

    alignment = "none: the detected box (whole image with detector=none), resized to size x size"
    normalisation = "HSV histograms (Hellinger) in horizontal bands + HOG, L2-normalised"

    def __init__(self, size: int = 96, bands: int = 3, h_bins: int = 12, s_bins: int = 2, grey_bins: int = 4,
                 hog_weight: float = 1.5, device: str = "cpu"):
        self.size, self.bands, self.h_bins, self.s_bins, self.grey_bins = size, bands, h_bins, s_bins, grey_bins
        self.hog_weight = hog_weight
        self.device = device  # no model: runs on the CPU whatever the device

    @property
    def params(self) -> dict:
        return {"size": self.size, "bands": self.bands, "h_bins": self.h_bins, "s_bins": self.s_bins,
                "grey_bins": self.grey_bins, "hog_weight": self.hog_weight}

    @property
    def model_id(self) -> str:
        return VERSION

    @property
    def input_size(self) -> int:
        return self.size

    @property
    def dim(self) -> int:
        return len(self.describe(np.zeros((8, 8, 3), np.uint8)))

    def describe(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return describe(rgb, mask, **self.params)

    def grey_share(self, vector: np.ndarray) -> float:
        return grey_share(vector, self.h_bins, self.s_bins, self.grey_bins)

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = face.box
        x1, y1 = max(int(x1), 0), max(int(y1), 0)
        x2, y2 = min(int(round(x2)), w), min(int(round(y2)), h)
        crop = image[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else image
        return np.ascontiguousarray(crop)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not len(chips):
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.describe(c, foreground_mask(c)) for c in chips])

    # ---------------------------------------------------------------- as the instance stream (instance=appearance)

    batch_size = 1  # no model: one image at a time

    def load(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """The whole image and its foreground mask (alpha channel where present)."""
        return load_instance(path)

    def embed_instances(self, items: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        if not len(items):
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.describe(rgb, mask) for rgb, mask in items])

    def run_space(self, V: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The space a run clusters in: the unit vectors themselves (cosine)."""
        return np.asarray(V, dtype=np.float64)

    def grey(self, V: np.ndarray) -> np.ndarray:
        """Which vectors describe an image without colour (their descriptor is texture only)."""
        return np.array([self.grey_share(v) >= GREY_SHARE for v in V], dtype=bool)
