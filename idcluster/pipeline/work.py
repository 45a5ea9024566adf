"""The per-image work every runner executes: decode, detect, choose faces, align, embed.

Typed seams between the pipeline and its runners:

- `ImageStages`: what the work needs (constructed detector and embedder, the face choice);
  `for_workers()` is the copy a runner ships to other processes;
- `WorkItem`: one image to process, with what the cache already holds for it;
- `WorkResult`: what processing it gave (`Detection`, `FaceEmbedding`s, seconds per step).

`work_batch(stages, items)` is the unit: it reads only the images and the components,
and its results reach the content cache through the driver (stages.detect_and_embed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .. import records as R
from ..inputs.images import ImageDecodeError, ImageReadError, decoders_id, load_image
from ..models.lazy import rethreaded
from ..records import Face, ImageRecord
from .faces import blur_score, select_face


@dataclass(frozen=True)
class Detection:
    """What decoding and detecting one image gave: its size and faces, or why it has no pixels."""

    faces: tuple[Face, ...] = ()
    width: int = 0
    height: int = 0
    error: str | None = None  # set: the image could not be decoded (or read)
    # The decoders that failed on it (inputs.images.decoders_id): a cached failure holds only
    # for them, so a Pillow with a new format plugin tries again. None: a read error (OSError),
    # which may pass next time and is never cached.
    decoders: str | None = None

    @classmethod
    def found(cls, faces: list[Face], shape) -> "Detection":
        # Faces pass through their cache form (rounded), so a fresh run embeds exactly
        # what a cached run reads back.
        return cls(tuple(Face.from_dict(f.to_dict()) for f in faces), int(shape[1]), int(shape[0]))

    @property
    def cacheable(self) -> bool:
        """Only deterministic outcomes are cached: faces, or a decode failure of these decoders."""
        return self.error is None or self.decoders is not None

    @property
    def current(self) -> bool:
        """False for a cached decode failure of other decoders than this process has (try again)."""
        return self.error is None or self.decoders == decoders_id()

    def to_entry(self) -> dict:
        """The detect cache entry (its JSON format is the cache's: keep it stable)."""
        if self.error is not None:
            return {"error": self.error, "decoders": self.decoders}
        return {"faces": [f.to_dict() for f in self.faces], "width": self.width, "height": self.height}

    @classmethod
    def from_entry(cls, entry: dict) -> "Detection":
        if entry.get("error"):
            return cls(error=entry["error"], decoders=entry.get("decoders"))
        return cls(tuple(Face.from_dict(f) for f in entry["faces"]), entry["width"], entry["height"])

    def apply(self, rec: ImageRecord) -> None:
        if self.error is not None:
            rec.reason, rec.detail = R.UNREADABLE, self.error
            return
        rec.width, rec.height = self.width, self.height
        rec.faces = list(self.faces)


@dataclass(frozen=True)
class FaceEmbedding:
    vector: np.ndarray  # L2-normalised
    blur: float  # variance of the Laplacian of the aligned chip


@dataclass(frozen=True)
class WorkItem:
    """One image to process: detect unless `detection` is cached, then embed `embed_faces`."""

    index: int  # the record's position in the run
    path: str
    detection: Detection | None = None  # cached; None: decode and detect
    embed: bool = False  # the run embeds (an embedder is set)
    embed_faces: tuple[int, ...] | None = None  # faces still to embed; None: choose after detecting


@dataclass
class WorkResult:
    detection: Detection | None = None  # computed now; None: the item's cached detection stands
    embeddings: dict[int, FaceEmbedding] = field(default_factory=dict)  # face index -> embedding
    times: dict[str, float] = field(default_factory=dict)  # seconds: decode, detect, embed (its share)


def one_thread(component: Any) -> Any:
    """`component` for one of several worker processes: a copy on one thread where it would
    take every core (threads=0), else itself. The caller's object is never changed."""
    return rethreaded(component, 1) if getattr(component, "threads", None) == 0 else component


@dataclass(frozen=True)
class ImageStages:
    """What the per-image work needs, already constructed (the workers never see set-level parts)."""

    detector: Any
    embedder: Any = None
    select: str = "largest"
    min_face_size: float = 0.0

    def for_workers(self) -> "ImageStages":
        """The copy a runner sends to worker processes: one core per worker, no oversubscribed thread pools."""
        return replace(self, detector=one_thread(self.detector), embedder=one_thread(self.embedder))


def choose_face(rec: ImageRecord, select: str, min_face_size: float) -> None:
    """Pick the image's face and apply the size filter (pure, cheap: runs every time)."""
    if rec.reason == R.UNREADABLE:
        return
    rec.face_index = select_face(rec.faces, select)
    if rec.face_index is None:
        rec.reason, rec.detail = R.NO_FACE, "no face detected"
    elif rec.face.size < min_face_size:
        rec.reason = R.FACE_TOO_SMALL
        rec.detail = f"face {rec.face.size:.0f}px < faces.min_face_size={min_face_size:g}"


def faces_to_embed(rec: ImageRecord, select: str, min_face_size: float) -> list[int]:
    """Faces of a record to embed: the chosen one, or with faces.select=all every face
    passing the size filter (the chosen one first)."""
    if rec.reason is not None:
        return []
    if select != "all":
        return [rec.face_index]
    others = [k for k, f in enumerate(rec.faces) if k != rec.face_index and f.size >= min_face_size]
    return [rec.face_index, *others]


def _decode_detect(stages: ImageStages, item: WorkItem, out: WorkResult):
    """Decode one image and detect if needed; returns (image, [(face index, face) to embed])."""
    t0 = time.perf_counter()
    try:
        image = load_image(item.path)
    except ImageReadError as e:  # the file could not be read now: retried next run
        out.detection = Detection(error=str(e))
        out.times["decode"] = time.perf_counter() - t0
        return None, []
    except ImageDecodeError as e:
        out.detection = Detection(error=str(e), decoders=decoders_id())
        out.times["decode"] = time.perf_counter() - t0
        return None, []
    t1 = time.perf_counter()
    out.times["decode"] = t1 - t0
    detection = item.detection
    if detection is None:
        detection = out.detection = Detection.found(stages.detector.detect(image), image.shape)
        out.times["detect"] = time.perf_counter() - t1
    if not item.embed:
        return image, []
    indices = item.embed_faces
    if indices is None:  # detected just now: choose here
        rec = ImageRecord(path=item.path, rel_path="", size=0)
        detection.apply(rec)
        choose_face(rec, stages.select, stages.min_face_size)
        indices = faces_to_embed(rec, stages.select, stages.min_face_size)
    return image, [(k, detection.faces[k]) for k in indices]


def work_batch(stages: ImageStages, items: list[WorkItem]) -> list[WorkResult]:
    """Decode, detect and align each image of `items`, then embed the faces of all of
    them in one call (one forward pass where the embedder batches); one result per item."""
    outs: list[WorkResult] = []
    chips: list[np.ndarray] = []
    owners: list[tuple[int, int]] = []  # (position in items, face index) of each chip
    align_s = 0.0
    for n, item in enumerate(items):
        out = WorkResult()
        outs.append(out)
        image, faces = _decode_detect(stages, item, out)
        t0 = time.perf_counter()
        for k, face in faces:
            chips.append(stages.embedder.align(image, face))
            owners.append((n, k))
        align_s += time.perf_counter() - t0
    if not chips:
        return outs
    t0 = time.perf_counter()
    vectors = stages.embedder.embed(chips)
    share = (align_s + time.perf_counter() - t0) / len(chips)  # embed time, split per face
    for (n, k), vector, chip in zip(owners, vectors, chips):
        outs[n].embeddings[k] = FaceEmbedding(vector, blur_score(chip))
        outs[n].times["embed"] = outs[n].times.get("embed", 0.0) + share
    return outs
