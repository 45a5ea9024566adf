"""The pipeline: scan -> detect -> select/filter -> embed -> reduce -> cluster.

Stages are functions over ImageRecords and constructed components; this module
wraps them with the content-addressed cache and progress bars. The per-image work
(pipeline/work.py) runs on the Spec's runner (runners/: a local process pool, Ray).
Per-image results are cached as each image finishes, so an interrupted run
resumes where it stopped; set-level results (reduce, cluster) are keyed by the
hash of their inputs and parameters, so a clusterer change re-runs only
clustering.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import records as R
from ..cache.store import StageCache, cache_key
from ..clustering.constraints import Constraints
from ..errors import CacheMiss, ConfigError, InputError
from ..inputs.scan import scan_folder
from ..inputs.stat_index import StatIndex
from ..progress import stage_bar
from ..records import ImageRecord
from ..runners.local import LocalRunner, default_workers  # noqa: F401 - default_workers: callers' name for it
from .work import Detection, ImageStages, WorkItem, WorkResult, choose_face, faces_to_embed, work_batch

log = logging.getLogger(__name__)

# Cache namespaces; bump a version when the stored format changes.
DETECT, EMBED, REDUCE, CLUSTER = "detect-v1", "embed-v1", "reduce-v1", "cluster-v1"


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
    workers: int = 1  # with runner=None: the LocalRunner's processes
    batch_images: int = 16  # with runner=None: images per work unit (their faces share one embedder call)
    exclude: list[Path] = field(default_factory=list)  # folders inside input_dir to skip
    progress: bool = True
    runner: Any = None  # idcluster.runners.Runner (LocalRunner, RayRunner); None: LocalRunner(workers, batch_images)
    # Seeds, review decisions, video tracks/frames: each maps the records (rows
    # assigned) to Constraints over embedding rows; their union reaches the clusterer.
    constraint_sources: list[Callable[[list[ImageRecord]], Constraints]] = field(default_factory=list)
    appearance: Any = None  # evidence.instance.InstanceStream: images without a usable face, after the faces
    instance: Any = None  # the instance= model (conf/instance/): whole-instance vectors for that stream

    @property
    def faces_embedded(self) -> bool:
        """Whether the face stream embeds faces (a whole-instance model in the embedder slot does not:
        it describes whole images, in the instance stream)."""
        return self.embedder is not None and not whole_instance(self.embedder)

    @property
    def instance_model(self) -> Any:
        """The model of the whole-instance stream: embedder=ccip|clip where chosen, else instance=."""
        return self.embedder if whole_instance(self.embedder) else self.instance

    def image_stages(self) -> ImageStages:
        """The per-image part, what runners execute (set-level estimators stay in the driver)."""
        return ImageStages(self.detector, self.embedder if self.faces_embedded else None, self.select, self.min_face_size)


def whole_instance(model: Any) -> bool:
    """A model of whole images (CCIP, CLIP): never given face crops."""
    return bool(getattr(model, "whole_instance", False))


@dataclass
class Result:
    records: list[ImageRecord]
    embeddings: np.ndarray | None = None  # one row per embedded face (ImageRecord.face_rows)
    groups: np.ndarray | None = None  # record index of each embedding row
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    computed: Counter = field(default_factory=Counter)  # what was computed (not read from cache)
    constraints: Constraints = field(default_factory=Constraints)  # what the clusterer was given
    clusterer_ran: dict = field(default_factory=dict)  # clustering.base.what_runs: the estimator that partitioned the faces
    instance_model: str | None = None  # model id of the whole-instance stream, where it placed or described images


def _run_items(spec: Spec, items: list[WorkItem], on_result, label: str) -> None:
    """Run the per-image work of `items` on spec's runner; on_result(item, result) runs here,
    in the driver, as each finishes (an interrupted run loses only the work in flight)."""
    runner = spec.runner if spec.runner is not None else LocalRunner(spec.workers, spec.batch_images)
    with stage_bar(label, len(items), spec.progress) as bar:
        runner.run(spec.image_stages(), items, work_batch, on_result, bar.advance)


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
    want_embed = spec.faces_embedded
    det_id = [spec.detector.model_id, spec.params.get("detector", {})]
    emb_id = [spec.embedder.model_id, spec.params.get("embedder", {})] if want_embed else None
    dkeys: dict[int, str] = {}
    vectors: dict[tuple[int, int], np.ndarray] = {}
    blurs: dict[tuple[int, int], float] = {}
    ekeys: dict[tuple[int, int], str] = {}
    items: list[WorkItem] = []

    def embed_key(i: int, face_index: int) -> str:
        return cache_key("embed", dkeys[i], face_index, emb_id)

    def missing_embeddings(i: int, rec: ImageRecord) -> list[int]:
        """Face indices of the record still to embed (cached ones are filled in)."""
        choose_face(rec, spec.select, spec.min_face_size)
        missing = []
        for k in faces_to_embed(rec, spec.select, spec.min_face_size):
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
        detection = Detection.from_entry(entry) if entry is not None else None
        if detection is not None and not detection.current and not cached_only:
            detection = None  # a decode failure under other decoders: try again
        missing = None
        if detection is not None:
            detection.apply(rec)
            if not want_embed:
                continue
            missing = missing_embeddings(i, rec)
            if not missing:
                continue
        items.append(WorkItem(i, rec.path, detection, want_embed, None if missing is None else tuple(missing)))

    if items and cached_only:
        stage = "detection" if any(item.detection is None for item in items) else "embedding"
        raise CacheMiss(f"no cached {stage} for {len(items)} image(s) with this config in {cache.root}: run `idcluster cluster` with the same overrides first")

    def on_result(item: WorkItem, out: WorkResult) -> None:
        i = item.index
        rec = records[i]
        for k, v in out.times.items():
            result.timings[k] = result.timings.get(k, 0.0) + v
        if out.detection is not None:
            if out.detection.cacheable:  # a read error (OSError) is not: the next run tries again
                cache.put_json(DETECT, dkeys[i], out.detection.to_entry())
                result.computed["detect"] += 1
            out.detection.apply(rec)
        if want_embed:
            choose_face(rec, spec.select, spec.min_face_size)
            for k, face in out.embeddings.items():
                ekeys[i, k] = embed_key(i, k)
                cache.put_arrays(EMBED, ekeys[i, k], embedding=face.vector, blur=np.float64(face.blur))
                result.computed["embed"] += 1
                vectors[i, k], blurs[i, k] = face.vector, face.blur

    t0 = time.perf_counter()
    _run_items(spec, items, on_result, "embed" if want_embed else "detect")
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
    if spec.appearance is not None and vectors:
        _drop_faces_out_of_domain(spec, records, vectors)
    result.keys["embeddings"] = cache_key([ekeys[ik] for ik in sorted(vectors)])
    return vectors


def _drop_faces_out_of_domain(spec: Spec, records: list[ImageRecord], vectors: dict) -> None:
    """Faces the face embedder cannot place in this run (evidence.instance: a human-face model on
    drawn faces) are no face evidence: their images take the whole-instance stream."""
    order = sorted(vectors)
    out = spec.appearance.faces_out_of_domain(np.stack([vectors[ik] for ik in order]))
    for (i, k), drop in zip(order, out):
        if not drop:
            continue
        del vectors[i, k]
        rec = records[i]
        if k == rec.face_index:
            rec.reason = R.FACE_OUT_OF_DOMAIN
            rec.detail = "the face embedder cannot place this face here (most of its distances to the run's faces are ambiguous)"


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


def _check_reducer_size(reducer, X: np.ndarray) -> None:
    """A reducer's n_components the faces cannot give is the user's to change: one line here,
    not a failure deep inside scikit-learn (PCA needs n_components <= faces and dimensions) or
    UMAP (its spectral start needs n_components < faces - 1)."""
    k = reducer.get_params().get("n_components") if hasattr(reducer, "get_params") else None
    if not isinstance(k, int) or isinstance(k, bool):
        return  # None, a variance share or 'mle': the reducer sizes itself
    n, d = X.shape
    if k > d:
        raise ConfigError(f"reducer.n_components={k} is more than the embeddings' {d} dimensions")
    if n < k + 2:
        raise InputError(f"reducer.n_components={k} needs at least {k + 2} faces, found {n}: "
                         "use reducer=none or a smaller reducer.n_components")


def reduce_and_cluster(spec: Spec, X: np.ndarray, cache: StageCache, result: Result, cached_only: bool = False,
                       groups: np.ndarray | None = None, constraints: Constraints | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels (largest cluster = 0, noise = -1) and membership probabilities for rows of X.

    `groups[i]` is the image row i came from: faces of one image never share a cluster.
    `constraints` (must-/cannot-link over rows) enter the cluster key when present.
    `result.clusterer_ran` says which estimator partitions these rows (a cached run too).

    Only what the user can change becomes an IdclusterError: a parameter scikit-learn's
    validation refuses, or too few faces for the reducer; any other error is a bug and
    propagates as it is.
    """
    # Imported here, not at the top: pool workers import this module and never need sklearn.
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.utils._param_validation import InvalidParameterError

    from ..clustering.base import relabel_by_size, what_runs

    groups = np.arange(len(X)) if groups is None else groups
    rkey = cache_key("reduce", result.keys["embeddings"], spec.params.get("reducer", {}))
    ckey = cache_key("cluster", rkey, spec.params.get("clusterer", {}))
    if constraints:
        ckey = cache_key(ckey, "constraints", constraints.key())
    result.keys.update(reduce=rkey, cluster=ckey)
    result.clusterer_ran = what_runs(spec.clusterer, len(X)) if len(X) >= 2 else {}

    hit = cache.get_arrays(CLUSTER, ckey)
    if hit is not None:
        return hit["labels"], hit["probabilities"]
    if cached_only:
        raise CacheMiss(f"no cached clustering for this config in {cache.root}: run `idcluster cluster` with the same overrides first")

    t0 = time.perf_counter()
    # reducer=none is an identity FunctionTransformer: caching a copy of every embedding buys nothing.
    identity = isinstance(spec.reducer, FunctionTransformer) and spec.reducer.func is None
    reduced = {"Z": X} if identity else cache.get_arrays(REDUCE, rkey)
    if reduced is None:
        _check_reducer_size(spec.reducer, X)
        try:
            Z = np.asarray(spec.reducer.fit_transform(X), dtype=np.float32)
        except InvalidParameterError as e:
            raise ConfigError(f"reducer: {e}") from None
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
        except InvalidParameterError as e:
            raise ConfigError(f"clusterer: {e}") from None
        labels = relabel_by_size(raw)
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
        spec = replace(spec, embedder=None)
    vectors = detect_and_embed(spec, records, cache, result, cached_only=cached_only)
    if until == "detect":
        for rec in records:
            if rec.reason is None:
                choose_face(rec, spec.select, spec.min_face_size)
        return result

    order = sorted(vectors)  # (record index, face index): a record's faces are adjacent rows
    for row, (i, k) in enumerate(order):
        records[i].face_rows[k] = row
    for rec in records:
        rec.embedding_row = rec.face_rows.get(rec.face_index)
    dim = getattr(spec.embedder, "dim", 0) if spec.faces_embedded else 0
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
    instance_on = bool(getattr(spec.appearance, "enabled", False))
    if whole_instance(spec.embedder) and not instance_on:
        raise ConfigError(f"embedder={spec.embedder.id_prefix} describes whole images in the instance stream: "
                          "appearance.enabled=false leaves nothing to cluster")
    if not len(result.embeddings) and not instance_on:
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
    if spec.appearance is not None:  # images without a usable face: seeds, tracks, the instance stream (evidence.instance)
        _appearance_stage(spec, result, cache, cached_only)
        if not len(result.embeddings) and all(r.label < 0 for r in records):
            raise InputError(f"no usable face found in any of the {len(records)} input images ({_reason_summary(records)})")
    return result


def _appearance_stage(spec: Spec, result: Result, cache: StageCache, cached_only: bool) -> None:
    from ..evidence.links import image_links

    t0 = time.perf_counter()
    links = image_links(spec.constraint_sources, result.records)
    for i, rec in enumerate(result.records):  # recorded in identity_clustering.json
        rec.links = {k: v for k, v in (("seed", links.names.get(i)), ("track", links.tracks.get(i)),
                                       ("frame", links.frames.get(i))) if v is not None}
    model = spec.instance_model
    used = spec.appearance.assign(result.records, links, cache, model, result.embeddings, spec.progress, cached_only,
                                  result.computed)
    result.instance_model = model.model_id if used else None
    result.timings["appearance"] = time.perf_counter() - t0


def _reason_summary(records: list[ImageRecord]) -> str:
    counts = Counter(r.reason for r in records if r.reason)
    return ", ".join(f"{n} {k}" for k, n in counts.most_common()) or "none"
