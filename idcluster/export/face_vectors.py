"""The face vectors of a clustering run, by face key, in the stage cache.

Written by every `cluster` run (keyed by the run's embedding cache key, which the
JSON records under cache_keys.embeddings) so that readers of the output need no
pipeline: the review ranks members and suggests merges by them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..cache.store import StageCache
from ..evidence.decisions import face_key

log = logging.getLogger(__name__)

# The namespace's name predates this module (it was the review's): outputs clustered before still find theirs.
FACE_VECTORS = "review-embeddings-v1"


def save_face_vectors(cache_dir: Path, key: str, records, embeddings: np.ndarray) -> None:
    """Every embedded face's vector (float16) under its face key (<image sha256>:<face index>)."""
    keys = [None] * len(embeddings)
    for r in records:
        for k, row in r.face_rows.items():
            keys[row] = face_key(r.sha256, k)
    StageCache(cache_dir).put_arrays(FACE_VECTORS, key, vectors=embeddings.astype(np.float16),
                                     keys=np.array(keys, dtype=str))


def load_face_vectors(cache_dir: Path, key: str | None) -> dict[str, np.ndarray] | None:
    """face key -> L2-normalised float32 vector; None when the run's vectors are not in this cache."""
    hit = StageCache(cache_dir).get_arrays(FACE_VECTORS, key) if key else None
    if hit is None:
        return None
    v = hit["vectors"].astype(np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return dict(zip(hit["keys"].tolist(), v))
