"""A labelled instance folder built from real photos that ship inside the insightface wheel.

insightface/data/images/t1.jpg holds six people and Tom_Hanks_54745.png one
portrait: each face is cropped with head-and-shoulders margin (like an instance
crop) and varied by deterministic augmentations, so the identities are known.
Used by `idcluster demo` and by the tests.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from ..errors import ModelError
from ..inputs.images import load_image

# (name, function) pairs; each is applied to every identity's base crop
# ("rot" turns the other way for every second identity, so variants differ between people).
AUGMENTATIONS = (
    ("orig", lambda im: im),
    ("flip", lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    ("small", lambda im: im.resize((round(im.width * 0.75), round(im.height * 0.75)), Image.Resampling.LANCZOS)),
    ("large", lambda im: im.resize((round(im.width * 1.4), round(im.height * 1.4)), Image.Resampling.BICUBIC)),
    ("jpeg", lambda im: Image.open(_jpeg_bytes(im, 30)).convert("RGB")),
    ("dark", lambda im: ImageEnhance.Brightness(im).enhance(0.65)),
    ("bright", lambda im: ImageEnhance.Brightness(im).enhance(1.35)),
    ("rot", lambda im: im.rotate(10, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(128, 128, 128))),
)
FORMATS = ("png", "jpg", "webp")


def _jpeg_bytes(im: Image.Image, quality: int) -> io.BytesIO:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return buf


def insightface_image(name: str) -> Path:
    try:
        path = Path(str(resources.files("insightface").joinpath("data/images", name)))
    except ModuleNotFoundError:
        raise ModelError("the demo needs the insightface package for its sample photos: pip install insightface") from None
    if not path.is_file():
        raise ModelError(f"sample photo missing from the insightface package: {path}")
    return path


def _crop(image: np.ndarray, box, margin: float) -> Image.Image:
    x1, y1, x2, y2 = box
    m = margin * max(x2 - x1, y2 - y1)
    h, w = image.shape[:2]
    l, t = int(max(0, x1 - m)), int(max(0, y1 - m))
    r, b = int(min(w, x2 + m)), int(min(h, y2 + 1.5 * m))  # more room below: shoulders
    return Image.fromarray(image[t:b, l:r])


def base_crops(detector) -> dict[str, Image.Image]:
    """One head-and-shoulders crop per person in the shipped photos, keyed by identity."""
    crops: dict[str, Image.Image] = {}
    group = load_image(insightface_image("t1.jpg"))
    faces = sorted(detector.detect(group), key=lambda f: f.box[0])  # left to right
    for k, face in enumerate(faces):
        crops[f"t1_person_{k + 1}"] = _crop(group, face.box, 0.6)
    crops["tom_hanks"] = Image.fromarray(load_image(insightface_image("Tom_Hanks_54745.png")))
    return crops


def build_demo_set(root: Path, detector, augmentations=AUGMENTATIONS) -> tuple[Path, dict[str, str]]:
    """Write `<root>/instances/img_NNN.<ext>` and `<root>/labels.csv`; return (folder, truth)."""
    instances = root / "instances"
    instances.mkdir(parents=True, exist_ok=True)
    items = []
    for ident_no, (identity, crop) in enumerate(sorted(base_crops(detector).items())):
        for aug, fn in augmentations:
            im = fn(crop.rotate(-10, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))) if (aug == "rot" and ident_no % 2) else fn(crop)
            items.append((identity, aug, im))
    # Shuffle deterministically so file order says nothing about identity.
    order = np.random.default_rng(0).permutation(len(items))
    truth: dict[str, str] = {}
    for n, idx in enumerate(order):
        identity, aug, im = items[idx]
        ext = FORMATS[n % len(FORMATS)]
        name = f"img_{n:03d}.{ext}"
        im.convert("RGB").save(instances / name, quality=92) if ext != "png" else im.save(instances / name)
        truth[name] = identity
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["relative_path", "identity"])
        w.writerows(sorted(truth.items()))
    return instances, truth
