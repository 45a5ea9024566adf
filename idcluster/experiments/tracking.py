"""MLflow tracking: one run per `cluster`, a parent run with one child per sweep point.

Tracking is a side channel: any MLflow failure is one warning and the
clustering output is kept. `cluster` never imports MLflow: after its result is
written and printed it hands the run to a detached logger
(`hand_off_cluster_run`: a spool folder, idcluster.experiments.run_spool, and a
process of its own, idcluster.experiments.mlflow_logger) and exits; that
logger's MLflow import, store opening and drawing (~4 s) no longer delay the
command. Earlier spools that failed or whose logger was killed are named in one
line by the next `cluster` and logged again. Sweeps and `subcluster-pose` log
in-process through `Tracker` (a sweep's parent run and children).
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import run_spool

log = logging.getLogger(__name__)

OFF_VALUES = (False, None, 0, "off", "false", "no", "0")
# MLflow 3's UI opens an experiment by its kind: "custom_model_development" is its "model training"
# kind (a runs table); without the tag a fresh `mlflow ui` shows the GenAI overview page.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
def enabled(value) -> bool:
    return value not in OFF_VALUES and str(value).lower() not in OFF_VALUES


def default_uri() -> str:
    """MLflow's own default store: a SQLite file in the working folder."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]  # MLflow's param value limit
    return out


def numeric(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number)) and np.isfinite(v)}


class Tracker:
    """Thin wrapper over the MLflow fluent API with failure -> warning."""

    def __init__(self, uri: str | None, experiment: str):
        self.uri = uri or default_uri()
        self.experiment = experiment
        self.ok = True
        self.experiment_id: str | None = None
        try:
            import mlflow

            for name in ("mlflow", "alembic"):  # their INFO lines would drown the run's own output
                logging.getLogger(name).setLevel(logging.WARNING)
            self.mlflow = mlflow
            mlflow.set_tracking_uri(self.uri)
            exp = mlflow.set_experiment(experiment)
            self.experiment_id = exp.experiment_id
            if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
                mlflow.MlflowClient(self.uri).set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except Exception as e:  # noqa: BLE001 - tracking must never cost the clustering output
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        self.ok = False
        log.warning("MLflow tracking failed (%s: %s); results are kept on disk", type(e).__name__, str(e).splitlines()[0][:200])

    @contextmanager
    def run(self, name: str, nested: bool = False, tags: dict | None = None):
        """A run context; yields the run id, or None when tracking is off or failed."""
        active = None
        if self.ok:
            try:
                active = self.mlflow.start_run(run_name=name, nested=nested, tags=tags)
            except Exception as e:  # noqa: BLE001
                self._fail(e)
        try:
            yield active.info.run_id if active else None
        finally:
            if active is not None:
                try:
                    self.mlflow.end_run()
                except Exception as e:  # noqa: BLE001
                    self._fail(e)

    def log(self, params: dict | None = None, metrics: dict | None = None, artifacts: list[Path] = ()) -> None:
        if not self.ok:
            return
        try:
            if params:
                self.mlflow.log_params(params)
            if metrics:
                self.mlflow.log_metrics(numeric(metrics))
            for path in artifacts:
                self.mlflow.log_artifact(str(path))
        except Exception as e:  # noqa: BLE001
            self._fail(e)


def contact_sheet(report: dict, path: Path, centrality: dict[str, float] | None = None) -> Path:
    """The run's contact sheet (drawn by idcluster.export.contact_sheet; kept here for callers of this name)."""
    from ..export.contact_sheet import identity_sheet

    return identity_sheet(report, path, centrality)


def embedding_scatter(X: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """2-D PCA projection of the embeddings, coloured by cluster (noise grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    if len(X) >= 2:
        P = PCA(n_components=2, random_state=0).fit_transform(X)
        noise = labels < 0
        ax.scatter(P[noise, 0], P[noise, 1], s=8, c="lightgrey", label="noise")
        ax.scatter(P[~noise, 0], P[~noise, 1], s=10, c=labels[~noise] % 20, cmap="tab20")
    ax.set_title(f"{len(set(labels[labels >= 0].tolist()))} identities, {int((labels < 0).sum())} noise (PCA)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def log_cluster_run(tracker: Tracker, report: dict, X: np.ndarray, labels: np.ndarray, json_path: Path,
                    nested: bool = False, name: str | None = None, sheet: Path | None = None) -> str | None:
    """One MLflow run: params, metrics, the JSON, the contact sheet (`sheet`, or drawn here) and a scatter."""
    with tracker.run(name or Path(report["input_dir"]).name, nested=nested) as run_id:
        if run_id is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            artifacts = [json_path]
            try:
                artifacts.append(sheet if sheet is not None and sheet.is_file() else contact_sheet(report, Path(tmp) / "contact_sheet.png"))
                artifacts.append(embedding_scatter(X, labels, Path(tmp) / "embedding_scatter.png"))
            except (OSError, ValueError) as e:
                log.warning("could not draw run images: %s", e)
            tracker.log(flatten(report["config"]), report["metrics"], artifacts)
        return run_id


# ---------------------------------------------------------------- hand-off to the detached logger

LOGGER_LOG = "logger.log"
_LOG_MAX_BYTES = 1 << 20


def start_logger(spools: list[Path], root: Path) -> bool:
    """Start `python -m idcluster.experiments.mlflow_logger SPOOL...` in a session of its own (it outlives this
    process and a Ctrl-C in its terminal), output appended to root/logger.log. False when it could not start."""
    log_path = root / LOGGER_LOG
    try:
        if log_path.is_file() and log_path.stat().st_size > _LOG_MAX_BYTES:
            os.replace(log_path, log_path.with_suffix(".log.1"))
        with open(log_path, "ab") as out:
            kwargs: dict = {"stdin": subprocess.DEVNULL, "stdout": out, "stderr": subprocess.STDOUT, "close_fds": True}
            if os.name == "nt":  # pragma: no cover - no Windows CI
                kwargs["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
            else:
                kwargs["start_new_session"] = True
            subprocess.Popen([sys.executable, "-m", "idcluster.experiments.mlflow_logger", *map(str, spools)], **kwargs)
        return True
    except OSError as e:
        log.warning("could not start the MLflow logger (%s): the run waits in %s and the next run logs it", e, spools[0])
        return False


def _scatter_rows(X: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    rows = np.arange(len(X))
    if len(rows) > run_spool.SCATTER_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(rows, run_spool.SCATTER_ROWS, replace=False))
    return {"X": np.asarray(X[rows], dtype=np.float32), "labels": np.asarray(labels[rows])}


def hand_off_cluster_run(uri: str | None, experiment: str, report: dict, X: np.ndarray, labels: np.ndarray,
                         json_path: Path, sheet: Path | None, cache_dir: str | Path) -> dict | None:
    """Spool this run (params, metrics, the JSON and contact sheet, the scatter's data) and start a detached
    logger for it and for any earlier spool left pending; say so for those in one line each.

    Returns {"tracking_uri", "spool"}, or None when the run could not be spooled (one warning)."""
    root = run_spool.spool_root(cache_dir)
    uri = uri or default_uri()
    run = {"uri": uri, "experiment": experiment, "name": Path(report["input_dir"]).name,
           "params": {**flatten(report["config"]), **flatten({"clusterer_ran": report.get("clusterer_ran") or {}})},
           "metrics": numeric(report["metrics"]),
           "tags": {"mlflow.user": getpass.getuser(), "mlflow.source.name": "idcluster cluster",
                    "mlflow.source.type": "LOCAL"},
           "cwd": os.getcwd(), "created": time.time()}
    artifacts = [p for p in (json_path, sheet) if p is not None and Path(p).is_file()]
    try:
        spool = run_spool.write(root, run, artifacts, _scatter_rows(X, labels))
    except OSError as e:
        log.warning("MLflow tracking failed (could not spool the run in %s: %s); results are kept on disk", root, e)
        return None
    earlier = run_spool.pending(root, exclude=(spool,))
    for p in earlier:
        if p.status["state"] == "failed":
            log.warning("MLflow tracking failed for the earlier %s (%s, attempt %d): logging it again in the background "
                        "(to forget it: rm -r %s)", p.describe(), p.status.get("error"), p.status.get("attempts", 0), p.path)
        else:
            why = "its logger was stopped" if p.status["state"] == "logging" else "no logger started"
            log.warning("MLflow logging of the earlier %s did not finish (%s): logging it again in the background",
                        p.describe(), why)
    start_logger([spool, *(p.path for p in earlier)], root)
    return {"tracking_uri": uri, "spool": str(spool)}
