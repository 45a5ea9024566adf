"""Five landmarks for detectors that give only a box.

The embedders align faces with 5 points (eyes, nose, mouth corners). Box-only
detectors (the OpenCV cascade, whole-image crops) get the points where they sit
on average inside that detector's box. The layouts were measured on the LFW
eval set: RetinaFace landmarks relative to each box, median over 139-150 faces,
mirrored left/right into a symmetric layout.
"""

from __future__ import annotations

import numpy as np

from ..embedders.align import ARCFACE_112

# (x, y) as fractions of the box width/height, image-left eye first.
RETINAFACE_BOX = np.array([[0.2683, 0.3888], [0.7317, 0.3888], [0.5, 0.5874], [0.3057, 0.7389], [0.6943, 0.7389]], np.float32)
LBP_CASCADE_BOX = np.array([[0.3077, 0.3724], [0.6923, 0.3724], [0.5, 0.5928], [0.3364, 0.7596], [0.6636, 0.7596]], np.float32)
# A face crop aligned like InsightFace's 112x112 chips: the ArcFace template itself.
ARCFACE_CROP = (ARCFACE_112 / 112.0).astype(np.float32)


def landmarks_in_box(box, layout: np.ndarray) -> tuple[tuple[float, float], ...]:
    x1, y1, x2, y2 = (float(v) for v in box)
    pts = np.asarray(layout, np.float32) * [x2 - x1, y2 - y1] + [x1, y1]
    return tuple((float(x), float(y)) for x, y in pts)
