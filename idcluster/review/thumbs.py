"""Face thumbnails for the review page: made once, cached by image content + face box.

They live in idcluster's cache folder (the run's recorded cache_dir), not the
output folder; a thumbnail is made on its first request, so opening a folder of
10,000 images costs only the crops on screen.
"""

from __future__ import annotations

import io

from PIL import Image

from ..cache.store import StageCache, cache_key
from ..inputs.images import ImageDecodeError, load_image

THUMBS = "review-thumbs-v1"
SIZE = 128  # px, square; shown at up to 128 css px
MARGIN = 0.25  # of the face box on every side: a little hair and chin


def thumb_key(sha256: str, box, size: int = SIZE) -> str:
    return cache_key("thumb", sha256, [round(float(v), 1) for v in box], size, MARGIN)


def _crop_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    l, t = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    return l, t, min(width, int(cx + side / 2)), min(height, int(cy + side / 2))


def face_thumbnail(cache: StageCache, path: str, sha256: str, box, size: int = SIZE) -> bytes | None:
    """JPEG bytes of a square crop around `box`; None where the image cannot be read."""
    key = thumb_key(sha256, box, size)
    cached = cache.get_bytes(THUMBS, key, "jpg")
    if cached is not None:
        return cached
    try:
        image = load_image(path)  # EXIF-rotated like the detector saw it
    except (ImageDecodeError, OSError):
        return None
    h, w = image.shape[:2]
    im = Image.fromarray(image).crop(_crop_box(box, w, h))
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    cache.put_bytes(THUMBS, key, "jpg", data)
    return data
