"""The direct link to an experiment's runs table in the MLflow UI, found without importing MLflow.

A fresh browser on MLflow 3.17's UI opens an experiment on its GenAI "Overview"
page whatever the experiment's tags; the runs table is `#/experiments/<id>/runs`.
`cluster` hands its run to a detached logger and exits without MLflow, so the
experiment's id is read from the store with the standard library: a SQLite
file (read-only), an MLflow server (its REST API) or a file store (meta.yaml).
Other stores get the plain `mlflow ui` line.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse
import urllib.request
from pathlib import Path

UI_DEFAULT = "http://127.0.0.1:5000"  # where `mlflow ui` serves unless told --host/--port
FIRST_RUN_WAIT_S = 20.0  # a new experiment is created by the detached logger: wait this long for its id
_HTTP_TIMEOUT_S = 3.0


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(urllib.parse.unquote(uri[len("sqlite:///"):].split("?", 1)[0]) or ".")


def _file_store(uri: str) -> Path | None:
    if uri.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    if "://" not in uri and ":" not in uri[2:]:  # a plain folder (drive letters aside)
        return Path(uri).expanduser()
    return None


def _from_sqlite(db: Path, name: str) -> str | None:
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
        try:
            row = con.execute("SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active' "
                              "ORDER BY workspace = 'default' DESC LIMIT 1", (name,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # being created or migrated by the logger: not there yet
        return None
    return None if row is None else str(row[0])


def _from_server(uri: str, name: str) -> str | None:
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?" + urllib.parse.urlencode({"experiment_name": name})
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as r:
            return str(json.load(r)["experiment"]["experiment_id"])
    except (OSError, ValueError, KeyError):
        return None


def _from_files(root: Path, name: str) -> str | None:
    if not root.is_dir():
        return None
    for meta in root.glob("*/meta.yaml"):
        try:
            fields = dict(line.split(":", 1) for line in meta.read_text(encoding="utf-8").splitlines() if ":" in line)
        except (OSError, ValueError):
            continue
        if fields.get("name", "").strip().strip("'\"") == name and fields.get("lifecycle_stage", "active").strip() == "active":
            return meta.parent.name
    return None


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the active experiment `name` in the store at `uri` (None: not there, or a store not read here)."""
    if (db := _sqlite_path(uri)) is not None:
        return _from_sqlite(db, name)
    if uri.startswith(("http://", "https://")):
        return _from_server(uri, name)
    if (root := _file_store(uri)) is not None:
        return _from_files(root, name)
    return None


def wait_for_id(uri: str, name: str, timeout: float = FIRST_RUN_WAIT_S, step: float = 0.25) -> str | None:
    """experiment_id, waiting up to `timeout` seconds for a logger that is creating the experiment."""
    end = time.monotonic() + timeout
    while True:
        found = experiment_id(uri, name)
        if found is not None or time.monotonic() >= end:
            return found
        time.sleep(step)


def runs_url(uri: str, exp_id: str) -> str:
    """The runs table of experiment `exp_id`: on the server itself, or on a local `mlflow ui` over the store."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_DEFAULT
    return f"{base}/#/experiments/{exp_id}/runs"


def runs_line(uri: str, name: str, exp_id: str | None) -> str:
    """What to print after a run: the runs table's direct link, and how to start the UI that serves it."""
    serve = "" if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"
    if exp_id is None:
        return f"MLflow: {serve or uri}, experiment {name!r} (its Training runs tab)"
    link = runs_url(uri, exp_id)
    return f"MLflow runs: {link}" + (f"   (after: {serve})" if serve else "")
