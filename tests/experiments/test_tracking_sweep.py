"""MLflow tracking of cluster runs (through the detached logger) and sweeps, read back through MLflow's client."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from idcluster.cli import app
from idcluster.experiments.metrics import label_free
from idcluster.experiments.run_spool import spool_root, wait_idle
from idcluster.experiments.sweep import expand_grid
from idcluster.errors import ConfigError

runner = CliRunner()


def labels_csv(truth, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["relative_path", "identity"])
        w.writerows(sorted(truth.items()))
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def logged(tmp_path) -> list[dict]:
    """Wait for the detached logger(s) of this test's cache; the statuses of spools left (failed ones)."""
    return wait_idle(spool_root(tmp_path / "cache"), timeout=240)


def test_cluster_run_is_logged_with_params_metrics_and_artifacts(small_set, tmp_path):
    folder, truth = small_set
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    result = invoke("cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}", "clusterer.min_cluster_size=3",
                    f"labels={labels_csv(truth, tmp_path / 'labels.csv')}", f"tracking_uri={uri}", "-q")
    assert result.exit_code == 0, result.output
    assert f"in {uri}" in result.output
    assert logged(tmp_path) == []
    c = client(uri)
    [exp] = [e for e in c.search_experiments() if e.name == "idcluster"]
    # The "model training" kind (a fresh UI still opens the GenAI overview: the printed link goes to the runs).
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert f"MLflow runs: http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs" in result.output
    [run] = c.search_runs([exp.experiment_id])
    assert run.data.params["clusterer.min_cluster_size"] == "3"
    assert run.data.params["embedder._target_"].endswith("DlibEmbedder")
    assert run.data.metrics["bcubed_f1"] >= 0.95 and run.data.metrics["identities"] == 7
    assert "silhouette" in run.data.metrics and "intra_similarity" in run.data.metrics
    names = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert names == {"identity_clustering.json", "contact_sheet.png", "embedding_scatter.png"}
    report = json.loads((tmp_path / "out" / "identity_clustering.json").read_text())
    assert report["metrics"]["bcubed_f1"] == pytest.approx(run.data.metrics["bcubed_f1"])


def test_tracking_off_and_broken_tracking_keep_the_output(small_set, tmp_path, caplog):
    folder, _ = small_set
    base = [f"input_dir={folder}", "clusterer.min_cluster_size=3", "-q"]
    assert invoke("cluster", *base, f"output_dir={tmp_path / 'a'}", "tracking=off").exit_code == 0
    assert not (tmp_path / "mlflow.db").exists()
    result = invoke("cluster", *base, f"output_dir={tmp_path / 'b'}", "tracking_uri=nosuchscheme://x")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "identity_clustering.json").is_file()
    # The detached logger fails; the next run says so (and tries again).
    [failed] = logged(tmp_path)
    assert failed["state"] == "failed" and "nosuchscheme" in failed["error"]
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        result = invoke("cluster", *base, f"output_dir={tmp_path / 'c'}", "tracking_uri=nosuchscheme://x")
    assert result.exit_code == 0, result.output
    assert "MLflow tracking failed" in caplog.text and "nosuchscheme" in caplog.text
    assert (tmp_path / "c" / "identity_clustering.json").is_file()
    assert [s["state"] for s in logged(tmp_path)] == ["failed", "failed"]


def test_expand_grid_uses_hydra_sweep_syntax():
    points, swept = expand_grid(["clusterer.min_cluster_size=3,5", "clusterer.min_samples=range(1,3)", "workers=1"])
    assert swept == ["clusterer.min_cluster_size", "clusterer.min_samples"]
    assert points == [
        ["clusterer.min_cluster_size=3", "clusterer.min_samples=1", "workers=1"],
        ["clusterer.min_cluster_size=3", "clusterer.min_samples=2", "workers=1"],
        ["clusterer.min_cluster_size=5", "clusterer.min_samples=1", "workers=1"],
        ["clusterer.min_cluster_size=5", "clusterer.min_samples=2", "workers=1"],
    ]
    points, _ = expand_grid(["clusterer=glob(*,exclude=hdbscan)"])
    assert [p[0] for p in points] == ["clusterer=agglomerative", "clusterer=chinese_whispers", "clusterer=dbscan",
                                      "clusterer=knn_graph"]
    points, _ = expand_grid(["reducer=choice(none,pca)"])
    assert len(points) == 2
    with pytest.raises(ConfigError, match="bad sweep override"):
        expand_grid(["clusterer.min_samples=1,,"])


def test_sweep_logs_parent_and_children_and_writes_the_table(small_set, tmp_path, monkeypatch):
    folder, truth = small_set
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    from idcluster.detectors.retinaface import RetinaFaceDetector

    calls = {"n": 0}
    original = RetinaFaceDetector.detect

    def counting(self, image):
        calls["n"] += 1
        return original(self, image)

    monkeypatch.setattr(RetinaFaceDetector, "detect", counting)
    result = invoke("sweep", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}", "workers=1",
                    f"labels={labels_csv(truth, tmp_path / 'labels.csv')}", f"tracking_uri={uri}",
                    "clusterer=agglomerative,chinese_whispers", "++embedder.distance_threshold=0.002,0.07", "-q")
    assert result.exit_code == 0, result.output
    assert calls["n"] == len(truth)  # detected once for all four points
    assert "best (bcubed_f1 = 1.0000): idcluster cluster" in result.output
    c = client(uri)
    [exp] = [e for e in c.search_experiments() if e.name == "idcluster"]
    # The direct link to the runs table (a fresh UI would open the GenAI overview; issue 18 item 16).
    assert f"MLflow runs: http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs   " \
           f"(after: mlflow ui --backend-store-uri {uri})" in result.output
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    names = {r.info.run_name for r in children}  # each child is named by its swept values
    assert len(names) == 4 and all("clusterer=" in n and "distance_threshold=" in n for n in names)
    assert {a.path for a in c.list_artifacts(parents[0].info.run_id)} == {"sweep.json", "sweep.csv", "sweep.png"}
    f1 = sorted(r.data.metrics["bcubed_f1"] for r in children)
    assert f1[0] < 0.9 and f1[-1] == 1.0  # a threshold of 0.002 splits most people apart
    [sweep_dir] = (tmp_path / "out" / "sweeps").iterdir()
    rows = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["bcubed_f1"] for r in rows] == sorted((r["bcubed_f1"] for r in rows), reverse=True)


def test_cluster_multirun_is_a_sweep(small_set, tmp_path):
    folder, _ = small_set
    result = invoke("cluster", "-m", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}", "tracking=off",
                    "clusterer.min_cluster_size=2,3", "-q")
    assert result.exit_code == 0, result.output
    assert "sweep: 2 points over clusterer.min_cluster_size; sorting by silhouette" in result.output


def test_sweep_without_a_swept_key(tmp_path):
    result = invoke("sweep", f"input_dir={tmp_path}", "clusterer.min_cluster_size=3")
    assert result.exit_code == 2
    assert result.output == "error: nothing to sweep: give at least one key=a,b,c (or range(), choice(), glob())\n"


def test_label_free_metrics():
    X = np.array([[1.0, 0.0], [0.98, 0.2], [0.0, 1.0], [0.2, 0.98], [0.7, 0.7]])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    m = label_free(X, np.array([0, 0, 1, 1, -1]))
    assert m["identities"] == 2 and m["noise_share"] == pytest.approx(0.2)
    assert m["cluster_size_min"] == m["cluster_size_max"] == 2
    assert 0.99 < m["intra_similarity"] <= 1.0
    # Centres sit at half-angles theta/2 and pi/2 - theta/2 (theta = atan(0.2/0.98)): cos(pi/2 - theta).
    assert m["nearest_inter_similarity"] == pytest.approx(np.cos(np.pi / 2 - np.arctan(0.2 / 0.98)), abs=1e-6)
    assert m["silhouette"] > 0.8
    assert label_free(X, np.full(5, -1))["identities"] == 0


def test_point_composer_equals_a_full_compose():
    from omegaconf import OmegaConf

    from idcluster.config.compose import load_config
    from idcluster.experiments.sweep import PointComposer

    base = ["input_dir=x", "clusterer.min_cluster_size=4"]
    compose = PointComposer(base, defaults=["workers=1"])
    points, _ = expand_grid(["clusterer=hdbscan,agglomerative", "embedder=dlib,facenet",
                             "++embedder.distance_threshold=0.05,0.2", "faces.min_face_size=10"])
    for point in points:  # base's min_cluster_size exists in both clusterers
        expected = load_config([*base, *point], defaults=["workers=1"])
        assert compose(point).config == OmegaConf.to_container(expected, resolve=True)
    with pytest.raises(ConfigError, match="bad override"):
        compose(["clusterer.no_such_key=1"])


def test_sweep_table_never_cuts_values_on_a_narrow_terminal():
    from rich.console import Console

    from idcluster.experiments.sweep import print_table

    rows = [{"point": i, "overrides": [f"clusterer={c}", "embedder.distance_threshold=0.0725"], "bcubed_f1": 0.9,
             "noise_share": 0.1, "identities": 7} for i, c in enumerate(["chinese_whispers", "agglomerative"])]
    console = Console(width=60, record=True, color_system=None)
    print_table(console, rows, "bcubed_f1", ["clusterer", "embedder.distance_threshold"])
    text = console.export_text()
    assert "chinese_whispers" in text and "agglomerative" in text and "0.0725" in text and "…" not in text
