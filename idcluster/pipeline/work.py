"""The per-image work every runner executes: decode, detect, choose faces, align, embed.

`spec` is the pipeline's Spec (stages.py): only its detector, embedder and face choice are read here.
"""

from __future__ import annotations

import time

import numpy as np

from .. import records as R
from ..inputs.images import ImageDecodeError, load_image
from ..records import Face, ImageRecord
from .faces import blur_score, select_face

def _detection_entry(faces: list[Face], shape) -> dict:
    return {"faces": [f.to_dict() for f in faces], "width": int(shape[1]), "height": int(shape[0])}


def _apply_detection(rec: ImageRecord, entry: dict) -> None:
    if entry.get("error"):
        rec.reason, rec.detail = R.UNREADABLE, entry["error"]
        return
    rec.width, rec.height = entry["width"], entry["height"]
    rec.faces = [Face.from_dict(f) for f in entry["faces"]]


def _choose(rec: ImageRecord, spec: Spec) -> None:
    """Pick the image's face and apply the size filter (pure, cheap: runs every time)."""
    if rec.reason == R.UNREADABLE:
        return
    rec.face_index = select_face(rec.faces, spec.select)
    if rec.face_index is None:
        rec.reason, rec.detail = R.NO_FACE, "no face detected"
    elif rec.face.size < spec.min_face_size:
        rec.reason = R.FACE_TOO_SMALL
        rec.detail = f"face {rec.face.size:.0f}px < faces.min_face_size={spec.min_face_size:g}"


def _embed_indices(rec: ImageRecord, spec: Spec) -> list[int]:
    """Faces of a record to embed: the chosen one, or with faces.select=all every face
    passing the size filter (the chosen one first)."""
    if rec.reason is not None:
        return []
    if spec.select != "all":
        return [rec.face_index]
    others = [k for k, f in enumerate(rec.faces) if k != rec.face_index and f.size >= spec.min_face_size]
    return [rec.face_index, *others]


def _decode_detect(spec: Spec, task: dict, out: dict):
    """Decode one image and detect if needed; returns (image, face indices to embed)."""
    t0 = time.perf_counter()
    try:
        image = load_image(task["path"])
    except ImageDecodeError as e:
        out["detection"] = {"error": str(e)}
        out["times"]["decode"] = time.perf_counter() - t0
        return None, []
    t1 = time.perf_counter()
    out["times"]["decode"] = t1 - t0
    entry = task["detection"]
    if entry is None:
        entry = out["detection"] = _detection_entry(spec.detector.detect(image), image.shape)
        out["times"]["detect"] = time.perf_counter() - t1
    if not task["embed"]:
        return image, []
    indices = task["embed_faces"]
    if indices is None:  # detected just now: choose here
        rec = ImageRecord(path=task["path"], rel_path="", size=0)
        _apply_detection(rec, entry)
        _choose(rec, spec)
        indices = _embed_indices(rec, spec)
    return image, [(k, Face.from_dict(entry["faces"][k])) for k in indices]


def work_batch(spec: Spec, tasks: list[dict]) -> list[dict]:
    """Decode, detect and align each image of `tasks`, then embed the faces of all of
    them in one call (one forward pass where the embedder batches); one result per task.

    The unit every runner executes (the local process pool here; a Ray runner can map
    it over batches): it reads only the images and the constructed components, and
    its results go into the content cache via `detect_and_embed`'s on_result.
    """
    outs: list[dict] = []
    chips: list[np.ndarray] = []
    owners: list[tuple[int, int]] = []  # (position in tasks, face index) of each chip
    align_s = 0.0
    for n, task in enumerate(tasks):
        out: dict = {"times": {}}
        outs.append(out)
        image, faces = _decode_detect(spec, task, out)
        t0 = time.perf_counter()
        for k, face in faces:
            chips.append(spec.embedder.align(image, face))
            owners.append((n, k))
        align_s += time.perf_counter() - t0
    if not chips:
        return outs
    t0 = time.perf_counter()
    vectors = spec.embedder.embed(chips)
    share = (align_s + time.perf_counter() - t0) / len(chips)  # embed time, split per face
    for (n, k), vector, chip in zip(owners, vectors, chips):
        outs[n].setdefault("embeddings", {})[k] = (vector, blur_score(chip))
        outs[n]["times"]["embed"] = outs[n]["times"].get("embed", 0.0) + share
    return outs


def _work(spec: Spec, task: dict) -> dict:
    """Decode one image, detect if needed, and embed the faces still missing."""
    return work_batch(spec, [task])[0]
