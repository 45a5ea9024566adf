"""The link `cluster` prints opens the runs table in a fresh MLflow UI, in a real headless Chromium (issue 18
item 16: a fresh `mlflow ui` opens an experiment on its GenAI "Overview" page; the runs are at
`#/experiments/<id>/runs`).

Needs Debian's `chromium` and `chromium-driver` and selenium (pip install -e ".[browser]"); skipped without
them. A fresh `mlflow ui` takes ~20 s to answer. Set IDCLUSTER_SCREENSHOTS=folder to keep the screenshot
(docs/mlflow_runs.png in the README comes from this test).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from idcluster.experiments import mlflow_link
from idcluster.experiments.run_spool import spool_root, wait_idle
from tests.browser import headless_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def browser():
    driver = headless_chromium("1280,800")
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui():
    """Start `mlflow ui --backend-store-uri URI` (as printed) on a free loopback port; yields a starter."""
    procs = []

    def start(uri: str) -> str:
        port = free_port()
        exe = Path(sys.executable).with_name("mlflow")
        procs.append(subprocess.Popen([str(exe), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                                       "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 180
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(base + "/health", timeout=2).close()
                return base
            except OSError:
                assert procs[-1].poll() is None, "mlflow ui exited"
                time.sleep(0.5)
        pytest.fail("mlflow ui did not answer in 180 s")

    yield start
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)


def test_the_printed_link_opens_the_runs_table_in_a_fresh_browser(small_set, tmp_path, browser, mlflow_ui):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder, _ = small_set
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    exe = Path(sys.executable).with_name("idcluster")
    out = subprocess.run([str(exe), "cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}",
                          "clusterer.min_cluster_size=3", "workers=1", f"tracking_uri={uri}", "-q"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "IDCLUSTER_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stdout + out.stderr
    printed = re.search(r"MLflow runs: (http://127\.0\.0\.1:5000/(#/experiments/(\d+)/runs))   "
                        r"\(after: mlflow ui --backend-store-uri (\S+)\)", out.stdout)
    assert printed, out.stdout
    link, fragment, exp_id, served = printed.groups()
    assert served == uri
    assert wait_idle(spool_root(tmp_path / "cache"), timeout=240) == []

    base = mlflow_ui(served)  # the printed command, on a free port instead of 5000 (shared machines)
    assert mlflow_link.experiment_id(base, "idcluster") == exp_id  # the server's own answer, over REST
    browser.get(f"{base}/{fragment}")
    # The table fills in after its footer: wait for the run's row (the run is named after its folder).
    [row] = WebDriverWait(browser, 90).until(lambda d: d.find_elements(By.LINK_TEXT, folder.name))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert row.is_displayed() and "1 matching run" in body
    assert "Training runs" in body and "Token Usage" not in body  # the runs table, not the GenAI overview
    shots = Path(os.environ.get("IDCLUSTER_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / "mlflow_runs.png"))
