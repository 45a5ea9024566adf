"""The runs table's direct link (issue 18 item 16): the experiment id read from the store without MLflow."""

from __future__ import annotations

import time

from idcluster.experiments import mlflow_link, tracking


def test_the_id_read_without_mlflow_is_the_one_mlflow_gave(tmp_path):
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    assert mlflow_link.experiment_id(uri, "idcluster") is None  # no store yet
    first = tracking.Tracker(uri, "idcluster")
    second = tracking.Tracker(uri, "other")
    assert first.ok and second.ok and first.experiment_id != second.experiment_id
    assert mlflow_link.experiment_id(uri, "idcluster") == first.experiment_id
    assert mlflow_link.experiment_id(uri, "other") == second.experiment_id
    assert mlflow_link.experiment_id(uri, "nobody") is None
    assert mlflow_link.runs_url(uri, first.experiment_id) == f"http://127.0.0.1:5000/#/experiments/{first.experiment_id}/runs"
    assert mlflow_link.runs_line(uri, "idcluster", first.experiment_id) == (
        f"MLflow runs: http://127.0.0.1:5000/#/experiments/{first.experiment_id}/runs   "
        f"(after: mlflow ui --backend-store-uri {uri})")
    # A deleted experiment has no runs table to open.
    tracking.Tracker(uri, "idcluster").mlflow.MlflowClient(uri).delete_experiment(second.experiment_id)
    assert mlflow_link.experiment_id(uri, "other") is None


def test_a_file_store_and_a_server_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    t = tracking.Tracker(f"file://{store}", "idcluster")
    assert t.ok and mlflow_link.experiment_id(f"file://{store}", "idcluster") == t.experiment_id
    assert mlflow_link.experiment_id(str(store), "idcluster") == t.experiment_id
    # A server serves its own UI; one that does not answer gives no id (and no wait beyond the timeout).
    assert mlflow_link.runs_url("http://mlflow.lan:8080/", "7") == "http://mlflow.lan:8080/#/experiments/7/runs"
    assert mlflow_link.runs_line("http://mlflow.lan:8080", "x", "7") == "MLflow runs: http://mlflow.lan:8080/#/experiments/7/runs"
    assert mlflow_link.experiment_id("http://127.0.0.1:9", "idcluster") is None


def test_no_id_says_where_to_look_and_waits_no_longer_than_asked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    t0 = time.monotonic()
    assert mlflow_link.wait_for_id(uri, "idcluster", timeout=0.5, step=0.1) is None
    assert time.monotonic() - t0 < 3
    assert mlflow_link.runs_line(uri, "idcluster", None) == (
        f"MLflow: mlflow ui --backend-store-uri {uri}, experiment 'idcluster' (its Training runs tab)")
    assert mlflow_link.experiment_id("postgresql://u@h/db", "idcluster") is None
