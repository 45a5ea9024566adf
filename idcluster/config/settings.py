"""Run settings: the composed Hydra config read once, at the edge, into frozen typed fields.

The CLI composes a DictConfig (`compose.load_config`) and turns it into `RunSettings`
here. Workflows read these fields and build components through `component(group)`
(each one a `_target_` in `conf/<group>/`); no stage below them reads Hydra config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import compose


@dataclass(frozen=True)
class FaceRules:
    """Which face stands for an image, and the filters applied after the cache (faces.*)."""

    select: str
    min_face_size: float
    blur_threshold: float


@dataclass(frozen=True)
class Tracking:
    enabled: bool
    uri: str | None  # None: sqlite:///<working folder>/mlflow.db
    experiment: str


@dataclass(frozen=True)
class RunSettings:
    input_dir: Path | None  # None for commands that read an earlier output instead
    output_dir: Path
    cache_dir: Path
    workers: int
    faces: FaceRules
    seeds: str | None
    frame_pattern: str | None
    track_pattern: str | None
    labels: str | None  # labels.csv or "folders": ground truth for metrics
    review_decisions: Path | None  # an explicit journal; None = the output folder's, when present
    tracking: Tracking
    sweep_metric: str | None
    distance_threshold: float | None  # the embedder's calibrated same-identity cosine distance
    config: dict = field(repr=False, compare=False)  # resolved config, as recorded in the report and MLflow
    _cfg: DictConfig = field(repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "RunSettings":
        from ..experiments.tracking import enabled

        def path(value) -> Path | None:
            return None if value is None else Path(str(value)).expanduser()

        missing = OmegaConf.is_missing(cfg, "input_dir")
        return cls(
            input_dir=None if missing else path(cfg.input_dir),
            output_dir=path(cfg.output_dir),
            cache_dir=path(cfg.cache_dir),
            workers=int(cfg.workers),
            faces=FaceRules(str(cfg.faces.select), float(cfg.faces.min_face_size), float(cfg.faces.blur_threshold)),
            seeds=None if cfg.seeds is None else str(cfg.seeds),
            frame_pattern=cfg.constraints.frame_pattern,
            track_pattern=cfg.constraints.track_pattern,
            labels=None if cfg.labels is None else str(cfg.labels),
            review_decisions=path(cfg.review.decisions),
            tracking=Tracking(enabled(cfg.tracking), cfg.tracking_uri, str(cfg.experiment_name)),
            sweep_metric=cfg.sweep.metric,
            distance_threshold=cfg.embedder.get("distance_threshold"),
            config=OmegaConf.to_container(cfg, resolve=True),
            _cfg=cfg,
        )

    def component(self, group: str) -> Any:
        """A new instance of the component the config chose for `group` (conf/<group>/<option>.yaml)."""
        return compose.build(self._cfg, group)

    def params(self, group: str) -> dict:
        """The group's parameters as they enter cache keys."""
        return compose.params(self._cfg, group)

    def choice(self, group: str) -> dict:
        """The group's resolved config (what a sweep or MLflow records)."""
        return OmegaConf.to_container(self._cfg[group], resolve=True)


def load_settings(overrides: list[str] = (), require_input: bool = True, defaults: list[str] = ()) -> RunSettings:
    """compose.load_config + RunSettings.from_config: what scripts and tests call for a run's settings."""
    return RunSettings.from_config(compose.load_config(overrides, require_input=require_input, defaults=defaults))
