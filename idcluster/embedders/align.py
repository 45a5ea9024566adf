"""Similarity-transform alignment of 5 landmarks to a reference template."""

from __future__ import annotations

import cv2
import numpy as np

# InsightFace's ArcFace template for a 112x112 crop (eyes, nose, mouth corners).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def warp_to_template(image: np.ndarray, landmarks: np.ndarray, size: int, template: np.ndarray = ARCFACE_112) -> np.ndarray:
    """Crop of `size`x`size` with the landmarks moved onto `template` scaled from 112."""
    dst = template * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), dst, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks: fall back to the box-free least squares fit
        matrix = cv2.getAffineTransform(landmarks[:3].astype(np.float32), dst[:3])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
