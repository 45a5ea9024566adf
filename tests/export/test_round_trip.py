"""One output, written by `cluster`, changed by review actions, `add` and `subcluster-pose`, read back
by every consumer (review store, kohya export, add, pose): they agree. Every reader refuses an
unknown format_version with one line."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idcluster.cli import app
from idcluster.errors import InputError
from idcluster.evidence import decisions as D
from idcluster.export.identities import identities
from idcluster.export.report import FORMAT_VERSION, JSON_NAME, read_report
from idcluster.review.store import ReviewStore

from tests.conftest import cluster_demo_subset, copy_demo_images
from tests.review.test_review import assert_consistent


def cli(*args, code: int = 0) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == code, r.output
    return r.output


def person_of(store: ReviewStore, truth: dict) -> dict[str, int]:
    """True person -> the identity holding most of their faces."""
    votes: dict[str, Counter] = {}
    for k, (i, _) in store.faces.items():
        votes.setdefault(truth[store.images[i]["rel_path"]], Counter())[store.state.assign[k]] += 1
    return {t: c.most_common(1)[0][0] for t, c in votes.items()}


def members_by_identity(report: dict) -> dict[str, set[str]]:
    return {c["identity"]: set(c["images"]) for c in report["clusters"]}


def assert_files_match(out: Path, report: dict) -> None:
    """Each identity folder and noise/ hold exactly the files of their members (view folders aside)."""
    disk = {d.name: {f.name for f in d.iterdir() if f.is_file()} for d in out.iterdir()
            if d.is_dir() and (d.name.startswith("identity_") or d.name == "noise")}
    want = {c["identity"]: {p.replace("/", "__") for p in c["images"]} for c in report["clusters"]}
    assert disk == {**want, "noise": {p.replace("/", "__") for p in report["noise"]["images"]}}


def test_cluster_review_add_pose_then_every_consumer_agrees(demo_set, tmp_path):
    src, truth = demo_set
    first = copy_demo_images(src, truth, tmp_path / "first", lambda pos, n_id: pos < 3 and n_id < 6)
    second = copy_demo_images(src, truth, tmp_path / "second", lambda pos, n_id: (pos == 3 and n_id < 6) or (n_id == 6 and pos < 4))
    truth = {**first, **second}
    out = tmp_path / "out"
    common = [f"output_dir={out}", "tracking=off", "clusterer.min_cluster_size=3", "workers=1", "-q"]
    cli("cluster", f"input_dir={tmp_path / 'first'}", *common)

    # review: name one person (a name with a space), hide another, "not this person" on a third's face
    store = ReviewStore(out)
    who = person_of(store, truth)
    people = sorted(who)
    named, hidden, rejected_from = who[people[0]], who[people[1]], who[people[2]]
    store.act({"op": "rename", "id": named, "name": "Ann Lee"})
    store.act({"op": "hide", "id": hidden})
    rejected = store.state.members(rejected_from)[0]
    store.act({"op": "reject", "faces": [rejected]})
    del store

    # add: one more photo of each known person, four of a new one
    assert "6 faces joined existing identities, 1 new identities" in cli("add", f"input_dir={tmp_path / 'second'}", *common)
    report = read_report(out)
    by_cluster = {c["cluster"]: c for c in report["clusters"]}
    assert by_cluster[named]["name"] == "Ann Lee" and by_cluster[named]["identity"] == f"identity_{named:03d}_Ann_Lee"
    assert by_cluster[hidden]["hidden"] is True

    # review again: the added faces are where add put them; name the newcomer
    store = ReviewStore(out)
    assert_consistent(out)
    new_person = (set(second.values()) - set(first.values())).pop()
    newcomer = person_of(store, truth)[new_person]
    assert newcomer not in who.values() and len(store.state.members(newcomer)) == 4
    assert len(store.state.members(named)) == 4  # 3 clustered + 1 added
    store.act({"op": "rename", "id": newcomer, "name": "Newcomer"})
    assert_consistent(out)
    del store

    # subcluster-pose over the visible identities
    assert "views per identity" in cli("subcluster-pose", f"output_dir={out}", "tracking=off", "-q")
    report = read_report(out)
    assert report["format_version"] == FORMAT_VERSION
    members = members_by_identity(report)
    visible = {c["identity"] for c in report["clusters"] if not c.get("hidden")}
    names = {c["identity"]: c.get("name") for c in report["clusters"]}
    assert {i: sum(v.values()) for i, v in report["pose"]["views"].items()} == {i: len(members[i]) for i in visible}

    # the review store reads the same identities, members, names and hidden flags
    store = ReviewStore(out)
    assert read_report(out) == report and store.report == report  # reading changed nothing
    assert_files_match(out, report)
    folders = store.folder_names()
    assert set(folders.values()) == set(members)
    for i, folder in folders.items():
        rels = {store.images[store.faces[k][0]]["rel_path"] for k in store.state.members(i)}
        assert rels == members[folder]
        assert store._ident(i).name == names[folder] and store._ident(i).hidden == (folder not in visible)
    assert store.state.assign[rejected] == D.NOISE
    rejected_rel = store.images[store.faces[rejected][0]]["rel_path"]
    assert rejected_rel in report["noise"]["images"]
    del store

    # the typed view (pose, kohya) reads the same
    typed = identities(report)
    assert {i.identity: {m.rel_path for m in i.members} for i in typed} == members
    assert {i.identity: i.name for i in typed} == {f: n or f for f, n in names.items()}
    assert {i.identity for i in typed if not i.hidden} == visible

    # the kohya export: visible identities, their names, their members, the views subcluster-pose recorded
    dest = tmp_path / "train"
    cli("export", f"output_dir={out}", "export.format=kohya", f"export.dest={dest}", "tracking=off", "-q")
    rows = list(csv.DictReader((dest / "manifest.csv").open(encoding="utf-8")))
    by_rel = {img["rel_path"]: img for img in report["images"]}
    got: dict[str, set[str]] = {}
    for row in rows:
        rel = Path(row["source_path"]).name
        got.setdefault(row["identity"], set()).add(rel)
        assert row["name"] == (names[row["identity"]] or row["identity"])
        assert row["view"] == by_rel[rel]["pose"]["view"]
    assert got == {i: members[i] for i in visible}
    assert any(p.name.endswith("_Ann Lee") for p in dest.iterdir())

    # add reads it back: the same images again change nothing
    assert "0 faces joined" in cli("add", f"input_dir={tmp_path / 'second'}", *common)
    again = read_report(out)
    assert members_by_identity(again) == members and again["noise"]["images"] == report["noise"]["images"]
    assert {c["identity"]: (c.get("name"), c.get("hidden")) for c in again["clusters"]} == \
        {c["identity"]: (c.get("name"), c.get("hidden")) for c in report["clusters"]}


@pytest.fixture(scope="module")
def clustered(demo_set, tmp_path_factory):
    return cluster_demo_subset(demo_set, tmp_path_factory.mktemp("versions"))


@pytest.mark.parametrize("version", [0, 99, None])
def test_every_reader_refuses_an_unknown_format_version(clustered, tmp_path, version):
    inputs, src = clustered
    out = tmp_path / "out"
    shutil.copytree(src, out)
    report = json.loads((out / JSON_NAME).read_text())
    if version is None:
        del report["format_version"]
    else:
        report["format_version"] = version
    (out / JSON_NAME).write_text(json.dumps(report))
    found = "no format_version" if version is None else f"format_version {version}"
    line = f"{out / JSON_NAME} has {found}, this idcluster reads format_version {FORMAT_VERSION}"
    with pytest.raises(InputError, match="^" + line.replace(".", r"\.")):
        read_report(out)
    (tmp_path / "new").mkdir()
    commands = [("review", str(out), "--no-browser"),
                ("export", f"output_dir={out}", "export.format=kohya", f"export.dest={tmp_path / 'train'}", "tracking=off"),
                ("subcluster-pose", f"output_dir={out}", "tracking=off"),
                ("add", f"input_dir={tmp_path / 'new'}", f"output_dir={out}", "tracking=off")]
    for args in commands:
        output = cli(*args, code=2)
        assert output.startswith("error: ") and line in output and output.count("\n") == 1, (args, output)
    assert json.loads((out / JSON_NAME).read_text()) == report  # nobody rewrote it
    assert not (tmp_path / "train").exists()
