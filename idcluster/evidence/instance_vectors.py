"""Per-image whole-instance vectors, cached by image content like every per-image stage.

Key: H(image sha256, the instance model's id, its per-image parameters); namespace
`instance-v1`. The model is the `instance=` choice (conf/instance/): it `load`s a file
(alpha-aware, its own background) and `embed_instances` a batch of loaded images.
Images are described in the driver on one thread per core: decoding (Pillow) and the
kernels (onnxruntime, OpenCV, NumPy) release the GIL for most of their time; each
thread's model runs on one thread (the caller's model is never changed). Results are
cached in order as each batch finishes, so an interrupted run keeps what it computed.
"""

from __future__ import annotations

import os
from collections import Counter
from itertools import chain
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..cache.store import StageCache, cache_key
from ..errors import CacheMiss
from ..inputs.images import ImageDecodeError
from ..models.lazy import rethreaded
from ..progress import stage_bar

INSTANCE = "instance-v1"  # cache namespace


def instance_vectors(model, records, indices, cache: StageCache, progress: bool = True, cached_only: bool = False,
                     computed: Counter | None = None) -> dict[int, np.ndarray]:
    """record index -> its instance vector, for `indices` (a file that no longer decodes is left out)."""
    out: dict[int, np.ndarray] = {}
    todo: list[tuple[int, str]] = []
    model_id, params = model.model_id, getattr(model, "params", {})
    for i in indices:
        key = cache_key("instance", records[i].sha256, model_id, params)
        hit = cache.get_arrays(INSTANCE, key)
        if hit is not None:
            out[i] = hit["vector"]
        else:
            todo.append((i, key))
    if not todo:
        return out
    if cached_only:
        raise CacheMiss(f"no cached instance vectors for {len(todo)} image(s) in {cache.root}: "
                        "run `idcluster cluster` with the same overrides first")
    workers = max(1, min(len(todo), os.cpu_count() or 1))
    worker_model = rethreaded(model, 1) if workers > 1 and getattr(model, "threads", None) == 0 else model
    step = max(1, int(getattr(worker_model, "batch_size", 1) or 1))
    chunks = [todo[a:a + step] for a in range(0, len(todo), step)]

    def describe(chunk):
        loaded, owners = [], []
        for i, key in chunk:
            try:
                loaded.append(worker_model.load(records[i].path))
                owners.append((i, key))
            except ImageDecodeError:  # changed or unreadable since the scan: not placed, not cached
                continue
        return owners, (worker_model.embed_instances(loaded) if loaded else [])

    with stage_bar("instance", len(todo), progress) as bar:
        first = describe(chunks[0])  # here, so the model loads once before the threads share it
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for owners, vectors in chain([first], pool.map(describe, chunks[1:])):
                for (i, key), v in zip(owners, vectors):
                    v = np.asarray(v, dtype=np.float32)
                    out[i] = v
                    cache.put_arrays(INSTANCE, key, vector=v)
                    if computed is not None:
                        computed["instance"] += 1
                bar.advance(len(owners))
    return out
