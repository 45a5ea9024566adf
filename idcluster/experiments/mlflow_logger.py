"""The detached MLflow logger: `python -m idcluster.experiments.mlflow_logger SPOOL...`.

`idcluster cluster` writes its finished run to a spool folder
(idcluster.experiments.run_spool) and starts this process in a session of its
own, so the seconds MLflow costs (its import, opening and migrating the store,
drawing the scatter, copying artifacts) come after the command has returned.
Each spool is logged under its lock, in an order that makes the run visible
first (created with its params and metrics, then the images) and that a
repeat can complete: the run is tagged with the spool id, and a second attempt
on the same spool finds that run and finishes it rather than adding another.
Logged: the spool folder goes. Failed: status.json says why, and the next
`idcluster cluster` says so and tries again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from filelock import FileLock

from . import run_spool
from .tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, embedding_scatter

log = logging.getLogger(__name__)
STORE_WAIT_S = 600  # another logger of the same store: wait for it (a Timeout is a failure, retried next run)


def _experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name)
        except MlflowException:  # another logger created it just now
            exp_id = client.get_experiment_by_name(name).experiment_id
        exp = client.get_experiment(exp_id)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # MLflow 3's UI: a runs table, not the GenAI overview
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def _find_run(client, exp_id: str, spool_id: str):
    from mlflow.entities import ViewType

    runs = client.search_runs([exp_id], filter_string=f"tags.`{run_spool.SPOOL_TAG}` = '{spool_id}'",
                              run_view_type=ViewType.ALL, max_results=1)
    return runs[0] if runs else None


def log_run(spool: Path, run: dict) -> str:
    """Log one spool's run into its store; returns the MLflow run id. Safe to repeat."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(run["uri"])
    exp_id = _experiment_id(client, run["experiment"])
    created_ms = int(run["created"] * 1000)
    existing = _find_run(client, exp_id, run["id"])
    if existing is not None and (existing.info.status == "FINISHED" or existing.info.lifecycle_stage == "deleted"):
        return existing.info.run_id  # logged before the spool could be removed (or deleted by the user since)
    if existing is None:
        tags = {**run.get("tags", {}), run_spool.SPOOL_TAG: run["id"]}
        run_id = client.create_run(exp_id, start_time=created_ms, tags=tags, run_name=run["name"]).info.run_id
    else:
        run_id = existing.info.run_id
    # Fixed timestamps: the same metric logged again is the same row, not a second point.
    client.log_batch(run_id, metrics=[Metric(k, v, created_ms, 0) for k, v in run["metrics"].items()],
                     params=[Param(k, v) for k, v in run["params"].items()],
                     tags=[RunTag(k, v) for k, v in run.get("tags", {}).items()])
    artifacts = spool / run_spool.ARTIFACTS
    if run.get("scatter"):
        with np.load(spool / run_spool.SCATTER) as z:
            X, labels = z["X"], z["labels"]
        try:
            embedding_scatter(X, labels, artifacts / "embedding_scatter.png")
        except (OSError, ValueError) as e:
            log.warning("could not draw the embedding scatter: %s", e)
    for path in sorted(artifacts.iterdir()):
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED", end_time=int(time.time() * 1000))
    return run_id


def log_spool(spool: Path) -> str | None:
    """Log one spool under its lock; None when another logger has it or it is gone."""
    held = run_spool.lock(spool)
    if held is None:
        return None
    try:
        if run_spool.status(spool)["state"] == "done":
            run_spool.remove(spool)
            return None
        run = run_spool.read(spool)
        st = run_spool.set_status(spool, state="logging", attempts=run_spool.status(spool).get("attempts", 0) + 1,
                                  pid=os.getpid(), error=None)
        print(f"{time.strftime('%H:%M:%S')} logging {spool.name} (attempt {st['attempts']}) to {run['uri']}", flush=True)
        try:
            if Path(run.get("cwd", ".")).is_dir():
                os.chdir(run["cwd"])  # relative store paths and artifact roots resolve as in the command
            # One logger per store at a time: two creating a new SQLite store at once break its migration.
            store = hashlib.sha256(run["uri"].encode()).hexdigest()[:16]
            with FileLock(str(spool.parent / f".store-{store}.lock"), timeout=STORE_WAIT_S):
                run_id = log_run(spool, run)
        except Exception as e:  # noqa: BLE001 - any failure is recorded for the next run to report
            traceback.print_exc()
            run_spool.set_status(spool, state="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            return None
        run_spool.set_status(spool, state="done", run_id=run_id)
        run_spool.remove(spool)
        print(f"{time.strftime('%H:%M:%S')} logged {spool.name} as run {run_id}", flush=True)
        return run_id
    finally:
        held.release()


def main(argv: list[str] | None = None) -> int:
    if hasattr(os, "nice"):
        os.nice(10)  # background work: the user's next command comes first
    spools = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    failed = 0
    for spool in spools:
        if log_spool(spool) is None and (spool / run_spool.RUN).is_file() and run_spool.status(spool)["state"] == "failed":
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
