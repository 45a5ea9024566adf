"""idcluster review: every action, undo/redo, the journal under kill -9, security rules, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from idcluster.workflows import cluster as app
from idcluster.cli import app as cli_app
from idcluster.config.settings import load_settings
from idcluster.export.report import JSON_NAME
from idcluster.evidence import decisions as D
from idcluster.export.locking import output_lock
from idcluster.review.server import cookie_name, create_app
from idcluster.review.store import ReviewStore

PER_PERSON = 4


@pytest.fixture(scope="module")
def clustered(demo_set, tmp_path_factory):
    """A real clustering of 4 crops x 7 people; tests review private copies of its output."""
    src, truth = demo_set
    root = tmp_path_factory.mktemp("review")
    inp = root / "in"
    inp.mkdir()
    keep = {}
    for identity in sorted(set(truth.values())):
        for name in [n for n in sorted(truth) if truth[n] == identity][:PER_PERSON]:
            shutil.copy2(src / name, inp / name)
            keep[name] = identity
    cfg = load_settings([f"input_dir={inp}", f"output_dir={root / 'out'}", f"cache_dir={root / 'cache'}", "workers=1",
                       "clusterer.min_cluster_size=3", "tracking=off"])
    from rich.console import Console

    app.cluster(cfg, Console(quiet=True), progress=False)
    return root, inp, keep


@pytest.fixture
def out(clustered, tmp_path):
    root, _, _ = clustered
    dest = tmp_path / "out"
    shutil.copytree(root / "out", dest)
    return dest


def disk_state(out: Path) -> dict[str, set[str]]:
    return {d.name: set(os.listdir(d)) for d in out.iterdir()
            if d.is_dir() and (d.name.startswith("identity_") or d.name == "noise")}


def assert_consistent(out: Path) -> dict:
    """Folders, identity_clustering.json and the journal's replay all agree."""
    report = json.loads((out / JSON_NAME).read_text())
    disk = disk_state(out)
    want: dict[str, set[str]] = {}
    for c in report["clusters"]:
        want[c["identity"]] = {p.replace("/", "__") for p in c["images"]}
        assert c["size"] == len(c["images"])
    want["noise"] = {p.replace("/", "__") for p in report["noise"]["images"]}
    assert disk == want
    entries = D.read_journal(out / D.JOURNAL_NAME)
    assert report["review"]["entries"] == len(entries)
    base, actions = D.epochs(entries)[-1]
    state = D.replay(base, actions)
    for img in report["images"]:
        for fc in img["face_clusters"]:
            assert state.assign[D.face_key(img["sha256"], fc["face_index"])] == fc["cluster"]
    return report


def by_truth(store: ReviewStore, truth: dict[str, str]) -> dict[str, int]:
    """True person -> the identity holding most of their faces."""
    from collections import Counter

    votes: dict[str, Counter] = {}
    for k, (i, _) in store.faces.items():
        votes.setdefault(truth[store.images[i]["rel_path"]], Counter())[store.state.assign[k]] += 1
    return {t: c.most_common(1)[0][0] for t, c in votes.items()}


def test_every_action_changes_folders_and_json(out, clustered):
    truth = clustered[2]
    store = ReviewStore(out)
    assert_consistent(out)
    ids = sorted(store.state.live_ids())
    a, b = ids[0], ids[1]
    size_a, size_b = len(store.state.members(a)), len(store.state.members(b))

    store.act({"op": "merge", "ids": [a, b], "into": a})
    assert b not in store.state.live_ids() and len(store.state.members(a)) == size_a + size_b
    assert not any(n.startswith(f"identity_{b:03d}") for n in disk_state(out))
    assert_consistent(out)

    part = store.state.members(a)[:size_b]
    store.act({"op": "split", "faces": part})
    new = store.state.assign[part[0]]
    assert new not in ids and set(store.state.members(new)) == set(part)
    assert_consistent(out)

    store.act({"op": "rename", "id": a, "name": "Lisa K."})
    assert f"identity_{a:03d}_Lisa_K" in disk_state(out)
    rep = assert_consistent(out)
    assert next(c for c in rep["clusters"] if c["cluster"] == a)["name"] == "Lisa K."

    face = store.state.members(a)[0]
    store.act({"op": "reject", "faces": [face]})
    assert store.state.assign[face] == D.NOISE
    rep = assert_consistent(out)
    img = rep["images"][store.faces[face][0]]
    assert img["identity"] == "noise" and img["reason"] == "review_noise"

    other = store.state.members(ids[2])[0]
    store.act({"op": "move", "faces": [other, face], "to": a})
    assert store.state.assign[other] == a == store.state.assign[face]
    store.act({"op": "move", "faces": [other], "to": -1})
    assert store.state.assign[other] == D.NOISE
    assert_consistent(out)

    store.act({"op": "hide", "id": ids[3]})
    rep = assert_consistent(out)
    assert next(c for c in rep["clusters"] if c["cluster"] == ids[3])["hidden"] is True
    store.act({"op": "unhide", "id": ids[3]})
    assert "hidden" not in next(c for c in assert_consistent(out)["clusters"] if c["cluster"] == ids[3])

    every = float("inf")  # every pair, not only those closer than the threshold
    pairs = store.suggestions(max_ratio=every)
    store.act({"op": "dismiss", "a": pairs[0]["a"], "b": pairs[0]["b"]})
    assert (pairs[0]["a"], pairs[0]["b"]) not in {(p["a"], p["b"]) for p in store.suggestions(max_ratio=every)}
    assert ReviewStore(out).suggestions(max_ratio=every) == store.suggestions(max_ratio=every)  # stays dismissed

    for bad in ({"op": "merge", "ids": [a]}, {"op": "split", "faces": []}, {"op": "move", "faces": ["x:0"], "to": a},
                {"op": "rename", "id": 9999, "name": "x"}, {"op": "explode"}):
        with pytest.raises(Exception, match="."):
            store.act(bad)
    assert_consistent(out)


def test_undo_redo_every_action(out):
    store = ReviewStore(out)
    before = disk_state(out)
    ids = sorted(store.state.live_ids())
    m = store.state.members(ids[0])
    steps = [{"op": "merge", "ids": ids[:2]}, {"op": "split", "faces": m[:2]}, {"op": "rename", "id": ids[0], "name": "Ann"},
             {"op": "reject", "faces": [m[2]]}, {"op": "move", "faces": [m[3]], "to": ids[2]}, {"op": "hide", "id": ids[2]}]
    snapshots = [before]
    for s in steps:
        store.act(s)
        snapshots.append(disk_state(out))
    for snap in reversed(snapshots[:-1]):
        store.act({"op": "undo"})
        assert disk_state(out) == snap
    with pytest.raises(Exception, match="nothing to undo"):
        store.act({"op": "undo"})
    for snap in snapshots[1:]:
        store.act({"op": "redo"})
        assert disk_state(out) == snap
    store.act({"op": "undo"})
    store.act({"op": "rename", "id": ids[1] if ids[1] in store.state.live_ids() else ids[0], "name": "B"})
    with pytest.raises(Exception, match="nothing to redo"):  # a new action clears the redo stack
        store.act({"op": "redo"})
    assert_consistent(out)
    reopened = ReviewStore(out)  # undo history survives a restart
    assert reopened.state.assign == store.state.assign and len(reopened.state.applied) == len(store.state.applied)


def test_torn_journal_line_is_dropped_and_committed_entry_replayed(out):
    store = ReviewStore(out)
    ids = sorted(store.state.live_ids())
    # A committed entry whose folders/JSON were never written (crash right after the fsync):
    entry = store._entry({"op": "merge", "ids": ids[:2]})
    D.append_entry(store.journal, entry)
    # ... and an entry torn in the middle of its write:
    with open(store.journal, "ab") as f:
        f.write(b'{"op":"rename","id":0,"na')
    reopened = ReviewStore(out)
    assert ids[1] not in reopened.state.live_ids()
    assert store.journal.read_bytes().endswith(b"\n")
    assert_consistent(out)
    (out / D.JOURNAL_NAME).write_text('{"op": "base"\n' + (out / D.JOURNAL_NAME).read_text())
    with pytest.raises(Exception, match="line 1 is not valid JSON"):
        ReviewStore(out)


CHILD = textwrap.dedent("""
    import os, sys, time
    from idcluster.review.store import ReviewStore
    store = ReviewStore(sys.argv[1])
    ids = sorted(store.state.live_ids())
    real_rename = os.rename
    calls = []
    def slow_rename(a, b):
        real_rename(a, b)
        calls.append(1)
        if len(calls) == int(sys.argv[2]):
            print("mid-action", flush=True)
            time.sleep(60)
    os.rename = slow_rename
    store.act({"op": "merge", "ids": ids[:3], "into": ids[0]})
""")


@pytest.mark.parametrize("after_renames", [1, 3])
def test_kill_9_in_the_middle_of_an_action(out, after_renames):
    """A real process is killed with SIGKILL while moving files; the next start is consistent
    and holds the committed action."""
    before = ReviewStore(out)
    ids = sorted(before.state.live_ids())
    moved = sum(len(before.state.members(i)) for i in ids[1:3])
    del before
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(after_renames)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "mid-action"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    # killed after the commit and before the JSON: the journal holds the merge, the folders are half done
    half = disk_state(out)
    journal = D.read_journal(out / D.JOURNAL_NAME)
    assert journal[-1]["kind"] == "merge"
    assert json.loads((out / JSON_NAME).read_text())["review"]["entries"] == len(journal) - 1
    left = sum(len(v) for k, v in half.items() if k.startswith((f"identity_{ids[1]:03d}", f"identity_{ids[2]:03d}")))
    assert 0 < left < moved
    store = ReviewStore(out)
    rep = assert_consistent(out)
    assert ids[1] not in store.state.live_ids() and ids[2] not in store.state.live_ids()
    assert next(c for c in rep["clusters"] if c["cluster"] == ids[0])["size"] >= moved


def test_input_images_never_touched(out, clustered):
    inp = clustered[1]
    stamp = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in inp.iterdir()}
    store = ReviewStore(out)
    ids = sorted(store.state.live_ids())
    store.act({"op": "merge", "ids": ids})
    store.act({"op": "move", "faces": list(store.faces)[:5], "to": -1})
    store.act({"op": "undo"})
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in inp.iterdir()} == stamp


# ---------------------------------------------------------------- HTTP API and security


@pytest.fixture
def client(out):
    store = ReviewStore(out)
    web = create_app(store, token="secret-token")
    with TestClient(web, base_url="http://127.0.0.1") as c:
        c.store = store
        yield c


H = {"X-Review-Token": "secret-token"}


def test_token_on_every_request_and_header_for_changes(client):
    assert client.get("/").status_code == 403
    assert client.get("/api/state").status_code == 403
    assert client.get("/api/state?token=wrong").status_code == 403
    page = client.get("/?token=secret-token")
    assert page.status_code == 200 and 'content="secret-token"' in page.text
    assert page.cookies.get(cookie_name("secret-token")) == "secret-token"
    assert client.get("/api/state").status_code == 200  # the cookie from the first visit
    assert client.get("/static/app.js").status_code == 200
    # With only the cookie (what a cross-site form would send), changes are refused:
    assert client.post("/api/action", json={"op": "hide", "id": 0}).status_code == 403
    assert client.post("/api/action?token=secret-token", json={"op": "hide", "id": 0}).status_code == 403
    assert client.post("/api/action", json={"op": "hide", "id": 0}, headers=H).status_code == 200


def test_api_actions_and_pages(client):
    state = client.get("/api/state", headers=H).json()
    ids = [d["id"] for d in state["identities"]]
    assert state["noise"]["id"] == -1 and not state["can_undo"]
    page = client.get(f"/api/identity/{ids[0]}?limit=2", headers=H).json()
    assert page["total"] >= 3 and len(page["members"]) == 2
    dists = [m["distance"] for m in client.get(f"/api/identity/{ids[0]}", headers=H).json()["members"]]
    assert dists == sorted(dists, reverse=True)  # doubtful first: farthest from the identity's core
    face = page["members"][0]["face"]
    thumb = client.get(f"/thumb/{face}", headers=H)
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert client.get(f"/image/{page['members'][0]['image']}", headers=H).status_code == 200
    r = client.post("/api/action", json={"op": "split", "faces": [face]}, headers=H).json()
    assert r["ok"] and client.get(f"/api/identity/{r['to']}", headers=H).json()["total"] == 1
    assert client.post("/api/action", json={"op": "undo"}, headers=H).json()["ok"]
    assert client.get(f"/api/identity/{r['to']}", headers=H).status_code == 404
    assert client.post("/api/action", json={"op": "merge", "ids": [ids[0]]}, headers=H).status_code == 400
    assert client.post("/api/action", content=b"not json", headers=H).status_code == 400
    assert client.get("/api/identity/abc", headers=H).status_code in (400, 404)


def test_api_every_action_then_undo_all(client, out):
    ids = [d["id"] for d in client.get("/api/state", headers=H).json()["identities"]]
    faces = [m["face"] for m in client.get(f"/api/identity/{ids[0]}", headers=H).json()["members"]]
    pairs = client.get("/api/suggestions", headers=H).json()["suggestions"] or [{"a": ids[2], "b": ids[3]}]
    steps = [{"op": "dismiss", "a": pairs[0]["a"], "b": pairs[0]["b"]},
             {"op": "merge", "ids": [ids[0], ids[1]], "into": ids[0]},
             {"op": "split", "faces": faces[:1]},
             {"op": "rename", "id": ids[0], "name": "Named"},
             {"op": "move", "faces": faces[1:2], "to": ids[2]},
             {"op": "move", "faces": faces[2:3], "to": -1},
             {"op": "reject", "faces": faces[3:4]},
             {"op": "hide", "id": ids[2]}, {"op": "unhide", "id": ids[2]}, {"op": "hide", "id": ids[3]}]
    before = disk_state(out)
    for step in steps:
        r = client.post("/api/action", json=step, headers=H)
        assert r.status_code == 200, (step, r.text)
        assert_consistent(out)
    state = client.get("/api/state", headers=H).json()
    assert any(d["name"] == "Named" and d["reviewed"] for d in state["identities"])
    assert any(d["hidden"] for d in state["identities"]) and state["noise"]["size"] == 2
    for _ in steps:
        assert client.post("/api/action", json={"op": "undo"}, headers=H).status_code == 200
    assert disk_state(out) == before and not client.get("/api/state", headers=H).json()["can_undo"]
    assert client.post("/api/action", json={"op": "undo"}, headers=H).status_code == 400
    assert client.post("/api/action", json={"op": "redo"}, headers=H).status_code == 200


def test_folder_reclustered_under_an_open_review_is_refused(out):
    store = ReviewStore(out)
    report = json.loads((out / JSON_NAME).read_text())
    (out / JSON_NAME).write_text(json.dumps({**report, "created": "later"}))  # what a new `cluster` run does
    with pytest.raises(Exception, match="changed on disk"):
        store.act({"op": "hide", "id": sorted(store.state.live_ids())[0]})


def test_only_output_files_and_inputs_are_served(client, out, tmp_path):
    folder = next(d for d in sorted(os.listdir(out)) if d.startswith("identity_"))
    name = sorted(os.listdir(out / folder))[0]
    assert client.get(f"/files/{folder}/{name}", headers=H).status_code == 200
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (out / folder / "link_out.jpg").symlink_to(secret)
    os.symlink(tmp_path, out / "dirlink")
    for path in ["/files/../secret.txt", "/files/..%2fsecret.txt", "/files/%2e%2e/secret.txt",
                 f"/files/{folder}/..%2f..%2fsecret.txt", "/files/%2Fetc%2Fpasswd", "/files//etc/passwd",
                 f"/files/{secret}", f"/files/{folder}/link_out.jpg", "/files/dirlink/secret.txt",
                 f"/files/{D.JOURNAL_NAME}/../../secret.txt", "/files/.review.lock", "/files/%00",
                 "/static/../server.py", "/static/%2e%2e/server.py", "/thumb/..%2f..%2fsecret.txt", "/image/999999",
                 "/image/-1"]:
        r = client.get(path, headers=H)
        assert r.status_code == 404, path
        assert b"do not serve" not in r.content


def test_symlink_export_serves_registered_inputs(clustered, tmp_path):
    root, inp, _ = clustered
    cfg = load_settings([f"input_dir={inp}", f"output_dir={tmp_path / 'sym'}", f"cache_dir={root / 'cache'}", "workers=1",
                       "clusterer.min_cluster_size=3", "tracking=off", "export.mode=symlink"])
    from rich.console import Console

    app.cluster(cfg, Console(quiet=True), progress=False)
    store = ReviewStore(tmp_path / "sym")
    folder = next(d for d in sorted(os.listdir(tmp_path / "sym")) if d.startswith("identity_"))
    name = sorted(os.listdir(tmp_path / "sym" / folder))[0]
    assert (tmp_path / "sym" / folder / name).is_symlink()
    with TestClient(create_app(store, token="t"), base_url="http://127.0.0.1") as c:
        assert c.get(f"/files/{folder}/{name}", headers={"X-Review-Token": "t"}).status_code == 200
    ids = sorted(store.state.live_ids())
    store.act({"op": "merge", "ids": ids[:2]})  # moves keep them links to the inputs
    assert all(p.is_symlink() for p in (tmp_path / "sym").glob("identity_*/*"))
    assert_consistent(tmp_path / "sym")


def test_saved_face_crops_follow_their_faces(clustered, tmp_path):
    root, inp, _ = clustered
    out = tmp_path / "faces_out"
    cfg = load_settings([f"input_dir={inp}", f"output_dir={out}", f"cache_dir={root / 'cache'}", "workers=1",
                       "clusterer.min_cluster_size=3", "tracking=off", "export.save_faces=true"])
    from rich.console import Console

    app.cluster(cfg, Console(quiet=True), progress=False)
    store = ReviewStore(out)
    ids = sorted(store.state.live_ids())
    face = store.state.members(ids[0])[0]
    store.act({"op": "merge", "ids": ids[1:3], "into": ids[1]})
    store.act({"op": "rename", "id": ids[1], "name": "Both"})
    store.act({"op": "reject", "faces": [face]})
    crops = {d.name: sorted(os.listdir(d)) for d in (out / "faces").iterdir()}
    stem = Path(store.images[store.faces[face][0]]["rel_path"]).stem
    assert f"{stem}.png" in crops["noise"]
    folder = f"identity_{ids[1]:03d}_Both"
    assert len(crops[folder]) == len(store.state.members(ids[1])) and f"identity_{ids[2]:03d}" not in crops
    assert sum(map(len, crops.values())) == len(store.faces)


def test_group_photo_follows_each_of_its_faces(clustered, tmp_path):
    """faces.select=all: a group photo sits in the folder of each of its people; moving one
    of its faces moves that copy only."""
    from idcluster.experiments.demo_data import insightface_image

    root, inp0, _ = clustered
    inp = tmp_path / "in"
    shutil.copytree(inp0, inp)
    shutil.copy2(insightface_image("t1.jpg"), inp / "group.jpg")
    out = tmp_path / "group_out"
    cfg = load_settings([f"input_dir={inp}", f"output_dir={out}", f"cache_dir={root / 'cache'}", "workers=1",
                       "clusterer.min_cluster_size=3", "tracking=off", "faces.select=all"])
    from rich.console import Console

    app.cluster(cfg, Console(quiet=True), progress=False)
    store = ReviewStore(out)
    group = [k for k, (i, _) in store.faces.items() if store.images[i]["rel_path"] == "group.jpg"]
    placed = [k for k in group if store.state.assign[k] != D.NOISE]
    assert len(placed) >= 2
    with_group = lambda: {d for d, files in disk_state(out).items() if "group.jpg" in files}  # noqa: E731
    folders = store.folder_names()
    assert with_group() == {folders[store.state.assign[k]] for k in placed}
    store.act({"op": "reject", "faces": [placed[0]]})
    folders = store.folder_names()
    assert with_group() == {folders[store.state.assign[k]] for k in placed[1:]}
    store.act({"op": "move", "faces": placed[1:], "to": -1})
    assert with_group() == {"noise"}
    store.act({"op": "undo"})
    store.act({"op": "undo"})
    assert with_group() == {store.folder_names()[store.state.assign[k]] for k in placed}
    assert_consistent(out)


# ---------------------------------------------------------------- CLI


def test_cli_refuses_missing_incompatible_and_locked(out, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli_app, ["review", str(tmp_path / "nothing"), "--no-browser"])
    assert r.exit_code == 2 and "not a folder" in r.output and "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(cli_app, ["review", f"output_dir={tmp_path / 'empty'}", "--no-browser"])
    assert r.exit_code == 2 and "identity_clustering.json not found" in r.output
    rep = json.loads((out / JSON_NAME).read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / JSON_NAME).write_text(json.dumps({**rep, "format_version": 0}))
    r = runner.invoke(cli_app, ["review", str(tmp_path / "old"), "--no-browser"])
    assert r.exit_code == 2 and "format_version 0" in r.output
    (tmp_path / "old" / JSON_NAME).write_text("{not json")
    assert runner.invoke(cli_app, ["review", str(tmp_path / "old"), "--no-browser"]).exit_code == 2
    with output_lock(out, "review"):  # a review (or a cluster run) holds the folder
        r = runner.invoke(cli_app, ["review", str(out), "--no-browser"])
    assert r.exit_code == 2 and f"pid {os.getpid()}" in r.output and "another idcluster process" in r.output
    r = runner.invoke(cli_app, ["review", str(out), "--no-browser", "--port", "-5"])
    assert r.exit_code == 2 and "--port" in r.output


def test_loopback_check():
    from idcluster.cli.review import _loopback

    assert _loopback("127.0.0.1") and _loopback("localhost") and _loopback("::1")
    assert not _loopback("0.0.0.0") and not _loopback("192.168.1.5")


# ---------------------------------------------------------------- decisions survive re-clustering


def recluster(clustered, out: Path, inp: Path, *overrides: str) -> dict:
    from rich.console import Console

    root = clustered[0]
    cfg = load_settings([f"input_dir={inp}", f"output_dir={out}", f"cache_dir={root / 'cache'}", "workers=1",
                       "clusterer.min_cluster_size=3", "tracking=off", "export.overwrite=true", *overrides])
    return app.cluster(cfg, Console(quiet=True), progress=False)


def test_decisions_hold_after_reclustering_with_other_settings_and_new_images(clustered, out, demo_set, tmp_path):
    root, inp0, truth = clustered
    src, all_truth = demo_set
    store = ReviewStore(out)
    person = by_truth(store, truth)
    people = sorted(person)
    # merge two different people (the user knows better), split one, name, reject, hide
    store.act({"op": "merge", "ids": [person[people[0]], person[people[1]]], "into": person[people[0]]})
    merged = store.state.members(person[people[0]])
    store.act({"op": "rename", "id": person[people[0]], "name": "The Pair"})
    split_src = store.state.members(person[people[2]])
    split = split_src[:2]
    store.act({"op": "split", "faces": split})
    store.act({"op": "rename", "id": person[people[3]], "name": "Dana"})
    dana = store.state.members(person[people[3]])
    rejected = store.state.members(person[people[4]])[0]
    reject_from = [k for k in store.state.members(person[people[4]]) if k != rejected]
    store.act({"op": "reject", "faces": [rejected]})
    store.act({"op": "hide", "id": person[people[5]]})
    hidden = store.state.members(person[people[5]])
    del store

    inp = tmp_path / "in"
    shutil.copytree(inp0, inp)
    new = [n for n in sorted(all_truth) if all_truth[n] == people[3] and n not in truth][:3]
    for n in new:  # more photos of Dana arrive
        shutil.copy2(src / n, inp / n)
    report = recluster(clustered, out, inp, "clusterer=agglomerative", "clusterer.distance_threshold=0.05")

    label = {}
    for img in report["images"]:
        for fc in img["face_clusters"]:
            label[D.face_key(img["sha256"], fc["face_index"])] = fc["cluster"]
    by_cluster = {c["cluster"]: c for c in report["clusters"]}
    pair = {label[k] for k in merged}
    assert len(pair) == 1 and -1 not in pair and by_cluster[pair.pop()]["name"] == "The Pair"
    rest = {label[k] for k in split_src if k not in split}
    assert {label[k] for k in split}.isdisjoint(rest)
    dana_label = {label[k] for k in dana}
    assert len(dana_label) == 1
    dana_label = dana_label.pop()
    assert by_cluster[dana_label]["name"] == "Dana" and by_cluster[dana_label]["identity"].endswith("_Dana")
    assert (out / by_cluster[dana_label]["identity"]).is_dir()
    for img in report["images"]:
        if img["rel_path"] in new:
            assert img["cluster"] == dana_label, img["rel_path"]  # new images join the named identity
    assert label[rejected] not in {label[k] for k in reject_from}
    hidden_label = {label[k] for k in hidden}
    assert len(hidden_label) == 1 and by_cluster[hidden_label.pop()].get("hidden") is True
    names = [c.get("name") for c in report["clusters"] if c.get("name")]
    assert sorted(names) == ["Dana", "The Pair"]

    # The next review starts from the new clustering and keeps the old decisions.
    again = ReviewStore(out)
    assert_consistent(out)
    assert {again._ident(i).name for i in again.state.live_ids()} >= {"Dana", "The Pair"}
    # `idcluster export` (cache only) re-materialises with the reviewed names
    r = CliRunner().invoke(cli_app, ["export", f"input_dir={inp}", f"output_dir={out}", f"cache_dir={root / 'cache'}",
                                     "clusterer.min_cluster_size=3", "tracking=off", "export.overwrite=true",
                                     "clusterer=agglomerative", "clusterer.distance_threshold=0.05", "-q"])
    assert r.exit_code == 0, r.output
    assert any(p.name.endswith("_Dana") for p in out.iterdir())


def test_review_decisions_override_points_at_another_journal(clustered, out, tmp_path):
    store = ReviewStore(out)
    ids = sorted(store.state.live_ids())
    store.act({"op": "rename", "id": ids[0], "name": "Kept"})
    members = store.state.members(ids[0])
    journal = tmp_path / "decisions.jsonl"
    shutil.copy2(out / D.JOURNAL_NAME, journal)
    fresh = tmp_path / "fresh"
    report = recluster(clustered, fresh, clustered[1], f"review.decisions={journal}")
    named = [c for c in report["clusters"] if c.get("name") == "Kept"]
    assert len(named) == 1 and named[0]["reviewed"] is True
    key_to_label = {D.face_key(i["sha256"], i["face_index"]): i["cluster"] for i in report["images"] if i["sha256"]}
    assert {key_to_label[k] for k in members} == {named[0]["cluster"]}
    from idcluster.errors import ConfigError

    with pytest.raises(ConfigError, match="no such file"):
        recluster(clustered, fresh, clustered[1], f"review.decisions={tmp_path / 'missing.jsonl'}")


def test_images_placed_without_a_face_stay_with_their_identity(out):
    """An image placed by appearance (no clustered face) stays in its identity's folder, follows a
    merge, and goes to noise only when its identity is emptied; undo brings it back, also after a restart."""
    report = json.loads((out / JSON_NAME).read_text())
    img = next(i for i in report["images"] if i["cluster"] >= 0)
    img.update(face=None, face_index=None, face_clusters=[], faces=[], evidence="appearance")
    (out / JSON_NAME).write_text(json.dumps(report))
    ident, fname = img["cluster"], img["rel_path"].replace("/", "__")
    store = ReviewStore(out)
    folder = lambda: {d for d, files in disk_state(out).items() if fname in files}  # noqa: E731
    assert folder() == {store.folder_names()[ident]}
    assert_consistent(out)
    other = next(i for i in sorted(store.state.live_ids()) if i != ident)
    store.act({"op": "merge", "ids": [other, ident], "into": other})
    assert folder() == {store.folder_names()[other]}
    assert_consistent(out)
    store.act({"op": "undo"})
    store.act({"op": "move", "faces": store.state.members(ident), "to": -1})
    assert folder() == {"noise"}
    entry = next(i for i in assert_consistent(out)["images"] if i["rel_path"] == img["rel_path"])
    assert entry["cluster"] == -1 and entry["reason"] == "review_noise"
    del store
    again = ReviewStore(out)  # a new session: the JSON says noise, the journal's base still knows
    again.act({"op": "undo"})
    assert folder() == {again.folder_names()[ident]}
    entry = next(i for i in assert_consistent(out)["images"] if i["rel_path"] == img["rel_path"])
    assert entry["cluster"] == ident and entry["reason"] is None


# ---------------------------------------------------------------- a name reused (issue 18 item 4)


def test_rename_to_a_taken_name_asks_instead_of_naming(client, out):
    ids = [d["id"] for d in client.get("/api/state", headers=H).json()["identities"]]
    assert client.post("/api/action", json={"op": "rename", "id": ids[0], "name": "Ann Lee"}, headers=H).status_code == 200
    journal = (out / D.JOURNAL_NAME).read_bytes()
    for taken in ("Ann Lee", " ann  lee ", "ANN LEE"):
        r = client.post("/api/action", json={"op": "rename", "id": ids[1], "name": taken}, headers=H)
        assert r.status_code == 409, taken
        assert r.json()["conflict"] == {"id": ids[1], "name": taken.strip(), "other": ids[0]}
        assert "already the name" in r.json()["error"]
    assert (out / D.JOURNAL_NAME).read_bytes() == journal  # nothing was named
    # the same name again on its own identity, and another name, are plain renames
    assert client.post("/api/action", json={"op": "rename", "id": ids[0], "name": "Ann Lee"}, headers=H).status_code == 200
    assert client.post("/api/action", json={"op": "rename", "id": ids[1], "name": "Anna Lee"}, headers=H).status_code == 200
    # "same person": the page merges them into the named identity
    r = client.post("/api/action", json={"op": "merge", "ids": [ids[0], ids[1]], "into": ids[0]}, headers=H)
    assert r.status_code == 200
    state = client.get("/api/state", headers=H).json()
    assert [d["name"] for d in state["identities"] if d["id"] == ids[0]] == ["Ann Lee"]


def test_a_shared_name_never_merges_two_identities_on_the_next_run(clustered, out, caplog):
    """Two identities that carry one name without the user merging them (a journal written before
    the page asked) stay two people on the next run; a confirmed merge stays one."""
    root, inp, truth = clustered
    store = ReviewStore(out)
    person = by_truth(store, truth)
    a, b, c, d = (person[p] for p in sorted(person)[:4])
    store.act({"op": "rename", "id": a, "name": "Sam"})
    D.append_entry(store.journal, {"op": "rename", "id": b, "name": "sam"} | store._stamp(len(store.all_entries)))
    faces_a, faces_b = store.state.members(a), store.state.members(b)
    store.act({"op": "rename", "id": c, "name": "Kim"})
    store.act({"op": "merge", "ids": [c, d], "into": c})  # confirmed: one person
    faces_cd = store.state.members(c)
    del store
    with caplog.at_level("WARNING"):
        report = recluster(clustered, out, inp)
    assert "both named 'sam'" in caplog.text.lower() and "kept apart" in caplog.text
    label = {D.face_key(i["sha256"], fc["face_index"]): fc["cluster"] for i in report["images"] for fc in i["face_clusters"]}
    (la,), (lb,) = {label[k] for k in faces_a}, {label[k] for k in faces_b}
    assert la != lb and -1 not in (la, lb)
    names = {c["cluster"]: c.get("name") for c in report["clusters"]}
    assert {names[la].casefold(), names[lb].casefold()} == {"sam"}
    assert len({label[k] for k in faces_cd}) == 1 and names[label[faces_cd[0]]] == "Kim"


# ---------------------------------------------------------------- what an action did (issue 18 item 5)


def test_actions_say_what_they_did_and_where_the_faces_went(client):
    state = client.get("/api/state", headers=H).json()
    ids = [d["id"] for d in state["identities"]]
    folders = {d["id"]: d["folder"] for d in state["identities"]}
    faces = [m["face"] for m in client.get(f"/api/identity/{ids[0]}", headers=H).json()["members"]]
    r = client.post("/api/action", json={"op": "split", "faces": faces[:2]}, headers=H).json()
    new = r["to"]
    assert r["folder"] == client.get(f"/api/identity/{new}", headers=H).json()["identity"]["folder"]
    assert r["message"] == f"split 2 faces off into {r['folder']}"
    r = client.post("/api/action", json={"op": "move", "faces": faces[2:3], "to": ids[1]}, headers=H).json()
    assert r["message"] == f"moved 1 face to {folders[ids[1]]}" and r["to"] == ids[1]
    r = client.post("/api/action", json={"op": "rename", "id": ids[1], "name": "Bo"}, headers=H).json()
    assert r["message"] == f"named {folders[ids[1]]} 'Bo'"
    r = client.post("/api/action", json={"op": "merge", "ids": [ids[2], ids[3]], "into": ids[2]}, headers=H).json()
    assert r["message"] == f"merged {folders[ids[3]]} into {folders[ids[2]]}"
    r = client.post("/api/action", json={"op": "undo"}, headers=H).json()
    assert r["message"] == f"undid: merged {folders[ids[3]]} into {folders[ids[2]]}"
    r = client.post("/api/action", json={"op": "undo"}, headers=H).json()
    assert r["message"] == f"undid: named {folders[ids[1]]} 'Bo'"
    r = client.post("/api/action", json={"op": "redo"}, headers=H).json()
    assert r["message"] == f"redid: named {folders[ids[1]]} 'Bo'"
    r = client.post("/api/action", json={"op": "reject", "faces": faces[3:4]}, headers=H).json()
    assert r["message"].startswith("took 1 face out of ") and r["message"].endswith("(not this person)")
    assert client.get("/api/state", headers=H).json()["last"] == r["message"]


# ---------------------------------------------------------------- the first view first (issue 19 item 5)


def test_first_view_needs_only_the_replayed_journal(out):
    """What the CLI does: open without touching the folders, answer the first view from the replayed
    journal (suggestions are their own request), then bring the folders in line with the journal."""
    from idcluster.review.server import reconcile_after_first_view

    store = ReviewStore(out)
    ids = sorted(store.state.live_ids())
    D.append_entry(store.journal, store._entry({"op": "merge", "ids": ids[:2]}))  # committed, never applied
    del store
    before = disk_state(out)
    json_before = (out / JSON_NAME).read_bytes()
    store = ReviewStore(out, reconcile=False)
    web = create_app(store, token="secret-token")
    with TestClient(web, base_url="http://127.0.0.1") as c:
        state = c.get("/api/state", headers=H).json()
        assert ids[1] not in [d["id"] for d in state["identities"]]  # the replayed journal: merged
        assert "suggestions" not in state and web.state.first_view.is_set()
        assert disk_state(out) == before and (out / JSON_NAME).read_bytes() == json_before  # nothing touched yet
        assert isinstance(c.get("/api/suggestions", headers=H).json()["suggestions"], list)
        reconcile_after_first_view(store, web, delay=0)
        assert_consistent(out)
        assert not any(name.startswith(f"identity_{ids[1]:03d}") for name in disk_state(out))
        # an action before or after reconciling leaves folders, JSON and journal agreeing
        assert c.post("/api/action", json={"op": "hide", "id": ids[0]}, headers=H).json()["ok"]
        assert_consistent(out)
