"""Finished runs waiting for MLflow: one folder each, logged by a detached process.

    <cache_dir>/mlflow-spool/<id>/
        run.json      what to log: store URI, experiment, run name, params, metrics, tags, the CLI's folder
        artifacts/    copies of the files to attach (the output folder may change before the logger reads it)
        scatter.npz   embeddings (at most SCATTER_ROWS) and labels: the logger draws the PCA scatter
        status.json   queued | logging | failed | done, with the error, the attempts and the logger's pid
        .lock         held by the logger while it works: an OS lock, so a killed logger leaves none

A folder is written under a temp name and renamed into place (a spool is whole
or absent) and removed once its run is in MLflow. A spool that is not locked
and is failed, or was being logged (its logger died), or has waited longer than
QUEUED_GRACE_S for a logger, is pending: the next `idcluster cluster` names it
in one line and logs it again. The MLflow run carries the spool id as a tag,
so logging a spool twice finds and completes the first run instead of adding one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

SPOOL_DIR = "mlflow-spool"
RUN, STATUS, ARTIFACTS, SCATTER, LOCK = "run.json", "status.json", "artifacts", "scatter.npz", ".lock"
SCATTER_ROWS = 20_000  # a scatter of more points shows nothing more; the spool stays small at 10^6 faces
QUEUED_GRACE_S = 120.0  # a logger is started at once; a queued spool this old never got one
SPOOL_TAG = "idcluster.spool"


def spool_root(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / SPOOL_DIR


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def write(root: Path, run: dict, artifacts: list[Path], scatter: dict[str, np.ndarray] | None = None) -> Path:
    """A new spool folder holding `run`, copies of `artifacts` and the scatter's arrays."""
    root.mkdir(parents=True, exist_ok=True)
    spool_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    tmp = root / f".tmp-{spool_id}"
    (tmp / ARTIFACTS).mkdir(parents=True)
    try:
        names = []
        for path in artifacts:
            shutil.copyfile(path, tmp / ARTIFACTS / path.name)
            names.append(path.name)
        if scatter is not None:
            np.savez(tmp / SCATTER, **scatter)
        _write_json(tmp / RUN, {**run, "id": spool_id, "artifacts": names, "scatter": scatter is not None})
        _write_json(tmp / STATUS, {"state": "queued", "attempts": 0, "time": time.time()})
        os.replace(tmp, root / spool_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / spool_id


def read(spool: Path) -> dict:
    return json.loads((spool / RUN).read_text())


def status(spool: Path) -> dict:
    try:
        return json.loads((spool / STATUS).read_text())
    except (OSError, ValueError):
        return {"state": "queued", "attempts": 0, "time": 0.0}


def set_status(spool: Path, **fields) -> dict:
    st = {**status(spool), **fields, "time": time.time()}
    _write_json(spool / STATUS, st)
    return st


def lock(spool: Path) -> FileLock | None:
    """The spool's lock, held; None when another logger holds it or the spool is gone."""
    if not (spool / RUN).is_file():
        return None
    held = FileLock(str(spool / LOCK), timeout=0)
    try:
        held.acquire()
    except (Timeout, OSError):
        return None
    if not (spool / RUN).is_file():  # logged and removed meanwhile
        held.release()
        return None
    return held


def remove(spool: Path) -> None:
    shutil.rmtree(spool, ignore_errors=True)


@dataclass
class Pending:
    path: Path
    run: dict
    status: dict

    def describe(self) -> str:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.run.get("created", 0)))
        return f"run '{self.run.get('name')}' of {created} for {self.run.get('uri')}"


def pending(root: Path, exclude: tuple[Path, ...] = ()) -> list[Pending]:
    """Spools no live logger is working on that need one: failed, cut short, or never started."""
    if not root.is_dir():
        return []
    found = []
    now = time.time()
    for tmp in root.glob(".tmp-*"):  # a spool whose writer died before renaming it into place
        try:
            if tmp.is_dir() and now - tmp.stat().st_mtime > 24 * 3600:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass
    for spool in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p not in exclude):
        held = lock(spool)
        if held is None:
            continue  # a logger is on it, or it is gone
        try:
            st = status(spool)
            if st["state"] == "done":  # logged; its logger stopped before removing it
                remove(spool)
            elif st["state"] in ("failed", "logging") or now - st.get("time", 0) > QUEUED_GRACE_S:
                found.append(Pending(spool, read(spool), st))
        except (OSError, ValueError, KeyError):
            continue
        finally:
            held.release()
    return found


def wait_idle(root: Path, timeout: float = 120.0, poll: float = 0.1) -> list[dict]:
    """Wait until no spool is queued or being logged (tests, benchmarks); returns the statuses left (failed ones)."""
    deadline = time.time() + timeout
    while True:
        spools = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
        states = [status(p) for p in spools]
        if all(s["state"] == "failed" for s in states) or time.time() > deadline:
            return states
        time.sleep(poll)
