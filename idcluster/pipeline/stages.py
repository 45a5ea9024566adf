"""The pipeline: scan -> detect -> select/filter -> embed -> reduce -> cluster.

Stages are functions over ImageRecords and constructed components; this module
wraps them with the content-addressed cache, a process pool and progress bars.
Per-image results are cached as each image finishes, so an interrupted run
resumes where it stopped; set-level results (reduce, cluster) are keyed by the
hash of their inputs and parameters, so a clusterer change re-runs only
clustering.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import records as R
from ..cache.store import StageCache, cache_key
from ..clustering.constraints import Constraints
from ..errors import CacheMiss, InputError, PipelineError
from .work import _apply_detection, _choose, _embed_indices, _work, work_batch
from ..progress import stage_bar
from ..records import ImageRecord
from ..inputs.scan import scan_folder
from ..inputs.stat_index import StatIndex

log = logging.getLogger(__name__)

# Cache namespaces; bump a version when the stored format changes.
DETECT, EMBED, REDUCE, CLUSTER = "detect-v1", "embed-v1", "reduce-v1", "cluster-v1"
# Below this many images to process, a process pool costs more than it saves.
POOL_MIN_TASKS = 8


@dataclass
class Spec:
    """Everything a run needs, already constructed (stages never read Hydra config)."""

    input_dir: Path
    cache_dir: Path
    detector: Any
    embedder: Any = None
    reducer: Any = None
    clusterer: Any = None
    params: dict[str, dict] = field(default_factory=dict)  # group -> params that enter cache keys
    select: str = "largest"
    min_face_size: float = 0.0
    blur_threshold: float = 0.0
    workers: int = 1
    batch_images: int = 16  # images per work unit: their faces share one embedder forward pass
    exclude: list[Path] = field(default_factory=list)  # folders inside input_dir to skip
    progress: bool = True
    runner: Any = None  # None: local process pool; else idcluster.runners.Runner (e.g. Ray)
    # Seeds, review decisions, video tracks/frames: each maps the records (rows
    # assigned) to Constraints over embedding rows; their union reaches the clusterer.
    constraint_sources: list[Callable[[list[ImageRecord]], Constraints]] = field(default_factory=list)
    appearance: Any = None  # appearance.AppearanceAssigner: faceless images join identities after clustering


@dataclass
class Result:
    records: list[ImageRecord]
    embeddings: np.ndarray | None = None  # one row per embedded face (ImageRecord.face_rows)
    groups: np.ndarray | None = None  # record index of each embedding row
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    computed: Counter = field(default_factory=Counter)  # what was computed (not read from cache)
    constraints: Constraints = field(default_factory=Constraints)  # what the clusterer was given


# ---------------------------------------------------------------- per-image work (pipeline/work.py)


_WORKER_SPEC: Spec | None = None


def _init_worker(blob: bytes) -> None:
    global _WORKER_SPEC
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import cv2

    cv2.setNumThreads(1)  # one image per core; no nested thread pools
    _WORKER_SPEC = pickle.loads(blob)


def _work_in_pool(tasks: list[dict]) -> list[dict]:
    return work_batch(_WORKER_SPEC, tasks)


def _batches(tasks: list[dict], size: int):
    for i in range(0, len(tasks), size):
        yield tasks[i:i + size]


def _run_tasks(spec: Spec, tasks: list[dict], on_result, label: str) -> None:
    """Run tasks inline, on a process pool (in batches of spec.batch_images) or on spec.runner,
    calling on_result(task, out) in the parent as each batch finishes (so an interrupted run
    loses at most the batches in flight)."""
    size = max(1, spec.batch_images)
    with stage_bar(label, len(tasks), spec.progress) as bar:
        if spec.runner is None and (spec.workers <= 1 or len(tasks) < POOL_MIN_TASKS):
            for batch in _batches(tasks, size):
                for task, out in zip(batch, work_batch(spec, batch)):
                    on_result(task, out)
                    bar.advance()
            return
        # Workers get the per-image parts only; set-level estimators stay here.
        worker_spec = Spec(**{**spec.__dict__, "progress": False, "reducer": None, "clusterer": None, "runner": None})
        for part in (worker_spec.detector, worker_spec.embedder):
            if getattr(part, "threads", None) == 0:
                part.threads = 1  # one core per worker: no oversubscribed thread pools
        if spec.runner is not None:  # e.g. Ray: same per-task function, results cached here as they arrive
            spec.runner.run(worker_spec, tasks, _work, on_result, bar.advance)
            return
        blob = pickle.dumps(worker_spec)
        # Small batches while there are few tasks per worker, so both cores get work.
        size = max(1, min(size, len(tasks) // (spec.workers * 4) or 1))
        pending: dict = {}
        queue = _batches(tasks, size)
        window = spec.workers * 2  # bounded in-flight work keeps memory flat on huge folders
        # spawn, not fork: a fork after onnxruntime/OpenMP threads exist in this
        # process can deadlock the child (seen here when models ran in the parent first).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=spec.workers, mp_context=ctx, initializer=_init_worker, initargs=(blob,)) as pool:
            try:
                while True:
                    while len(pending) < window:
                        batch = next(queue, None)
                        if batch is None:
                            break
                        pending[pool.submit(_work_in_pool, batch)] = batch
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        batch = pending.pop(fut)
                        for task, out in zip(batch, fut.result()):
                            on_result(task, out)
                            bar.advance()
            except BrokenProcessPool:
                raise PipelineError(
                    "a worker process died (out of memory, or killed); finished images are cached: "
                    "run again to resume, or with workers=1"
                ) from None
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


# ---------------------------------------------------------------- stages


def scan(spec: Spec) -> list[ImageRecord]:
    with StatIndex(spec.cache_dir) as index:
        return scan_folder(spec.input_dir, exclude=spec.exclude, index=index)


def detect_and_embed(spec: Spec, records: list[ImageRecord], cache: StageCache, result: Result,
                     cached_only: bool = False) -> dict[tuple[int, int], np.ndarray]:
    """Fill faces (and embeddings when spec.embedder is set) for every readable record.

    Returns {(record index, face index): embedding}. Cache entries are written as
    each image finishes; with cached_only a missing entry raises CacheMiss.
    """
    want_embed = spec.embedder is not None
    det_id = [spec.detector.model_id, spec.params.get("detector", {})]
    emb_id = [spec.embedder.model_id, spec.params.get("embedder", {})] if want_embed else None
    dkeys: dict[int, str] = {}
    vectors: dict[tuple[int, int], np.ndarray] = {}
    blurs: dict[tuple[int, int], float] = {}
    ekeys: dict[tuple[int, int], str] = {}
    tasks: list[dict] = []

    def embed_key(i: int, face_index: int) -> str:
        return cache_key("embed", dkeys[i], face_index, emb_id)

    def missing_embeddings(i: int, rec: ImageRecord) -> list[int]:
        """Face indices of the record still to embed (cached ones are filled in)."""
        _choose(rec, spec)
        missing = []
        for k in _embed_indices(rec, spec):
            ekeys[i, k] = embed_key(i, k)
            hit = cache.get_arrays(EMBED, ekeys[i, k])
            if hit is None:
                missing.append(k)
            else:
                vectors[i, k], blurs[i, k] = hit["embedding"], float(hit["blur"])
        return missing

    for i, rec in enumerate(records):
        if rec.reason == R.UNREADABLE:
            continue
        dkeys[i] = cache_key("detect", rec.sha256, det_id)
        entry = cache.get_json(DETECT, dkeys[i])
        missing = None
        if entry is not None:
            _apply_detection(rec, entry)
            if not want_embed:
                continue
            missing = missing_embeddings(i, rec)
            if not missing:
                continue
        tasks.append({"index": i, "path": rec.path, "detection": entry, "embed": want_embed, "embed_faces": missing})

    if tasks and cached_only:
        stage = "detection" if any(t["detection"] is None for t in tasks) else "embedding"
        raise CacheMiss(f"no cached {stage} for {len(tasks)} image(s) with this config in {cache.root}: run `idcluster cluster` with the same overrides first")

    def on_result(task: dict, out: dict) -> None:
        i = task["index"]
        rec = records[i]
        for k, v in out["times"].items():
            result.timings[k] = result.timings.get(k, 0.0) + v
        if "detection" in out:
            cache.put_json(DETECT, dkeys[i], out["detection"])
            result.computed["detect"] += 1
            _apply_detection(rec, out["detection"])
        if want_embed:
            _choose(rec, spec)
            for k, (vector, blur) in out.get("embeddings", {}).items():
                ekeys[i, k] = embed_key(i, k)
                cache.put_arrays(EMBED, ekeys[i, k], embedding=vector, blur=np.float64(blur))
                result.computed["embed"] += 1
                vectors[i, k], blurs[i, k] = vector, blur

    t0 = time.perf_counter()
    _run_tasks(spec, tasks, on_result, "embed" if want_embed else "detect")
    result.timings["faces_wall"] = time.perf_counter() - t0

    for (i, k), blur in blurs.items():
        rec = records[i]
        if k == rec.face_index:
            rec.blur = blur
        if spec.blur_threshold > 0 and blur < spec.blur_threshold:
            del vectors[i, k]
            if k == rec.face_index:
                rec.reason = R.BLURRY
                rec.detail = f"blur {blur:.1f} < faces.blur_threshold={spec.blur_threshold:g}"
    result.keys["embeddings"] = cache_key([ekeys[ik] for ik in sorted(vectors)])
    return vectors


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster 0 is the largest (ties: first seen), noise stays -1. O(n log n) at any cluster count."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), -1, dtype=np.int64)
    rows = np.flatnonzero(labels >= 0)
    ids, first, inv, counts = np.unique(labels[rows], return_index=True, return_inverse=True, return_counts=True)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.lexsort((first, -counts))] = np.arange(len(ids))
    out[rows] = rank[inv.ravel()]
    return out


def _fit_predict(clusterer, Z: np.ndarray, groups: np.ndarray, constraints: Constraints | None = None) -> np.ndarray:
    """fit_predict, passing the image of each row (cannot-link) and the constraints where
    the clusterer takes them; a plain scikit-learn estimator cannot honour constraints."""
    accepts = inspect.signature(clusterer.fit_predict).parameters
    kwargs = {"groups": groups} if "groups" in accepts else {}
    if constraints:
        if "constraints" not in accepts:
            raise InputError(f"{type(clusterer).__name__} cannot honour must-link/cannot-link constraints "
                             "(seeds, review decisions, tracks): use one of idcluster's clusterers")
        kwargs["constraints"] = constraints
    return clusterer.fit_predict(Z, **kwargs)


def reduce_and_cluster(spec: Spec, X: np.ndarray, cache: StageCache, result: Result, cached_only: bool = False,
                       groups: np.ndarray | None = None, constraints: Constraints | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels (largest cluster = 0, noise = -1) and membership probabilities for rows of X.

    `groups[i]` is the image row i came from: faces of one image never share a cluster.
    `constraints` (must-/cannot-link over rows) enter the cluster key when present.
    """
    groups = np.arange(len(X)) if groups is None else groups
    rkey = cache_key("reduce", result.keys["embeddings"], spec.params.get("reducer", {}))
    ckey = cache_key("cluster", rkey, spec.params.get("clusterer", {}))
    if constraints:
        ckey = cache_key(ckey, "constraints", constraints.key())
    result.keys.update(reduce=rkey, cluster=ckey)

    hit = cache.get_arrays(CLUSTER, ckey)
    if hit is not None:
        return hit["labels"], hit["probabilities"]
    if cached_only:
        raise CacheMiss(f"no cached clustering for this config in {cache.root}: run `idcluster cluster` with the same overrides first")

    from sklearn.preprocessing import FunctionTransformer  # here: pool workers never import sklearn

    t0 = time.perf_counter()
    # reducer=none is an identity FunctionTransformer: caching a copy of every embedding buys nothing.
    identity = isinstance(spec.reducer, FunctionTransformer) and spec.reducer.func is None
    reduced = {"Z": X} if identity else cache.get_arrays(REDUCE, rkey)
    if reduced is None:
        try:
            Z = np.asarray(spec.reducer.fit_transform(X), dtype=np.float32)
        except ValueError as e:
            raise InputError(f"reducer failed on {len(X)} faces: {e}") from None
        cache.put_arrays(REDUCE, rkey, Z=Z)
        result.computed["reduce"] += 1
    else:
        Z = reduced["Z"]
    result.timings["reduce"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if len(Z) < 2:
        labels, probs = np.full(len(Z), -1, np.int64), np.zeros(len(Z))
    else:
        try:
            raw = np.asarray(_fit_predict(spec.clusterer, Z, groups, constraints))
        except ValueError as e:
            raise InputError(f"clusterer failed on {len(Z)} faces: {e}") from None
        labels = _relabel_by_size(raw)
        probs = getattr(spec.clusterer, "probabilities_", None)
        probs = np.where(labels >= 0, 1.0, 0.0) if probs is None else np.asarray(probs, dtype=np.float64)
    cache.put_arrays(CLUSTER, ckey, labels=labels, probabilities=probs)
    result.computed["cluster"] += 1
    result.timings["cluster"] = time.perf_counter() - t0
    return labels, probs


def run(spec: Spec, until: str = "cluster", cached_only: bool = False) -> Result:
    """Run the stages up to `until` (detect | embed | cluster) over spec.input_dir."""
    cache = StageCache(spec.cache_dir)
    t0 = time.perf_counter()
    records = scan(spec)
    result = Result(records=records, timings={"scan": time.perf_counter() - t0})

    if until == "detect":
        spec = Spec(**{**spec.__dict__, "embedder": None})
    vectors = detect_and_embed(spec, records, cache, result, cached_only=cached_only)
    if until == "detect":
        for rec in records:
            if rec.reason is None:
                _choose(rec, spec)
        return result

    order = sorted(vectors)  # (record index, face index): a record's faces are adjacent rows
    for row, (i, k) in enumerate(order):
        records[i].face_rows[k] = row
    for rec in records:
        rec.embedding_row = rec.face_rows.get(rec.face_index)
    dim = getattr(spec.embedder, "dim", 0)
    result.embeddings = np.stack([vectors[ik] for ik in order]).astype(np.float32) if order else np.zeros((0, dim), np.float32)
    result.groups = np.array([i for i, _ in order], dtype=np.int64)
    if until == "embed":
        return result
    return cluster_stage(spec, result, cached_only=cached_only)


def cluster_stage(spec: Spec, result: Result, cached_only: bool = False) -> Result:
    """Reduce + cluster the embedded rows of `result` and set each record's label.

    Re-entrant: a sweep calls it once per point on the same upstream result.
    """
    records = result.records
    if not len(result.embeddings) and not getattr(spec.appearance, "enabled", False):
        raise InputError(f"no usable face found in any of the {len(records)} input images ({_reason_summary(records)})")
    for rec in records:
        rec.label, rec.probability, rec.face_labels = -1, 0.0, {}
        rec.evidence = rec.evidence_score = None
        if rec.reason == R.CLUSTER_NOISE:
            rec.reason = rec.detail = None
    constraints = Constraints()
    for source in spec.constraint_sources:
        constraints = constraints | source(records)
    result.constraints = constraints
    cache = StageCache(spec.cache_dir)
    if len(result.embeddings):
        # groups: the image each row came from, so faces of one image never share a cluster.
        labels, probs = reduce_and_cluster(spec, result.embeddings, cache, result, cached_only=cached_only,
                                           groups=result.groups, constraints=constraints)
    else:
        labels = probs = np.zeros(0)
    for rec in records:
        rec.face_labels = {k: int(labels[row]) for k, row in rec.face_rows.items()}
        if rec.embedding_row is None:
            continue
        rec.label, rec.probability = int(labels[rec.embedding_row]), float(probs[rec.embedding_row])
        if rec.label < 0:
            rec.reason, rec.detail = R.CLUSTER_NOISE, "not close enough to any cluster"
        else:
            rec.evidence, rec.evidence_score = "face", round(rec.probability, 4)
    if spec.appearance is not None:  # faceless images by appearance, seeds, tracks (idcluster.evidence.appearance)
        _appearance_stage(spec, result, cache, cached_only)
        if not len(result.embeddings) and all(r.label < 0 for r in records):
            raise InputError(f"no usable face found in any of the {len(records)} input images ({_reason_summary(records)})")
    return result


def _appearance_stage(spec: Spec, result: Result, cache: StageCache, cached_only: bool) -> None:
    from ..evidence.appearance import image_links

    t0 = time.perf_counter()
    links = image_links(spec.constraint_sources, result.records)
    for i, rec in enumerate(result.records):  # recorded in identity_clustering.json
        rec.links = {k: v for k, v in (("seed", links.names.get(i)), ("track", links.tracks.get(i)),
                                       ("frame", links.frames.get(i))) if v is not None}
    spec.appearance.assign(result.records, links, cache, spec.progress, cached_only, result.computed)
    result.timings["appearance"] = time.perf_counter() - t0


def _reason_summary(records: list[ImageRecord]) -> str:
    counts = Counter(r.reason for r in records if r.reason)
    return ", ".join(f"{n} {k}" for k, n in counts.most_common()) or "none"


def default_workers(workers: int) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)
