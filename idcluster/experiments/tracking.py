"""MLflow tracking: one run per `cluster`, a parent run with one child per sweep point.

Tracking is a side channel: any MLflow failure is one warning and the
clustering output is kept. MLflow is imported only when tracking is on, and only
after the run's result is written and printed (its import costs seconds; a
background import during the run measured slower: it competes with the run).
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

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
        try:
            import mlflow

            for name in ("mlflow", "alembic"):  # their INFO lines would drown the run's own output
                logging.getLogger(name).setLevel(logging.WARNING)
            self.mlflow = mlflow
            mlflow.set_tracking_uri(self.uri)
            exp = mlflow.set_experiment(experiment)
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
