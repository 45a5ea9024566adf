"""instance=fused (the default whole-instance evidence): `appearance` and MobileNetV2 together.

Measured on the shared sets (issue 17, scripts/bench_instance.py): the hand-made HSV+HOG
descriptor and ImageNet MobileNetV2 features see different things (colour layout vs
shapes and parts), and together separate drawn characters best (anime dev pair AUC
0.934 against 0.801 and 0.845 alone). Per image the vector is the two unit vectors
side by side, [appearance | mobilenet], cached by content. The space a run clusters in
(`run_space`) is built from the run's own vectors: each block minus `centre` times the
mean block of the images being placed (the stream passes them as `reference`; a mixed
folder's clear-face photos would otherwise set the mean, and all its cartoon frames would
share what is left: measured on LFW + ORL + Simpsons together, all 420 frames in one
identity), re-normalised, weighted sqrt(appearance_weight) and
sqrt(1 - appearance_weight), concatenated (unit length). Centring on the run removes what
all its images share (style, palette, framing), which a fixed mean measured elsewhere
did not do (it did not transfer between sets). The instance stream then averages each
image with its `neighbours` - 1 nearest in that space (two_stream.neighbour_average); the
calibrated thresholds in conf/instance/fused.yaml hold for that space.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..inputs.images import NEUTRAL_BACKGROUND, load_image
from ..models.lazy import rethreaded
from .appearance import GREY_SHARE, AppearanceEmbedder, load_instance
from .mobilenet import MobileNetEmbedder


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class FusedEmbedder:
    """[appearance | MobileNetV2] per image; a run's space centres and weights the two blocks."""

    alignment = "none: the whole image (appearance: alpha or flat-background mask; MobileNetV2: 224x224)"
    normalisation = "each block L2-normalised; per run: minus `centre` x the run's mean, re-normalised, weighted"

    def __init__(self, appearance_weight: float = 0.3, centre: float = 1.0, neighbours: int = 4,
                 appearance: dict | None = None, mobilenet: dict | None = None, device: str = "cpu", threads: int = 0,
                 batch_size: int | None = None):
        if not 0.0 <= float(appearance_weight) <= 1.0:
            raise ConfigError(f"instance.appearance_weight must be in [0, 1], got {appearance_weight}")
        if not 0.0 <= float(centre) <= 1.0:
            raise ConfigError(f"instance.centre must be in [0, 1], got {centre}")
        self.appearance_weight, self.centre = float(appearance_weight), float(centre)
        # The run's space averages each image with its neighbours (clustering.two_stream.neighbour_average).
        self.neighbours = max(1, int(neighbours))
        try:
            self.appearance = AppearanceEmbedder(**(appearance or {}))
            self.mobilenet = MobileNetEmbedder(**{"device": device, "threads": threads, "batch_size": batch_size,
                                                  **(mobilenet or {})})
        except TypeError as e:
            raise ConfigError(f"instance: {e}") from None
        self.device, self.threads = device, threads

    @property
    def batch_size(self) -> int:
        return self.mobilenet.batch_size

    @property
    def split(self) -> int:
        """Where the MobileNetV2 block starts."""
        return self.appearance.dim

    @property
    def dim(self) -> int:
        return self.appearance.dim + self.mobilenet.dim

    @property
    def model_id(self) -> str:
        return f"fused:{self.appearance.model_id}+{self.mobilenet.model_id}"

    @property
    def params(self) -> dict:
        # Only what the per-image vector depends on: the weight and centring act on the run's space.
        return {"appearance": self.appearance.params, "mobilenet": self.mobilenet.params}

    def load(self, path: str | Path):
        """(RGB + mask for the appearance block, RGB on MobileNetV2's background): one decode when the
        two backgrounds agree (both grey by default)."""
        rgb, mask = load_instance(path)
        if self.mobilenet.background == NEUTRAL_BACKGROUND:
            return rgb, mask, rgb
        return rgb, mask, load_image(path, self.mobilenet.background)

    def embed_instances(self, items) -> np.ndarray:
        if not len(items):
            return np.zeros((0, self.dim), np.float32)
        A = self.appearance.embed_instances([(rgb, mask) for rgb, mask, _ in items])
        M = self.mobilenet.embed([im for _, _, im in items])
        return np.hstack([A, M]).astype(np.float32)

    def run_space(self, V: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The run's space; centred on the mean of the `reference` rows (a mask; None: all rows)."""
        V = np.asarray(V, dtype=np.float64)
        ref = np.ones(len(V), bool) if reference is None else np.asarray(reference, bool)
        if not ref.any():
            ref = np.ones(len(V), bool)
        blocks = []
        for block, weight in ((V[:, :self.split], self.appearance_weight), (V[:, self.split:], 1.0 - self.appearance_weight)):
            if len(block) and self.centre:
                block = block - self.centre * block[ref].mean(axis=0)
            blocks.append(np.sqrt(weight) * _unit(block))
        return np.hstack(blocks)

    def grey(self, V: np.ndarray) -> np.ndarray:
        """Which vectors describe an image without colour (read from the appearance block)."""
        return np.array([self.appearance.grey_share(v[:self.split]) >= GREY_SHARE for v in V], dtype=bool)

    def with_threads(self, threads: int) -> "FusedEmbedder":
        """A copy whose MobileNetV2 runs on `threads` threads (its own session); this one is unchanged."""
        clone = copy.copy(self)
        clone.mobilenet, clone.threads = rethreaded(self.mobilenet, threads), threads
        return clone
