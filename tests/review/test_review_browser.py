"""End to end in a real headless Chromium (Selenium): the page fixes a clustering and the disk follows.

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver);
skipped with that reason where they are missing. Set IDCLUSTER_SCREENSHOTS=folder to keep the
screenshots (docs/review.png in the README comes from this test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from idcluster.export.report import JSON_NAME
from idcluster.evidence import decisions as D

from tests.review.test_review import assert_consistent, clustered, disk_state  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs chromium and chromedriver on PATH: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def server(clustered, tmp_path):
    """`idcluster review OUT --no-browser` as a real process; yields (url, output folder)."""
    out = tmp_path / "out"
    shutil.copytree(clustered[0] / "out", out)
    exe = Path(sys.executable).with_name("idcluster")
    proc = subprocess.Popen([str(exe), "review", str(out), "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = None
    for line in proc.stdout:
        if line.startswith("open http"):
            url = line.split()[1]
            break
    if url is None:
        proc.kill()
        pytest.fail(f"review did not start: {proc.stdout.read()}")
    yield url, out
    proc.terminate()
    proc.wait(timeout=20)


def test_merge_split_rename_reject_undo_in_the_browser(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, out = server
    wait = WebDriverWait(browser, 20)
    shots = Path(os.environ.get("IDCLUSTER_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    status = lambda: browser.find_element(By.ID, "status").text  # noqa: E731

    def done(op):
        wait.until(lambda d: status().startswith(f"done: {op}"))
        browser.execute_script("document.getElementById('status').textContent = ''")

    browser.get(url)
    wait.until(lambda d: status() == "ready")
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards .card")
    assert len(cards) == 7
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#cards img')].every(i => i.complete && i.naturalWidth > 0)"))
    browser.save_screenshot(str(shots / "review_start.png"))

    # merge two identities: check both cards, press m
    ids = [int(c.get_attribute("data-id")) for c in cards[:2]]
    for c in cards[:2]:
        c.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    browser.find_element(By.TAG_NAME, "body").send_keys("m")
    done("merge")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cards .card")) == 6
    merged = json.loads((out / JSON_NAME).read_text())
    assert not any(c["cluster"] == ids[1] for c in merged["clusters"])

    # open the merged identity; click the first face, shift-click the third; split with s
    browser.find_element(By.CSS_SELECTOR, f"#cards .card[data-id='{ids[0]}']").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members .face")) == 8)
    faces = browser.find_elements(By.CSS_SELECTOR, "#members .face")
    faces[0].click()
    ActionChains(browser).key_down(Keys.SHIFT).click(faces[2]).key_up(Keys.SHIFT).perform()
    assert browser.find_element(By.ID, "selection-count").text == "3 selected"
    split_faces = [f.get_attribute("data-face") for f in faces[:3]]
    browser.find_element(By.TAG_NAME, "body").send_keys("s")
    done("split")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members .face")) == 5)

    # rename with r + typing + Enter
    browser.find_element(By.TAG_NAME, "body").send_keys("r")
    name = browser.find_element(By.ID, "name-input")
    name.send_keys("Rachel and Monica", Keys.ENTER)
    done("rename")
    assert any(p.name == f"identity_{ids[0]:03d}_Rachel_and_Monica" for p in out.iterdir())

    # not this person on one face (button), then undo it with z
    first = browser.find_elements(By.CSS_SELECTOR, "#members .face")[0]
    rejected = first.get_attribute("data-face")
    first.click()
    browser.find_element(By.ID, "reject").click()
    done("reject")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members .face")) == 4)
    report = assert_consistent(out)
    assert rejected in {D.face_key(i["sha256"], i["face_index"]) for i in report["images"] if i["cluster"] == -1}
    browser.save_screenshot(str(shots / "review_identity.png"))
    browser.find_element(By.TAG_NAME, "body").send_keys("z")
    done("undo")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members .face")) == 5)

    # the disk: merged + renamed identity of 5, the split-off identity of 3, nothing in noise
    report = assert_consistent(out)
    by_key = {D.face_key(i["sha256"], i["face_index"]): i for i in report["images"] if i["sha256"]}
    named = next(c for c in report["clusters"] if c.get("name") == "Rachel and Monica")
    assert named["size"] == 5 and named["reviewed"] and by_key[rejected]["cluster"] == named["cluster"]
    split_ids = {by_key[k]["cluster"] for k in split_faces}
    assert len(split_ids) == 1 and split_ids != {named["cluster"]} and -1 not in split_ids
    assert len(disk_state(out)[next(iter({by_key[k]["identity"] for k in split_faces}))]) == 3
    assert report["noise"]["size"] == 0
    ops = [e["op"] for e in D.read_journal(out / D.JOURNAL_NAME)]
    assert ops == ["base", "move", "move", "rename", "move", "undo"]

    # help overlay lists the shortcuts
    browser.find_element(By.TAG_NAME, "body").send_keys("?")
    assert "not this person" in browser.find_element(By.ID, "help").text
    browser.find_element(By.CSS_SELECTOR, "#help button").click()

    # back to the overview (Esc): the named identity and the split-off one are cards
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait.until(lambda d: d.find_element(By.ID, "overview").is_displayed())
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#cards .card .title b")]
    assert "Rachel and Monica" in titles and len(titles) == 7
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#cards img')].every(i => i.complete && i.naturalWidth > 0)"))
    browser.save_screenshot(str(shots / "review.png"))
