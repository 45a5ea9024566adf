"""The `idcluster` command line, through Typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from idcluster.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands_and_config_groups():
    result = invoke("--help")
    assert result.exit_code == 0
    for word in ("detect", "embed", "cluster", "export", "demo"):
        assert word in result.output
    result = invoke("cluster", "--help")
    assert result.exit_code == 0
    assert "retinaface*" in result.output and "dlib*" in result.output and "facenet" in result.output
    assert "agglomerative*" in result.output and "pca" in result.output


def test_detect_embed_cluster_export(small_set, tmp_path):
    folder, truth = small_set
    out = tmp_path / "out"
    common = [f"input_dir={folder}", f"output_dir={out}", "clusterer.min_cluster_size=3", "--quiet"]
    result = invoke("detect", *common)
    assert result.exit_code == 0, result.output
    assert f"{len(truth)} images: {len(truth)} with a usable face; detected {len(truth)} new" in result.output
    result = invoke("embed", *common)
    assert result.exit_code == 0, result.output
    assert f"{len(truth)} embeddings ({len(truth)} new)" in result.output
    result = invoke("cluster", *common)
    assert result.exit_code == 0, result.output
    assert "7 identities from 21 images" in result.output
    first = json.loads((out / "identity_clustering.json").read_text())
    assert first["statistics"]["computed"] == {"cluster": 1}  # detect and embed came from the cache

    # export re-materialises from the cache: computes nothing.
    result = invoke("export", *common, "export.overwrite=true", "export.save_faces=true")
    assert result.exit_code == 0, result.output
    again = json.loads((out / "identity_clustering.json").read_text())
    assert again["statistics"]["computed"] == {}
    assert again["clusters"] == first["clusters"]
    assert (out / "faces" / "identity_000").is_dir()


def test_export_without_cached_clustering(small_set, tmp_path):
    folder, _ = small_set
    result = invoke("export", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}", "--quiet")
    assert result.exit_code == 2
    cache = tmp_path / "cache"
    assert result.output == (
        f"error: no cached detection for 21 image(s) with this config in {cache}: "
        "run `idcluster cluster` with the same overrides first\n"
    )


def test_missing_input_dir(tmp_path):
    result = invoke("cluster", f"input_dir={tmp_path / 'nope'}")
    assert result.exit_code == 2
    assert result.output == f"error: input_dir does not exist: {tmp_path / 'nope'}\n"


def test_input_dir_required():
    result = invoke("cluster")
    assert result.exit_code == 2
    assert result.output == "error: input_dir is required: add input_dir=path/to/images\n"


def test_empty_input_dir(tmp_path):
    result = invoke("cluster", f"input_dir={tmp_path}", f"output_dir={tmp_path.parent / 'o'}")
    assert result.exit_code == 2
    assert result.output == f"error: input_dir contains no files: {tmp_path}\n"


def test_unknown_override(tmp_path):
    result = invoke("cluster", f"input_dir={tmp_path}", "clusterer.bogus=3")
    assert result.exit_code == 2
    assert result.output == (
        "error: bad override: Could not override 'clusterer.bogus'. To append to your config use +clusterer.bogus=3\n"
    )


def test_unknown_group_option(tmp_path):
    result = invoke("cluster", f"input_dir={tmp_path}", "embedder=nope")
    assert result.exit_code == 2
    assert result.output == (
        "error: bad override: In 'config': Could not find 'embedder/nope' "
        "Available options in 'embedder': appearance arcface ccip clip dlib facenet facenet_pytorch\n"
    )


def test_no_faces_anywhere(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (120, 120), colour).save(folder / f"plain_{i}.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = invoke("cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}", "--quiet")
    assert result.exit_code == 2
    assert result.output == (
        "error: no usable face found in any of the 3 input images (2 no_face, 1 unreadable)\n"
    )


def test_corrupt_image_is_reported_not_fatal(small_set, tmp_path):
    folder, truth = small_set
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    result = invoke("cluster", f"input_dir={folder}", f"output_dir={out}", "clusterer.min_cluster_size=3", "--quiet")
    assert result.exit_code == 0, result.output
    assert "unreadable 1" in result.output
    rows = {r["rel_path"]: r for r in json.loads((out / "identity_clustering.json").read_text())["images"]}
    assert rows["corrupt.jpg"]["reason"] == "unreadable" and rows["corrupt.jpg"]["identity"] == "noise"
    assert (out / "noise" / "corrupt.jpg").is_file()


@pytest.mark.slow
def test_demo(tmp_path):
    result = invoke("demo", "--dir", tmp_path / "demo", "--quiet")
    assert result.exit_code == 0, result.output
    assert "demo: 56 instance crops of 7 people" in result.output
    line = next(l for l in result.output.splitlines() if l.startswith("BCubed F1"))
    assert float(line.split()[2]) >= 0.95


def test_missing_labels_file_fails_before_any_work(small_set, tmp_path):
    folder, _ = small_set
    result = invoke("cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}", f"labels={tmp_path / 'nope.csv'}")
    assert result.exit_code == 2
    assert result.output == f"error: labels must be 'folders' or a labels.csv path; not found: {tmp_path / 'nope.csv'}\n"
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the user's errors vs bugs


class ExplodingDetector:
    """A detector whose constructor has a bug (takes retinaface's keys, then fails)."""

    def __init__(self, **kwargs):
        raise RuntimeError("constructor went wrong")


def test_a_bug_is_reported_as_a_bug_with_its_traceback_in_a_file(small_set, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the report lands in the test's folder
    folder, _ = small_set
    result = invoke("cluster", f"input_dir={folder}", f"detector._target_={__name__}.ExplodingDetector", "-q")
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("bug: this is a bug in idcluster, not something you did "
                           "(RuntimeError: constructor went wrong); traceback in ")
    path = line.split("traceback in ", 1)[1].split(";", 1)[0]
    report = open(path, encoding="utf-8").read()
    assert "Traceback (most recent call last)" in report and "constructor went wrong" in report
    assert "ExplodingDetector" in report or "__init__" in report


@pytest.mark.parametrize("how", ["--debug", "IDCLUSTER_DEBUG=1"])
def test_debug_prints_the_traceback(small_set, tmp_path, monkeypatch, how):
    folder, _ = small_set
    args = ["cluster", f"input_dir={folder}", f"detector._target_={__name__}.ExplodingDetector", "-q"]
    if how == "--debug":
        args.insert(0, "--debug")
    else:
        monkeypatch.setenv("IDCLUSTER_DEBUG", "1")
    result = invoke(*args)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output and 'raise RuntimeError("constructor went wrong")' in result.output
    assert result.output.rstrip().splitlines()[-1].endswith("the traceback is above; please report it")


def test_a_bug_inside_a_stage_is_not_blamed_on_the_input(small_set, tmp_path, monkeypatch):
    """A ValueError from our own code (e.g. a NumPy shape error) is a bug, exit 1, not an input error."""
    from idcluster.detectors.retinaface import RetinaFaceDetector

    def broken(self, image):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(RetinaFaceDetector, "detect", broken)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    folder, _ = small_set
    result = invoke("cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out'}", "workers=1", "-q")
    assert result.exit_code == 1
    assert result.output.startswith("bug: this is a bug in idcluster") and "ValueError: operands" in result.output


def test_the_users_mistakes_stay_one_line_and_exit_2(tmp_path):
    for args, expected in [
        (["+detector.bogus=1"], "error: cannot build detector from config: "),  # a key the class does not take
        (["detector=mtcnn", "detector.backend=tf"],  # a value its constructor rejects
         "error: cannot build detector from config: detector.backend must be one of onnx, torch, got 'tf'\n"),
        (["detector._target_=nowhere.Detector"], "error: cannot build detector from config: Error loading 'nowhere.Detector'"),
    ]:
        result = invoke("detect", f"input_dir={tmp_path}", *args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith(expected) and result.output.count("\n") == 1


def test_ctrl_c_exits_130(small_set, tmp_path, monkeypatch):
    from idcluster.detectors.retinaface import RetinaFaceDetector

    def interrupted(self, image):
        raise KeyboardInterrupt

    monkeypatch.setattr(RetinaFaceDetector, "detect", interrupted)
    folder, _ = small_set
    result = invoke("detect", f"input_dir={folder}", "workers=1", "-q")
    assert result.exit_code == 130
    assert result.output == "interrupted: finished images are cached; run the same command again to resume\n"
