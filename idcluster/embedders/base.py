"""What an embedder is (the Protocol the pipeline relies on) and the base its model-holding members share.

An embedder turns a detected face into an identity vector: `align(image, face) -> chip`
(each embedder owns its alignment), `embed(chips) -> ndarray[n, dim]` (L2-normalised
float32, one forward pass for all chips where the model batches), `model_id` (name +
weights hash, part of the embed cache key) and `dim`; for reports and the README each
also says its `alignment` (template), `input_size` (chip side, px) and `normalisation`.
Embedders holding a loaded model derive from LazyModel: it is built on first use and
never pickled.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..models.lazy import LazyModel
from ..records import Face

__all__ = ["Embedder", "LazyModel"]


@runtime_checkable
class Embedder(Protocol):
    alignment: str
    normalisation: str

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def input_size(self) -> int: ...

    def align(self, image: np.ndarray, face: Face) -> np.ndarray: ...

    def embed(self, chips: list[np.ndarray]) -> np.ndarray: ...
