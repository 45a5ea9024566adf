"""Headless Chromium for the browser tests (the review page, a fresh MLflow UI).

Needs Debian's `chromium` and `chromium-driver` and selenium (pip install -e ".[browser]"); a test
asking for it is skipped with that reason where they are missing (CI's second stage installs them).
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def headless_chromium(window: str = "1280,900"):
    """A Selenium driver of a headless Chromium with a window of `window` pixels (the caller quits it)."""
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs chromium and chromedriver on PATH: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={window}"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.implicitly_wait(0)
    return driver
