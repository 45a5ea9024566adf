"""Decode any common image file into an 8-bit RGB array.

Pillow handles the formats (PNG, JPEG, WebP, BMP, PGM, TIFF, ...); this module
normalises what they decode to: EXIF orientation applied, greyscale and palette
expanded to RGB, alpha composited on a neutral grey, 16-bit scaled to 8-bit.

Two failures, kept apart because only one may be cached: the bytes are not an
image these decoders read (ImageDecodeError: the same every time, for the same
`decoders_id()`), or the file could not be read now (ImageReadError: an OSError
from the operating system, which may pass on the next run).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

# Neutral grey behind transparent pixels: neither black nor white, so instance
# crops with cut-out backgrounds do not look like dark/bright faces.
NEUTRAL_BACKGROUND = (128, 128, 128)

Image.MAX_IMAGE_PIXELS = 200_000_000  # allow large photos, still stop decompression bombs


class ImageDecodeError(Exception):
    """The file gives no pixels: not an image Pillow can decode (or, as ImageReadError, not readable now)."""


class ImageReadError(ImageDecodeError):
    """Reading the file failed (missing, no permission, I/O error): it may succeed next time."""


@lru_cache(maxsize=1)
def decoders_id() -> str:
    """The decoders of this process (Pillow's version and the formats it opens): a file these
    failed to decode fails again under the same id, and may decode under another."""
    Image.init()  # registers every plugin Pillow has, as a failed Image.open would
    formats = ",".join(sorted(Image.OPEN))
    return f"Pillow {PIL.__version__} {hashlib.sha256(formats.encode()).hexdigest()[:12]}"


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        hi = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
    # 16/32-bit integers (16-bit PNG/TIFF/PGM decode as I;16 or I): scale by the
    # 16-bit range, whatever the byte order; wider values by their maximum.
    hi = max(65535, int(arr.max(initial=0)))
    return np.clip(arr.astype(np.float64) / hi * 255.0, 0, 255).astype(np.uint8)


def load_image(path: str | Path, background: tuple[int, int, int] = NEUTRAL_BACKGROUND) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array (transparency composited on `background`), or raise
    ImageDecodeError (ImageReadError: try again later)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return pil_to_rgb(im, background)
    except OSError as e:
        # The operating system's errors carry an errno; Pillow's own "not an image",
        # "truncated" or "broken data stream" OSErrors do not.
        error = ImageReadError if e.errno is not None and not isinstance(e, UnidentifiedImageError) else ImageDecodeError
        raise error(f"{type(e).__name__}: {e}") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None


def pil_to_rgb(im: Image.Image, background: tuple[int, int, int] = NEUTRAL_BACKGROUND) -> np.ndarray:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, tuple(background) + (255,))
        return np.asarray(Image.alpha_composite(bg, im).convert("RGB"))
    if im.mode in ("RGB", "L", "P", "CMYK", "YCbCr", "1", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))
    # High bit depth modes (I;16, I;16B, I, F): scale to 8 bits ourselves,
    # Pillow's convert("L") clips instead of scaling.
    arr = _to_uint8(np.asarray(im))
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])
