"""`idcluster cluster`: compose -> run the pipeline -> place -> export -> report -> track.

`cluster()` reads top-down as the recipe; each step below it is one small function.
Settings come in typed and frozen (config/settings.py); every component is built
from its `_target_`; the stages below never see Hydra config.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from ..clustering.base import centres
from ..config.settings import RunSettings
from ..errors import ConfigError, InputError
from ..evidence import decisions as journal
from ..evidence.seeds import Seeds
from ..evidence.video_links import VideoLinks
from ..experiments import mlflow_link, tracking
from ..experiments.evaluation import check_labels, evaluate, ground_truth
from ..experiments.metrics import label_free
from ..export.face_vectors import save_face_vectors
from ..export.folders import export, prepare_output
from ..export.locking import output_lock
from ..export.report import (JSON_NAME, build_report, check_mode, read_report, renumber, stable_numbers, write_marker,
                             write_report)
from ..export.summary import print_summary
from ..pipeline import stages as pipeline

log = logging.getLogger(__name__)
CONTACT_SHEET = "contact_sheet.png"
# The component groups each stage of `pipeline.run` needs.
STAGE_GROUPS = {"detect": ("detector",), "embed": ("detector", "embedder"),
                "cluster": ("detector", "embedder", "reducer", "clusterer")}


def cluster(run: RunSettings, console: Console, cached_only: bool = False, progress: bool = True) -> dict:
    """Run everything (or, with cached_only, read it all from the cache), write the output; return the report."""
    decisions = Decisions.of(run)
    spec = make_spec(run, "cluster", progress, decisions)
    exporter = run.component("export")  # export=folders | kohya | ... (conf/export/)
    pose = run.component("pose") if exporter.needs_pose else None  # views for the format's captions
    check_before_work(run, spec, exporter)  # the output folder and the labels, before hours of work
    with output_lock(run.output_dir, "cluster"):
        result = run_pipeline(spec, decisions, cached_only)
        report = write_output(run, spec, exporter, result, decisions, progress)
        extra = exporter.write(run.output_dir, pose, spec.cache_dir, progress)  # kohya: a training set
    show(report, console, exporter, extra)
    track(run, report, result, console)
    return report


# ---------------------------------------------------------------- the steps


def make_spec(run: RunSettings, until: str, progress: bool = True, decisions: "Decisions | None" = None
              ) -> pipeline.Spec:
    """The pipeline's components and rules for the stages up to `until` (detect | embed | cluster)."""
    groups = STAGE_GROUPS[until]
    parts = {g: run.component(g) for g in groups}
    clustering = until == "cluster"
    stream = run.component("appearance") if clustering else None
    if stream is not None and pipeline.whole_instance(parts.get("embedder")):
        # embedder=ccip|clip is the whole-instance model: its own thresholds, not those of instance='s model
        # (null: the model's own decision, CCIP's from metrics.json).
        chosen = run.choice("embedder")
        stream.distance_threshold = chosen.get("distance_threshold")
        stream.grey_distance_threshold = chosen.get("grey_distance_threshold")
    return pipeline.Spec(
        input_dir=run.input_dir,
        cache_dir=run.cache_dir,
        detector=parts["detector"],
        embedder=parts.get("embedder"),
        reducer=parts.get("reducer"),
        clusterer=parts.get("clusterer"),
        params={g: run.params(g) for g in groups},
        select=run.faces.select,
        min_face_size=run.faces.min_face_size,
        blur_threshold=run.faces.blur_threshold,
        workers=pipeline.default_workers(run.workers),
        exclude=[run.output_dir, run.cache_dir],  # outputs placed inside the input are not inputs
        progress=progress,
        runner=run.component("runner"),
        constraint_sources=constraint_sources(run, (decisions or Decisions.of(run)).journal) if clustering else [],
        appearance=stream,
        instance=run.component("instance") if clustering else None,
    )


def run_stage(run: RunSettings, until: str, progress: bool = True) -> pipeline.Result:
    """`idcluster detect` / `embed`: the stages up to `until`, nothing written but the cache."""
    return pipeline.run(make_spec(run, until, progress), until=until)


@dataclass(frozen=True)
class Decisions:
    """The review decisions this run honours: review.decisions, else the output folder's journal."""

    journal: Path | None
    facts: journal.Facts | None

    @classmethod
    def of(cls, run: RunSettings) -> "Decisions":
        path = run.review_decisions
        if path is not None and not path.is_file():
            raise ConfigError(f"review.decisions={path}: no such file")
        if path is None:
            path = journal.default_path(run.output_dir)
            path = path if path.is_file() else None
        return cls(path, journal.facts(journal.read_journal(path)) if path else None)


def constraint_sources(run: RunSettings, decisions_path: Path | None) -> list:
    """Seeds, frame/track patterns and review decisions: each a constraint source for the clusterer."""
    sources: list = []
    if run.seeds:
        sources.append(Seeds(run.seeds, run.input_dir))
    video = VideoLinks(run.frame_pattern, run.track_pattern)
    if video:
        sources.append(video)
    if decisions_path is not None:
        sources.append(journal.constraint_source(decisions_path))
    return sources


def check_before_work(run: RunSettings, spec: pipeline.Spec, exporter) -> None:
    check_mode(exporter.mode)
    if run.labels:
        check_labels(run.labels)
    prepare_output(run.output_dir, spec.input_dir, exporter.overwrite, check_only=True)


def run_pipeline(spec: pipeline.Spec, decisions: Decisions, cached_only: bool) -> pipeline.Result:
    if cached_only and decisions.journal:
        # Review decisions changed the clustering since `cluster` ran: redo only that cheap step
        # (detections and embeddings still come from the cache or not at all).
        return pipeline.cluster_stage(spec, pipeline.run(spec, until="embed", cached_only=True))
    return pipeline.run(spec, until="cluster", cached_only=cached_only)


def write_output(run: RunSettings, spec: pipeline.Spec, exporter, result: pipeline.Result, decisions: Decisions,
                 progress: bool) -> dict:
    """Identity folders, noise/, faces/, the run's face vectors, identity_clustering.json, the contact sheet."""
    # Each person keeps the identity number the folder's earlier output gave them; new people get new ones.
    numbers, next_before = stable_numbers(earlier_report(run.output_dir), result.records)
    renumber(result.records, numbers)
    # Names and hidden flags follow their people to whatever cluster numbers they got.
    meta = journal.identity_meta(result.records, decisions.facts) if decisions.facts else None
    t0 = time.perf_counter()
    prepare_output(run.output_dir, spec.input_dir, exporter.overwrite)
    export(result.records, run.output_dir, exporter.mode, exporter.save_faces, spec.embedder, progress, meta=meta)
    result.timings["export"] = time.perf_counter() - t0
    save_face_vectors(spec.cache_dir, result.keys["embeddings"], result.records, result.embeddings)
    models = {"detector": spec.detector.model_id, "embedder": spec.embedder.model_id}
    if result.instance_model:  # the whole-instance stream described images
        models["instance"] = result.instance_model
    report = build_report(result, run.config, models, spec.input_dir.resolve(), run.output_dir.resolve(), meta=meta,
                          next_number_after=next_before)
    report["metrics"] = run_metrics(run, result)
    write_report(run.output_dir, report)
    write_marker(run.output_dir)
    write_contact_sheet(report, result, run.output_dir)
    return report


def earlier_report(output_dir: Path) -> dict | None:
    """The output folder's previous clustering (its identity numbers carry over), None when there is none."""
    try:
        return read_report(output_dir)
    except InputError as e:
        if (Path(output_dir) / JSON_NAME).exists():
            log.warning("identity numbers start afresh: %s", e)
        return None


def show(report: dict, console: Console, exporter, extra) -> None:
    print_summary(report, console)
    console.print(f"wrote {Path(report['output_dir']) / JSON_NAME}")
    if extra:
        console.print(exporter.summary(extra))


def track(run: RunSettings, report: dict, result: pipeline.Result, console: Console) -> None:
    """Hand the finished run to a detached MLflow logger: its seconds come after this command returns."""
    if not run.tracking.enabled:
        return
    output_dir = Path(report["output_dir"])
    sheet = output_dir / CONTACT_SHEET
    handed = tracking.hand_off_cluster_run(run.tracking.uri, run.tracking.experiment, report, result.embeddings,
                                           row_labels(result), output_dir / JSON_NAME,
                                           sheet if sheet.is_file() else None, run.cache_dir)
    if handed:
        report["mlflow"] = handed
        uri = handed["tracking_uri"]
        console.print(f"MLflow: this run appears in {uri} within seconds, logged in the background")
        # The direct link (a fresh UI opens the experiment on its GenAI overview, not the runs table); a new
        # experiment's id exists once the logger created it, so only an experiment's first run waits for it.
        experiment = run.tracking.experiment
        console.print(mlflow_link.runs_line(uri, experiment, mlflow_link.wait_for_id(uri, experiment)))


# ---------------------------------------------------------------- helpers


def run_metrics(run: RunSettings, result: pipeline.Result) -> dict:
    """Label-free metrics always; ground-truth metrics when `labels` is set."""
    metrics = label_free(result.embeddings, row_labels(result))
    metrics["images"] = len(result.records)
    metrics["image_noise_share"] = sum(r.label < 0 for r in result.records) / max(len(result.records), 1)
    if run.labels:
        truth = ground_truth(run.labels, result.records)
        if not truth:
            raise ConfigError(f"labels={run.labels} matched none of the input images")
        metrics.update({k: v for k, v in evaluate(result.records, truth).items()
                        if k not in ("images", "noise_share")})
    return metrics


def centrality(result: pipeline.Result) -> dict[str, float]:
    """rel_path -> cosine of its identity's face to that identity's centre (higher = more typical)."""
    X, labels = result.embeddings, row_labels(result)
    ids, C = centres(X, labels)
    out: dict[str, float] = {}
    for r in result.records:
        for k, row in r.face_rows.items():
            label = r.face_labels.get(k, -1)
            if label >= 0:
                sim = float(X[row] @ C[np.searchsorted(ids, label)])
                out[r.rel_path] = max(out.get(r.rel_path, -1.0), sim)
    return out


def write_contact_sheet(report: dict, result: pipeline.Result, output_dir: Path) -> Path | None:
    """output_dir/contact_sheet.png: a row per identity, most central faces, then the least confident."""
    from ..export.contact_sheet import identity_sheet

    path = output_dir / CONTACT_SHEET
    try:
        return identity_sheet(report, path, centrality(result))
    except (OSError, ValueError) as e:  # an image changed or vanished since it was read
        log.warning("could not draw %s: %s", path, e)
        path.unlink(missing_ok=True)  # never leave an earlier run's sheet beside this run's JSON
        return None


def row_labels(result: pipeline.Result) -> np.ndarray:
    """Cluster label of each embedding row (every embedded face)."""
    labels = np.full(len(result.embeddings), -1)
    for r in result.records:
        for k, row in r.face_rows.items():
            labels[row] = r.face_labels.get(k, -1)
    return labels
