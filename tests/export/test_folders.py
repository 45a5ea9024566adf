"""Export: folder layout, the JSON, link modes, and never touching the inputs."""

from __future__ import annotations

import json

import pytest

from idcluster.workflows import cluster as app
from idcluster.errors import InputError
from idcluster.export.report import JSON_NAME, MARKER_NAME, flat_name, identity_names
from idcluster.inputs.scan import sha256_file
from rich.console import Console


def cluster(cfg):
    return app.cluster(cfg, Console(quiet=True), progress=False)


def test_identity_names_widen_past_999():
    assert identity_names(2) == ["identity_000", "identity_001"]
    assert identity_names(1001)[-1] == "identity_1000"


def test_flat_name_keeps_subfolder_paths_unique():
    assert flat_name("a/b/c.jpg") == "a__b__c.jpg"


def test_layout_and_json(small_set, tmp_path, config):
    folder, truth = small_set
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("not an image")
    before = {p: sha256_file(p) for p in folder.rglob("*") if p.is_file()}
    report = cluster(config(folder, "export.save_faces=true"))
    out = tmp_path / "out"

    # Inputs untouched.
    assert {p: sha256_file(p) for p in folder.rglob("*") if p.is_file()} == before
    data = json.loads((out / JSON_NAME).read_text())
    assert data == json.loads(json.dumps(report))
    sizes = [c["size"] for c in data["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 7
    for c in data["clusters"]:
        assert sorted(p.name for p in (out / c["identity"]).iterdir()) == sorted(flat_name(i) for i in c["images"])
        assert len(list((out / "faces" / c["identity"]).glob("*.png"))) == c["size"]
    assert (out / "noise" / "sub__notes.txt").read_text() == "not an image"
    rows = {r["rel_path"]: r for r in data["images"]}
    assert len(rows) == len(truth) + 1
    assert rows["sub/notes.txt"]["reason"] == "unreadable" and rows["sub/notes.txt"]["identity"] == "noise"
    face_row = rows[sorted(truth)[0]]
    assert len(face_row["face"]["box"]) == 4 and len(face_row["face"]["landmarks"]) == 5
    assert face_row["output"].startswith(face_row["identity"] + "/")
    assert (out / face_row["output"]).is_file()
    assert data["config"]["clusterer"]["min_cluster_size"] == 3
    stats = data["statistics"]
    assert stats["images"] == len(truth) + 1 and stats["identities"] == 7
    assert {"scan", "decode", "detect", "embed", "cluster", "export"} <= set(stats["timings_s"])


def test_rerun_into_its_own_folder_refuses_foreign_files_then_overwrites(small_set, tmp_path, config):
    """Issue 18 item 9: a folder idcluster marked as its own is re-clustered without export.overwrite (after a
    pose split too); a file idcluster did not write inside the folders a re-run replaces, or an export without
    the marker, still stops it until export.overwrite=true."""
    folder, _ = small_set
    out = tmp_path / "out"
    cluster(config(folder))
    assert json.loads((out / MARKER_NAME).read_text())["written_by"] == "idcluster"
    (out / "identity_000" / "front").mkdir()  # a view folder (subcluster-pose) holding an exported file
    first = next(p for p in (out / "identity_000").iterdir() if p.is_file())
    (out / "identity_000" / "front" / first.name).write_bytes(first.read_bytes())
    (out / "identity_001" / ".DS_Store").write_bytes(b"")  # OS litter goes with the folder
    cluster(config(folder))  # no overwrite needed
    assert not (out / "identity_000" / "front").exists()
    (out / "identity_002" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds 1 file\(s\) idcluster did not write .*identity_002/notes.txt.*"
                                         r"export.overwrite=true"):
        cluster(config(folder))
    assert (out / "identity_002" / "notes.txt").read_text() == "mine"
    (out / "identity_002" / "notes.txt").unlink()
    (out / MARKER_NAME).unlink()  # an export idcluster did not mark (an older idcluster, or made by hand)
    with pytest.raises(InputError, match=r"output_dir already holds an export that idcluster did not mark .* "
                                         r"add export.overwrite=true"):
        cluster(config(folder))
    (out / "my_notes.txt").write_text("keep me")
    poses = out / "identity_000_poses"  # a folder of the user's that looks like a named identity
    poses.mkdir()
    (poses / "a.txt").write_text("mine")
    cluster(config(folder, "export.overwrite=true", "clusterer.min_cluster_size=30"))
    assert not list(out.glob("identity_[0-9][0-9][0-9]"))  # the old identity folders went with the old export
    assert (out / "my_notes.txt").read_text() == "keep me"  # files idcluster did not write stay
    assert (poses / "a.txt").read_text() == "mine"  # not named by the old JSON: not ours to replace
    assert (out / MARKER_NAME).is_file()


def test_hardlink_mode_shares_inodes(small_set, tmp_path, config):
    folder, truth = small_set
    cluster(config(folder, "export.mode=hardlink"))
    name = sorted(truth)[0]
    exported = next((tmp_path / "out").glob(f"*/{name}"))
    assert exported.stat().st_ino == (folder / name).stat().st_ino


def test_output_inside_input_is_not_scanned(small_set, config):
    folder, truth = small_set
    cfg = config(folder, f"output_dir={folder / 'clusters'}")
    cluster(cfg)
    report = cluster(config(folder, f"output_dir={folder / 'clusters'}", "export.overwrite=true"))
    assert report["statistics"]["images"] == len(truth)


def test_output_equal_to_input_is_refused(small_set, config):
    folder, _ = small_set
    with pytest.raises(InputError, match="output_dir must be a different folder from input_dir"):
        cluster(config(folder, f"output_dir={folder}"))


def test_bad_export_mode(small_set, config):
    folder, _ = small_set
    with pytest.raises(InputError, match="export.mode must be one of copy, hardlink, symlink"):
        cluster(config(folder, "export.mode=move"))
