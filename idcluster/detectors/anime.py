"""detector=anime: drawn (anime-style) faces with `animeface` (Apache-2.0, nagadomi's nvxs
detector; its MLP weights are compiled into the wheel's C extension, so it runs offline).

animeface 2.0.3's C extension reads Pillow's *internal* image struct with the
layout of the Pillow 4.2 headers it was built against. Current Pillow (13 here)
lays that struct out differently, so `animeface.detect(pil_image)` silently
reads garbage and finds nothing. We therefore call the extension with a struct
of the layout it expects, built with ctypes over our own RGBX buffer; the
extension only reads mode, xsize, ysize and the row pointers. Checked here:
on the same images this gives exactly the boxes and likelihoods that
animeface returns under Pillow 10.4 (whose struct still matches).

Landmarks come from the detector's own parts: eye box centres, the nose point,
and the mouth box's left/right edges at its vertical centre.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_char, c_int, c_ssize_t, c_void_p

import cv2
import numpy as np

from ..errors import ModelError
from ..records import Face
from ..models.weights import file_sha256


class _Imaging42(ctypes.Structure):
    """struct ImagingMemoryInstance of Pillow 4.2.1 (animeface's third_party/Pillow-4.2.1/libImaging/Imaging.h)."""

    _fields_ = [
        ("mode", c_char * 7), ("type", c_int), ("depth", c_int), ("bands", c_int),
        ("xsize", c_int), ("ysize", c_int), ("palette", c_void_p),
        ("image8", POINTER(c_void_p)), ("image32", POINTER(c_void_p)), ("image", POINTER(c_void_p)),
        ("block", c_void_p), ("pixelsize", c_int), ("linesize", c_int), ("destroy", c_void_p),
    ]


class _ImagingObject(ctypes.Structure):
    """The PyObject the extension casts its argument to: PyObject_HEAD, then the Imaging pointer."""

    _fields_ = [("ob_refcnt", c_ssize_t), ("ob_type", c_void_p), ("image", POINTER(_Imaging42)), ("access", c_void_p)]


def _nvxs():
    try:
        from animeface import _nvxs
    except ImportError:
        raise ModelError("detector=anime needs the animeface package: pip install animeface") from None
    if not getattr(_nvxs, "__file__", "").endswith((".so", ".pyd")):
        raise ModelError("animeface's C extension is missing (no prebuilt wheel for this platform?): "
                         "reinstall with pip install --force-reinstall animeface")
    return _nvxs


def animeface_detect(rgb: np.ndarray) -> list[dict]:
    """animeface's raw results for an HxWx3 RGB uint8 image (see module docstring)."""
    nvxs = _nvxs()
    h, w = rgb.shape[:2]
    buf = np.zeros((h, w, 4), np.uint8)  # Pillow's RGB rows are 4 bytes a pixel (RGBX)
    buf[..., :3] = rgb
    rows = (c_void_p * h)(*[buf.ctypes.data + y * w * 4 for y in range(h)])
    rows_p = ctypes.cast(rows, POINTER(c_void_p))
    im = _Imaging42(mode=b"RGB", type=0, depth=8, bands=3, xsize=w, ysize=h,
                    image32=rows_p, image=rows_p, pixelsize=4, linesize=w * 4)
    # A huge refcount: the fake object is never deallocated by Python.
    obj = _ImagingObject(ob_refcnt=1 << 40, ob_type=id(object), image=ctypes.pointer(im))
    fake = ctypes.cast(ctypes.addressof(obj), ctypes.py_object).value
    try:
        return nvxs.detect(fake)
    finally:
        del fake


class AnimeFaceDetector:
    def __init__(self, score_threshold: float = 0.5, upscale_to: int = 128, max_size: int = 1024):
        self.score_threshold = score_threshold
        self.upscale_to = upscale_to  # its smallest window is ~43 px: small images are enlarged first
        self.max_size = max_size

    @property
    def model_id(self) -> str:
        return f"animeface-nvxs:{file_sha256(__import__('pathlib').Path(_nvxs().__file__))[:16]}"

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        scale = 1.0
        if max(h, w) < self.upscale_to:
            scale = self.upscale_to / max(h, w)
        elif max(h, w) > self.max_size:
            scale = self.max_size / max(h, w)
        if scale != 1.0:
            interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=interp)
        faces = []
        for r in animeface_detect(np.ascontiguousarray(image)):
            if r["likelihood"] < self.score_threshold:
                continue
            x, y, bw, bh = r["face_box"]
            eyes = sorted(
                [(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in (r["left_eye_box"], r["right_eye_box"])]
            )
            mx, my, mw, mh = r["mouth_box"]
            pts = [*eyes, tuple(r["nose_point"]), (mx, my + mh / 2), (mx + mw, my + mh / 2)]
            faces.append(Face(
                box=(x / scale, y / scale, (x + bw) / scale, (y + bh) / scale),
                landmarks=tuple((float(px) / scale, float(py) / scale) for px, py in pts),
                score=float(r["likelihood"]),
                detector="anime",
            ))
        faces.sort(key=lambda f: -f.score)
        return faces
