"""Choosing the face that stands for an image, and the quality filters."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError
from ..records import Face

SELECT_POLICIES = ("largest", "score", "all")


def select_face(faces: list[Face], policy: str = "largest") -> int | None:
    """Index of the face that represents the image, or None when there is none.

    largest: biggest box area, higher score on ties (an instance crop's subject
    is its largest face); score: most confident; all: every face is clustered,
    the largest stands for the image.
    """
    if policy not in SELECT_POLICIES:
        raise ConfigError(f"faces.select must be one of {', '.join(SELECT_POLICIES)}, got {policy!r}")
    if not faces:
        return None
    if policy == "score":
        return max(range(len(faces)), key=lambda i: faces[i].score)
    return max(range(len(faces)), key=lambda i: (round(faces[i].width * faces[i].height, 3), faces[i].score))


def blur_score(chip: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned face: low means blurry."""
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY) if chip.ndim == 3 else chip
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
