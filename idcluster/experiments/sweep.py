"""Parameter sweeps: Hydra sweep syntax expanded by Hydra's own parser, run over cached stages.

`a=1,2,3`, `range(...)`, `choice(...)`, `glob(...)` expand to a grid (Hydra's
BasicSweeper does the product); every point reuses the detections and
embeddings of its upstream config (computed once per distinct upstream), so
only reduce + cluster run per point. One MLflow parent run, a child per point.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import json
import logging
import shlex
import time
from contextlib import nullcontext
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from ..pipeline import stages as pipeline
from . import mlflow_link, tracking
from ..workflows.cluster import make_spec, run_metrics
from ..cache.store import cache_key
from ..config.compose import GROUPS, group_options, load_config
from ..config.settings import RunSettings
from ..errors import ConfigError

log = logging.getLogger(__name__)


def expand_grid(overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """(points, swept keys): every combination of the sweep overrides, as override lists."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(f"bad sweep override: {' '.join(str(e).split())}") from None
    expanded = []
    for o in parsed:
        if o.value_type == ValueType.GLOB_CHOICE_SWEEP:
            key = o.get_key_element()
            if key not in GROUPS:
                raise ConfigError(f"glob() sweeps config groups ({', '.join(GROUPS)}), not {key!r}")
            options = o.value().filter(group_options(key))
            if not options:
                raise ConfigError(f"glob matched no option of {key}: {', '.join(group_options(key))}")
            o = OverridesParser.create().parse_override(f"{key}={','.join(options)}")
        expanded.append(o)
    try:
        points = BasicSweeper.split_arguments(expanded, max_batch_size=None)[0]
    except HydraException as e:
        raise ConfigError(f"bad sweep override: {' '.join(str(e).split())}") from None
    swept = [o.get_key_element() for o in expanded if o.is_sweep_override()]
    return points, swept


class PointComposer:
    """Configs of sweep points, as load_config([*base, *point]) would give them.

    Hydra composes once per choice of config-group options; each point's value
    overrides are then applied by Hydra's own override code on a copy (Hydra's
    defaults-list walk costs ~0.25 s a compose, which 100 points would repeat).
    """

    def __init__(self, base: list[str], defaults: list[str] = ()):
        self.base, self.defaults = list(base), list(defaults)
        self.composed: dict[tuple, DictConfig] = {}
        self.parser = OverridesParser.create()

    def __call__(self, point: list[str]) -> RunSettings:
        parsed = self.parser.parse_overrides(list(point))
        groups = tuple(p for p, o in zip(point, parsed) if o.key_or_group in GROUPS)
        values = [o for p, o in zip(point, parsed) if p not in groups]
        if groups not in self.composed:
            self.composed[groups] = load_config([*self.base, *groups], defaults=self.defaults, resolve=False)
        cfg = copy.deepcopy(self.composed[groups])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
            OmegaConf.resolve(cfg)
        except (HydraException, OmegaConfBaseException) as e:
            raise ConfigError(f"bad override: {' '.join(str(e).split())}") from None
        return RunSettings.from_config(cfg)


def _upstream_key(run: RunSettings) -> str:
    """Points with equal keys share detections and embeddings."""
    return cache_key(str(run.input_dir), str(run.cache_dir), run.params("detector"), run.params("embedder"),
                     run.choice("faces"))


def default_metric(run: RunSettings) -> str:
    return run.sweep_metric or ("bcubed_f1" if run.labels else "silhouette")


def run_sweep(base: list[str], sweep_overrides: list[str], console: Console, name: str = "sweep",
              metric: str | None = None, progress: bool = True, defaults: list[str] = ()) -> dict:
    points, swept = expand_grid(sweep_overrides)
    compose_point = PointComposer(base, defaults)
    first = compose_point(points[0])
    metric = metric or default_metric(first)
    minimise = metric.startswith("-")
    metric = metric.lstrip("-")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = first.output_dir / "sweeps" / f"{name}-{stamp}"
    console.print(f"sweep: {len(points)} points over {', '.join(swept) or 'no swept keys'}; sorting by {metric}")

    tracker = tracking.Tracker(first.tracking.uri, first.tracking.experiment) if first.tracking.enabled else None
    upstream: dict[str, pipeline.Result] = {}
    rows: list[dict] = []
    t_start = time.perf_counter()
    with (tracker.run(name, tags={"idcluster.sweep": " ".join(sweep_overrides)}) if tracker else nullcontext()) as parent:
        for i, point in enumerate(points):
            run = compose_point(point)
            key = _upstream_key(run)
            if key not in upstream:
                upstream[key] = pipeline.run(make_spec(run, "embed", progress), until="embed")
            result = upstream[key]
            t0 = time.perf_counter()
            pipeline.cluster_stage(make_spec(run, "cluster", progress=False), result)
            metrics = run_metrics(run, result)
            metrics["seconds"] = time.perf_counter() - t0
            swept_values = [p for p in point if p.split("=", 1)[0] in swept]
            rows.append({"point": i, "overrides": swept_values, **metrics})
            if tracker and parent:
                with tracker.run(" ".join(swept_values) or f"point {i}", nested=True):
                    tracker.log({**tracking.flatten(run.config), **tracking.flatten({"clusterer_ran": result.clusterer_ran}),
                                 "sweep.point": str(i)}, metrics)
        total = time.perf_counter() - t_start
        ranked = sorted(rows, key=lambda r: r.get(metric, float("nan")) if minimise else -r.get(metric, float("-inf")))
        ranked = [r for r in ranked if metric in r] + [r for r in ranked if metric not in r]
        best = ranked[0]
        files = write_outputs(out_dir, ranked, swept, metric)
        if tracker and parent:
            tracker.log({"sweep.grid": " ".join(sweep_overrides), "sweep.metric": metric},
                        {f"best_{metric}": best.get(metric, float("nan")), "points": len(rows)}, files)
    command = "idcluster cluster " + " ".join(shlex.quote(o) for o in [*base, *best["overrides"]])
    print_table(console, ranked, metric, swept)
    console.print(f"best ({metric} = {best.get(metric, float('nan')):.4f}): {command}")
    console.print(f"{len(rows)} points in {total:.1f}s; table and plot in {out_dir}")
    if tracker and tracker.ok:
        console.print(mlflow_link.runs_line(tracker.uri, tracker.experiment, tracker.experiment_id))
    return {"rows": ranked, "best": best, "command": command, "metric": metric, "out_dir": str(out_dir), "seconds": total}


COLUMNS = ("bcubed_f1", "identities", "noise_share", "seconds")  # all metrics are in sweep.csv


def print_table(console: Console, rows: list[dict], metric: str, swept: list[str], limit: int = 20) -> None:
    """One column per swept key (its last name part, values only) so the table stays narrow.

    Values are never cut: each column is at least as wide as its longest value and
    headers fold instead (`chinese_whispers` stays readable on an 80-column terminal).
    """
    shown = rows[:limit]
    values = [dict(o.split("=", 1) for o in r["overrides"]) for r in shown]
    cols = [metric] + [c for c in COLUMNS if c != metric and any(c in r for r in rows)]
    cells = [[f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols] for r in shown]
    table = Table(title=f"sweep points by {metric} (swept: {', '.join(swept)})", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    for key in swept:
        width = max((len(v.get(key, "")) for v in values), default=1)
        table.add_column(key.lstrip("+~").rsplit(".", 1)[-1], min_width=width, overflow="fold")
    for j, c in enumerate(cols):
        width = max((len(row[j]) for row in cells), default=1)
        table.add_column(c, justify="right", min_width=width, overflow="fold")
    for r, v, row in zip(shown, values, cells):
        table.add_row(str(r["point"]), *[v.get(k, "") for k in swept], *row)
    console.print(table)


def write_outputs(out_dir: Path, rows: list[dict], swept: list[str], metric: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, png_path = out_dir / "sweep.json", out_dir / "sweep.csv", out_dir / "sweep.png"
    json_path.write_text(json.dumps(rows, indent=2, default=float))
    keys = sorted({k for r in rows for k in r if k != "overrides"})
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["overrides", *keys])
        for r in rows:
            w.writerow([" ".join(r["overrides"]), *[r.get(k, "") for k in keys]])
    files = [json_path, csv_path]
    try:
        files.append(plot(rows, swept, metric, png_path))
    except (ValueError, OSError) as e:
        log.warning("could not plot the sweep: %s", e)
    return files


def plot(rows: list[dict], swept: list[str], metric: str, path: Path) -> Path:
    """One panel per swept key: the metric at each of its values (all points shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept or ["point"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [dict(o.split("=", 1) for o in r["overrides"]).get(key, str(r["point"])) for r in rows]
        ys = [r.get(metric, float("nan")) for r in rows]
        try:
            xs = [float(v) for v in values]
            ax.scatter(xs, ys, s=14)
        except ValueError:  # categorical values: one column each
            cats = sorted(set(values))
            ax.scatter([cats.index(v) for v in values], ys, s=14)
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
