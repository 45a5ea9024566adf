"""Glue between the composed config and the pipeline: build a Spec, run, export, report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ..pipeline import stages as pipeline
from ..experiments import tracking
from ..evidence.seeds import Seeds
from ..evidence.video_links import VideoLinks
from ..config.compose import build, params
from ..errors import ConfigError
from ..experiments.evaluation import check_labels, evaluate, ground_truth
from ..experiments.metrics import label_free
from ..export.face_vectors import save_face_vectors
from ..export.folders import export, prepare_output
from ..export.locking import output_lock
from ..export.report import JSON_NAME, build_report, check_mode, write_report
from ..export.summary import print_summary
from ..runners import make_runner
from ..evidence import decisions as review_decisions

log = logging.getLogger(__name__)
CONTACT_SHEET = "contact_sheet.png"
STAGE_GROUPS = {"detect": ("detector",), "embed": ("detector", "embedder"), "cluster": ("detector", "embedder", "reducer", "clusterer")}


def make_spec(cfg: DictConfig, until: str, progress: bool = True) -> pipeline.Spec:
    groups = STAGE_GROUPS[until]
    parts = {g: build(cfg, g) for g in groups}
    input_dir = Path(cfg.input_dir).expanduser()
    output_dir = Path(cfg.output_dir).expanduser()
    cache_dir = Path(cfg.cache_dir).expanduser()
    journal = review_journal(cfg) if until == "cluster" else None
    return pipeline.Spec(
        input_dir=input_dir,
        cache_dir=cache_dir,
        detector=parts["detector"],
        embedder=parts.get("embedder"),
        reducer=parts.get("reducer"),
        clusterer=parts.get("clusterer"),
        params={g: params(cfg, g) for g in groups},
        select=cfg.faces.select,
        min_face_size=float(cfg.faces.min_face_size),
        blur_threshold=float(cfg.faces.blur_threshold),
        workers=pipeline.default_workers(int(cfg.workers)),
        batch_images=int(cfg.get("batch_images", 16)),
        exclude=[output_dir, cache_dir],  # outputs placed inside the input are not inputs
        progress=progress,
        runner=make_runner(cfg),
        constraint_sources=(constraint_sources(cfg, input_dir)
                            + ([review_decisions.constraint_source(journal)] if journal else [])) if until == "cluster" else [],
        appearance=build(cfg, "appearance") if until == "cluster" else None,
    )


def constraint_sources(cfg: DictConfig, input_dir: Path) -> list:
    """Seeds and frame/track patterns from the config, each a constraint source."""
    sources: list = []
    if cfg.get("seeds"):
        sources.append(Seeds(str(cfg.seeds), input_dir))
    video = VideoLinks(cfg.constraints.frame_pattern, cfg.constraints.track_pattern)
    if video:
        sources.append(video)
    return sources


def review_journal(cfg: DictConfig) -> Path | None:
    """The review decisions this run honours: review.decisions, else the output folder's journal."""
    if cfg.get("review") and cfg.review.get("decisions"):
        path = Path(str(cfg.review.decisions)).expanduser()
        if not path.is_file():
            raise ConfigError(f"review.decisions={path}: no such file")
        return path
    path = review_decisions.default_path(Path(cfg.output_dir).expanduser())
    return path if path.is_file() else None


def run_stage(cfg: DictConfig, until: str, progress: bool = True) -> pipeline.Result:
    return pipeline.run(make_spec(cfg, until, progress), until=until)


def run_metrics(cfg: DictConfig, result: pipeline.Result) -> dict:
    """Label-free metrics always; ground-truth metrics when `labels` is set."""
    metrics = label_free(result.embeddings, row_labels(result))
    metrics["images"] = len(result.records)
    metrics["image_noise_share"] = sum(r.label < 0 for r in result.records) / max(len(result.records), 1)
    if cfg.labels:
        truth = ground_truth(str(cfg.labels), result.records)
        if not truth:
            raise ConfigError(f"labels={cfg.labels} matched none of the input images")
        metrics.update({k: v for k, v in evaluate(result.records, truth).items()
                        if k not in ("images", "noise_share")})
    return metrics


def cluster(cfg: DictConfig, console: Console, cached_only: bool = False, progress: bool = True) -> dict:
    """Run everything (or read it all from cache), export folders and the JSON; return the report."""
    spec = make_spec(cfg, "cluster", progress)
    output_dir = Path(cfg.output_dir).expanduser()
    # Check the output and the labels before hours of work, not after.
    exporter, pose = build(cfg, "export"), build(cfg, "pose")  # export=folders | kohya | ... (conf/export/)
    check_mode(exporter.mode)
    if cfg.labels:
        check_labels(str(cfg.labels))
    prepare_output(output_dir, spec.input_dir, exporter.overwrite, check_only=True)
    journal = review_journal(cfg)
    reviewed = review_decisions.facts(review_decisions.read_journal(journal)) if journal else None
    track = tracking.enabled(cfg.tracking)
    with output_lock(output_dir, "cluster"):
        if cached_only and journal:
            # Review decisions changed the clustering since `cluster` ran: redo only that cheap step
            # (detections and embeddings still come from the cache or not at all).
            result = pipeline.cluster_stage(spec, pipeline.run(spec, until="embed", cached_only=True))
        else:
            result = pipeline.run(spec, until="cluster", cached_only=cached_only)
        # Names and hidden flags follow their people to whatever cluster numbers they got.
        meta = review_decisions.identity_meta(result.records, reviewed) if reviewed else None
        t0 = time.perf_counter()
        prepare_output(output_dir, spec.input_dir, exporter.overwrite)
        export(result.records, output_dir, exporter.mode, exporter.save_faces, spec.embedder, progress, meta=meta)
        result.timings["export"] = time.perf_counter() - t0
        save_face_vectors(spec.cache_dir, result.keys["embeddings"], result.records, result.embeddings)
        models = {"detector": spec.detector.model_id, "embedder": spec.embedder.model_id}
        report = build_report(result, OmegaConf.to_container(cfg, resolve=True), models, spec.input_dir.resolve(),
                              output_dir.resolve(), meta=meta)
        report["metrics"] = run_metrics(cfg, result)
        write_report(output_dir, report)
        sheet = write_contact_sheet(report, result, output_dir)
        done = exporter.write(output_dir, pose, spec.cache_dir, progress)  # what the format adds, from the JSON
    print_summary(report, console)
    console.print(f"wrote {output_dir / JSON_NAME}")
    if done:
        console.print(exporter.summary(done))
    if track:  # a detached process logs it: MLflow's seconds come after this command returns
        handed = tracking.hand_off_cluster_run(cfg.tracking_uri, cfg.experiment_name, report, result.embeddings,
                                               row_labels(result), output_dir / JSON_NAME, sheet, spec.cache_dir)
        if handed:
            report["mlflow"] = handed
            uri = handed["tracking_uri"]
            console.print(f"MLflow: this run appears in {uri} within seconds, logged in the background "
                          f"(compare: mlflow ui --backend-store-uri {uri})")
    return report


def centrality(result: pipeline.Result) -> dict[str, float]:
    """rel_path -> cosine of its identity's face to that identity's mean embedding (higher = more typical)."""
    out: dict[str, float] = {}
    X = result.embeddings
    labels = row_labels(result)
    means = {l: X[labels == l].mean(axis=0) for l in set(labels.tolist()) if l >= 0}
    means = {l: m / (np.linalg.norm(m) or 1.0) for l, m in means.items()}
    for r in result.records:
        for k, row in r.face_rows.items():
            l = r.face_labels.get(k, -1)
            if l >= 0:
                out[r.rel_path] = max(out.get(r.rel_path, -1.0), float(X[row] @ means[l]))
    return out


def write_contact_sheet(report: dict, result: pipeline.Result, output_dir: Path) -> Path | None:
    """output_dir/contact_sheet.png: a row per identity, most central faces, then the least confident."""
    from ..export.contact_sheet import identity_sheet

    path = output_dir / CONTACT_SHEET
    try:
        return identity_sheet(report, path, centrality(result))
    except (OSError, ValueError) as e:
        log.warning("could not draw %s: %s", path, e)
        return None


def row_labels(result: pipeline.Result) -> np.ndarray:
    """Cluster label of each embedding row (every embedded face)."""
    labels = np.full(len(result.embeddings), -1)
    for r in result.records:
        for k, row in r.face_rows.items():
            labels[row] = r.face_labels.get(k, -1)
    return labels
