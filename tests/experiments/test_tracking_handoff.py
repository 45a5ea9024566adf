"""`cluster` hands its run to a detached MLflow logger: the command never imports MLflow, a killed or failed
logger is reported by the next run and its run logged again exactly once."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from idcluster.cli import app
from idcluster.experiments import mlflow_logger, run_spool, tracking

runner = CliRunner()


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri):
    c = client(uri)
    [exp] = [e for e in c.search_experiments() if e.name == "idcluster"]
    return c.search_runs([exp.experiment_id])


def params_logged(db, spool_id) -> bool:
    """The logger created the spool's run and logged its params (read with sqlite3: an MLflow client opening a store
    that is still being created would race its schema migration)."""
    if not db.is_file():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM params p JOIN tags t ON t.run_uuid = p.run_uuid "
                               "WHERE t.key = ? AND t.value = ?", (run_spool.SPOOL_TAG, spool_id)).fetchone()[0] > 0
        finally:
            con.close()
    except sqlite3.Error:
        return False


def make_spool(root, uri, tmp_path, created=None):
    report = tmp_path / "identity_clustering.json"
    report.write_text(json.dumps({"clusters": []}))
    run = {"uri": uri, "experiment": "idcluster", "name": "crafted", "params": {"clusterer.eps": "0.5"},
           "metrics": {"identities": 3.0, "noise_share": 0.25}, "tags": {}, "cwd": str(tmp_path),
           "created": created or time.time()}
    X = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    return run_spool.write(root, run, [report], {"X": X, "labels": np.arange(30) % 3})


def test_cluster_exits_without_importing_mlflow_and_the_run_follows(small_set, tmp_path):
    folder, _ = small_set
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    code = ("import atexit, sys; from idcluster.cli import main; "
            "atexit.register(lambda: print('mlflow imported:', 'mlflow' in sys.modules)); main()")
    out = subprocess.run([sys.executable, "-c", code, "cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}",
                          "clusterer.min_cluster_size=3", "workers=1", f"tracking_uri={uri}", "-q"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "IDCLUSTER_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mlflow imported: False" in out.stdout
    assert f"appears in {uri} within seconds" in out.stdout
    assert run_spool.wait_idle(run_spool.spool_root(tmp_path / "cache"), timeout=240) == []
    [run] = runs_of(uri)
    # The runs table's direct link, its id read without MLflow (the experiment's first run waits for the logger).
    assert f"MLflow runs: http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs" in out.stdout
    assert run.info.status == "FINISHED" and run.data.metrics["identities"] == 7
    assert {a.path for a in client(uri).list_artifacts(run.info.run_id)} == {
        "identity_clustering.json", "contact_sheet.png", "embedding_scatter.png"}
    assert run.data.tags["mlflow.source.name"] == "idcluster cluster"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="a named pipe holds the logger mid-way")
def test_a_killed_logger_is_reported_and_its_run_logged_exactly_once(small_set, tmp_path, caplog):
    folder, _ = small_set
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    root = run_spool.spool_root(tmp_path / "cache")
    spool = make_spool(root, uri, tmp_path)
    # The logger creates the run and logs params and metrics, then reads the scatter's data: a named pipe with no
    # writer holds it there, so it is killed with a half-logged run in the store.
    data = (spool / run_spool.SCATTER).read_bytes()
    (spool / run_spool.SCATTER).unlink()
    os.mkfifo(spool / run_spool.SCATTER)
    assert tracking.start_logger([spool], root)
    deadline = time.time() + 180
    while time.time() < deadline and not params_logged(tmp_path / "runs.db", spool.name):
        time.sleep(0.2)
    [half] = runs_of(uri)
    assert half.info.status == "RUNNING" and half.data.tags[run_spool.SPOOL_TAG] == spool.name
    pid = run_spool.status(spool)["pid"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # our child: reap it
    (spool / run_spool.SCATTER).unlink()
    (spool / run_spool.SCATTER).write_bytes(data)
    assert [p.path for p in run_spool.pending(root)] == [spool]

    with caplog.at_level(logging.WARNING, logger="idcluster"):
        result = runner.invoke(app, ["cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}",
                                     "clusterer.min_cluster_size=3", "workers=1", f"tracking_uri={uri}", "-q"])
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if "earlier" in r.getMessage()]
    assert len(lines) == 1 and "did not finish (its logger was stopped)" in lines[0] and "'crafted'" in lines[0]
    assert run_spool.wait_idle(root, timeout=240) == []
    assert not spool.exists()
    runs = runs_of(uri)
    assert len(runs) == 2  # this run, and the killed one completed: no duplicate
    [crafted] = [r for r in runs if r.data.tags.get(run_spool.SPOOL_TAG) == spool.name]
    assert crafted.info.run_id == half.info.run_id and crafted.info.status == "FINISHED"
    assert {a.path for a in client(uri).list_artifacts(crafted.info.run_id)} == {"identity_clustering.json",
                                                                                "embedding_scatter.png"}
    assert len(client(uri).get_metric_history(crafted.info.run_id, "identities")) == 1  # not logged twice


def test_logging_a_spool_again_adds_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    root = run_spool.spool_root(tmp_path / "cache")
    spool = make_spool(root, uri, tmp_path)
    run = run_spool.read(spool)
    first = mlflow_logger.log_run(spool, run)  # logged, but (as if killed now) the spool was not removed
    assert mlflow_logger.log_spool(spool) == first
    assert not spool.exists()
    [only] = runs_of(uri)
    assert only.info.run_id == first and only.info.status == "FINISHED"
    assert len(client(uri).get_metric_history(first, "noise_share")) == 1


def test_which_spools_are_pending(tmp_path):
    root = run_spool.spool_root(tmp_path)
    fresh = make_spool(root, "sqlite:///x.db", tmp_path)  # its logger is about to start
    old = make_spool(root, "sqlite:///x.db", tmp_path)
    run_spool._write_json(old / run_spool.STATUS, {"state": "queued", "attempts": 0,
                                                   "time": time.time() - 2 * run_spool.QUEUED_GRACE_S})
    failed = make_spool(root, "sqlite:///x.db", tmp_path)
    run_spool.set_status(failed, state="failed", error="OperationalError: disk I/O error", attempts=1)
    busy = make_spool(root, "sqlite:///x.db", tmp_path)
    run_spool.set_status(busy, state="logging")
    done = make_spool(root, "sqlite:///x.db", tmp_path)
    run_spool.set_status(done, state="done")
    held = run_spool.lock(busy)  # a live logger on it
    try:
        found = {p.path: p.status["state"] for p in run_spool.pending(root, exclude=(fresh,))}
    finally:
        held.release()
    assert found == {old: "queued", failed: "failed"}
    assert not done.exists() and fresh.exists() and busy.exists()
    assert {p.path for p in run_spool.pending(root)} == {old, failed, busy}  # the logger of `busy` is gone now


def test_a_spool_is_small_at_a_million_faces(tmp_path):
    rows = tracking._scatter_rows(np.zeros((1_000_000, 128), np.float32), np.zeros(1_000_000, np.int64))
    assert len(rows["X"]) == len(rows["labels"]) == run_spool.SCATTER_ROWS
