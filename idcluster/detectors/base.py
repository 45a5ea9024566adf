"""What a detector is (the Protocol the pipeline relies on) and the base its model-holding members share.

A detector finds faces: `detect(image) -> list[Face]` on an HxWx3 RGB uint8 image, most
confident (or largest) first, each with a box, 5 landmarks, a score and the detector's
name; `model_id` (name + weights hash) enters the detect cache key. Detectors holding a
loaded model derive from LazyModel: it is built on first use and never pickled.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..models.lazy import LazyModel
from ..records import Face

__all__ = ["Detector", "LazyModel"]


@runtime_checkable
class Detector(Protocol):
    @property
    def model_id(self) -> str: ...

    def detect(self, image: np.ndarray) -> list[Face]: ...
