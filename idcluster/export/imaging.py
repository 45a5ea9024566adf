"""Image preparation for training sets: resize the long side, pad to a square, keep or composite alpha."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageColor, ImageOps

from ..errors import ConfigError
from ..inputs.images import NEUTRAL_BACKGROUND

SQUARE = ("none", "pad")
# Formats sd-scripts reads as they are (anything else is written as PNG).
TRAINER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


@dataclass(frozen=True)
class Sizing:
    target_size: int | None = None  # long side in px
    upscale: bool = True
    square: str = "none"
    background: str = "keep"  # keep | a colour name or #rrggbb

    def __post_init__(self):
        if self.target_size is not None and (not isinstance(self.target_size, int) or self.target_size < 8):
            raise ConfigError(f"export.target_size must be an integer >= 8 or null, got {self.target_size!r}")
        if self.square not in SQUARE:
            raise ConfigError(f"export.square must be one of {', '.join(SQUARE)}, got {self.square!r}")
        if self.background != "keep":
            self.colour()

    def colour(self) -> tuple[int, int, int]:
        try:
            return ImageColor.getrgb(self.background)[:3]
        except ValueError:
            raise ConfigError(f"export.background must be keep, a colour name or #rrggbb, got {self.background!r}") from None

    def new_size(self, w: int, h: int) -> tuple[int, int]:
        if self.target_size is None:
            return w, h
        long = max(w, h)
        if long == self.target_size or (long < self.target_size and not self.upscale):
            return w, h
        s = self.target_size / long
        return max(1, round(w * s)), max(1, round(h * s))

    def unchanged(self, w: int, h: int, has_alpha: bool) -> bool:
        """True when the source can be copied as it is (no resize, pad or composite)."""
        return (self.new_size(w, h) == (w, h) and (self.square == "none" or w == h)
                and not (has_alpha and self.background != "keep"))


def open_image(path: str | Path) -> Image.Image:
    """The image as RGB or RGBA (alpha kept), EXIF orientation applied."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if not alpha and im.mode not in ("RGB", "L", "P", "CMYK", "YCbCr", "1"):
            from ..inputs.images import pil_to_rgb  # high bit depth: scaled, not clipped

            return Image.fromarray(pil_to_rgb(im))
        return im.convert("RGBA" if alpha else "RGB")


def prepare(im: Image.Image, sizing: Sizing) -> Image.Image:
    """Composite (background != keep), resize the long side (area down, Lanczos up), pad to a square."""
    if im.mode == "RGBA" and sizing.background != "keep":
        bg = Image.new("RGBA", im.size, sizing.colour() + (255,))
        im = Image.alpha_composite(bg, im).convert("RGB")
    w, h = im.size
    nw, nh = sizing.new_size(w, h)
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if nw < w else cv2.INTER_LANCZOS4
        im = Image.fromarray(cv2.resize(np.asarray(im), (nw, nh), interpolation=interp), im.mode)
    if sizing.square == "pad" and nw != nh:
        side = max(nw, nh)
        if im.mode == "RGBA":
            fill = (0, 0, 0, 0)
        else:
            fill = NEUTRAL_BACKGROUND if sizing.background == "keep" else sizing.colour()
        canvas = Image.new(im.mode, (side, side), fill)
        canvas.paste(im, ((side - nw) // 2, (side - nh) // 2))
        im = canvas
    return im
