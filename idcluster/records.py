"""Typed records that flow between pipeline stages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Reason codes for images that end in noise/. Every input image keeps its row.
UNREADABLE = "unreadable"
NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
BLURRY = "blurry"
FACE_OUT_OF_DOMAIN = "face_out_of_domain"  # the face embedder cannot place this face (a drawn face, a human-face model)
CLUSTER_NOISE = "cluster_noise"


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: tuple[tuple[float, float], ...]  # 5 points: eyes, nose, mouth corners (image left first)
    score: float
    detector: str | None = None  # which detector found it (provenance; detector=auto tries several)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Longer side of the box (RetinaFace boxes run brow to chin): what min_face_size compares."""
        return max(self.width, self.height)

    def landmarks_array(self) -> np.ndarray:
        return np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2)

    def to_dict(self) -> dict:
        d = {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 5),
        }
        if self.detector is not None:
            d["detector"] = self.detector
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Face":
        return cls(
            box=tuple(float(v) for v in d["box"]),
            landmarks=tuple((float(x), float(y)) for x, y in d["landmarks"]),
            score=float(d["score"]),
            detector=d.get("detector"),
        )


@dataclass
class ImageRecord:
    """One row per input image, from scan to export; never dropped."""

    path: str  # absolute source path
    rel_path: str  # path relative to input_dir (stable id in outputs)
    size: int
    sha256: str | None = None  # None when the file could not be read
    width: int | None = None
    height: int | None = None
    faces: list[Face] = field(default_factory=list)
    face_index: int | None = None  # which face stands for the image's identity
    blur: float | None = None
    reason: str | None = None  # why the image is noise before clustering (see codes above)
    detail: str | None = None  # human-readable detail for the reason
    embedding_row: int | None = None  # row of the chosen face in the embedding matrix
    face_rows: dict[int, int] = field(default_factory=dict)  # face index -> row (several with faces.select=all)
    face_labels: dict[int, int] = field(default_factory=dict)  # face index -> cluster
    label: int = -1
    probability: float = 0.0
    evidence: str | None = None  # what placed it in its identity: face | appearance (whole instance) | seed | track
    evidence_score: float | None = None  # how strongly (face: cluster membership; appearance: similarity)
    links: dict[str, str] = field(default_factory=dict)  # seed name, video track, source frame (constraint sources)

    @property
    def face(self) -> Face | None:
        return None if self.face_index is None else self.faces[self.face_index]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["faces"] = [f.to_dict() for f in self.faces]
        return d
