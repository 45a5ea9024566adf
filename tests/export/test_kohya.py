"""export.format=kohya: layout, captions, sizes, repeats, alpha, idempotent re-export, refusals, names."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcluster.cli import app

from tests.conftest import cluster_demo_subset
from idcluster.export.captions import caption
from idcluster.export.imaging import Sizing, prepare
from idcluster.export.kohya import MARKER, repeats_for

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clustered(demo_set, tmp_path_factory):
    """21 real crops of 7 people, clustered once; tests copy the output folder."""
    return cluster_demo_subset(demo_set, tmp_path_factory.mktemp("kohya"))


@pytest.fixture
def out(clustered, tmp_path):
    dst = tmp_path / "out"
    shutil.copytree(clustered[1], dst)
    return dst


def test_repeats_formula():
    assert repeats_for({"a": 40, "b": 20, "c": 3}, base=10, cap=100) == {"a": 10, "b": 20, "c": 100}
    assert repeats_for({"a": 40, "b": 7}, base=10, cap=50) == {"a": 10, "b": 50}  # round(57.1) capped
    assert repeats_for({"a": 5, "b": 400}, base=1, cap=100) == {"a": 80, "b": 1}


def test_caption_format():
    assert caption("a 3d animated character, pixar style", "woody", "three_quarter_left") == \
        "a 3d animated character, pixar style, woody, three-quarter view"
    assert caption("", "woody", "front") == "woody, front view"
    assert caption("  x  ", "Bo  Peep", "no_face") == "x, Bo Peep"
    assert caption("", "w", "up") == "w, from below"


def test_kohya_layout_captions_sizes_and_manifest(clustered, out, tmp_path):
    inputs, _ = clustered
    before = tree(inputs)
    dest = tmp_path / "train"
    r = invoke("export", f"output_dir={out}", "export.format=kohya", f"export.dest={dest}", "export.target_size=128",
               "export.square=pad", "export.caption_prefix='a photo, portrait'", "export.names.identity_000=woody",
               "export.dataset_config=true", "tracking=off", "-q")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "identity_clustering.json").read_text())
    folders = sorted(p.name for p in dest.iterdir() if p.is_dir())
    # 7 identities of 3 images each: all get the base repeats.
    assert folders == sorted(["10_woody"] + [f"10_{c['identity']}" for c in report["clusters"][1:]])
    for folder in folders:
        images = sorted(p for p in (dest / folder).iterdir() if p.suffix != ".txt")
        texts = sorted((dest / folder).glob("*.txt"))
        assert [p.stem for p in images] == [p.stem for p in texts] and len(images) == 3
        name = folder.split("_", 1)[1]
        for im, txt in zip(images, texts):
            text = txt.read_text(encoding="utf-8")
            assert text.endswith("\n") and text.count("\n") == 1
            assert text.startswith(f"a photo, portrait, {name}, ")
            assert text.strip().rsplit(", ", 1)[1] in ("front view", "three-quarter view", "profile", "from above", "from below")
            with Image.open(im) as pil:
                assert pil.size == (128, 128)
    rows = list(csv.DictReader((dest / "manifest.csv").open(encoding="utf-8")))
    assert len(rows) == 21 and {r["name"] for r in rows} >= {"woody"}
    for row in rows:
        assert (dest / row["output_path"]).is_file() and Path(row["source_path"]).is_file()
        assert hashlib.sha256(Path(row["source_path"]).read_bytes()).hexdigest() == row["source_sha256"]
    config = tomllib.loads((dest / "dataset_config.toml").read_text(encoding="utf-8"))
    subsets = config["datasets"][0]["subsets"]
    assert {Path(s["image_dir"]).name for s in subsets} == set(folders) and all(s["num_repeats"] == 10 for s in subsets)
    assert config["general"]["keep_tokens"] == 3
    assert tree(inputs) == before  # sources untouched


def test_reexport_is_idempotent_and_removes_stale_files(out, tmp_path):
    dest = tmp_path / "train"
    base = ["export", f"output_dir={out}", "export.format=kohya", f"export.dest={dest}", "tracking=off", "-q"]
    assert invoke(*base, "export.names.identity_000=woody").exit_code == 0
    first = tree(dest)
    assert invoke(*base, "export.names.identity_000=woody").exit_code == 0
    assert tree(dest) == first
    # Renamed, and a cap of one image per view: the old folder goes, repeats follow the new counts.
    r = invoke(*base, "export.names.identity_000=buzz", "export.max_per_view=1")
    assert r.exit_code == 0, r.output
    names = {p.name for p in dest.iterdir() if p.is_dir()}
    assert not any(n.endswith("_woody") for n in names) and any(n.endswith("_buzz") for n in names)
    rows = list(csv.DictReader((dest / "manifest.csv").open(encoding="utf-8")))
    per_view = {}
    for row in rows:
        per_view.setdefault((row["identity"], row["view"]), []).append(row)
    assert all(len(v) == 1 for v in per_view.values())
    counts = {}
    for row in rows:
        counts[row["identity"]] = counts.get(row["identity"], 0) + 1
    largest = max(counts.values())
    for row in rows:
        assert int(row["repeats"]) == min(100, round(10 * largest / counts[row["identity"]]))
        assert row["output_path"].startswith(f"{row['repeats']}_")
    listed = set(json.loads((dest / MARKER).read_text())["files"])
    assert listed == set(tree(dest)) - {MARKER}


def test_foreign_files_refused_unless_overwrite(out, tmp_path):
    dest = tmp_path / "train"
    dest.mkdir()
    (dest / "mine.png").write_bytes(b"not idcluster's")
    base = ["export", f"output_dir={out}", "export.format=kohya", f"export.dest={dest}", "tracking=off", "-q"]
    r = invoke(*base)
    assert r.exit_code == 2 and "idcluster did not write" in r.output and "export.overwrite=true" in r.output
    assert [p.name for p in dest.iterdir()] == ["mine.png"]
    assert invoke(*base, "export.overwrite=true").exit_code == 0
    assert (dest / "mine.png").read_bytes() == b"not idcluster's"


def test_names_from_review_and_project_file_and_hidden(out, tmp_path):
    report = json.loads((out / "identity_clustering.json").read_text())
    report["clusters"][1]["name"] = "Bo Peep"
    report["clusters"][2]["hidden"] = True
    (out / "identity_clustering.json").write_text(json.dumps(report))
    (tmp_path / "idcluster.toml").write_text('[defaults.export.names]\nidentity_000 = "woody"\n', encoding="utf-8")
    dest = tmp_path / "train"
    r = invoke("--project", tmp_path / "idcluster.toml", "export", f"output_dir={out}", "export.format=kohya",
               f"export.dest={dest}", "tracking=off", "-q")
    assert r.exit_code == 0, r.output
    names = {p.name.split("_", 1)[1] for p in dest.iterdir() if p.is_dir()}
    assert {"woody", "Bo Peep"} <= names and report["clusters"][2]["identity"] not in names
    assert len(names) == len(report["clusters"]) - 1
    text = next((dest / "10_Bo Peep").glob("*.txt")).read_text(encoding="utf-8")
    assert text.startswith("Bo Peep, ")


def test_alpha_kept_or_composited(demo_set):
    src, _ = demo_set
    with Image.open(sorted(src.glob("*.png"))[0]) as im:
        rgba = im.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, : a.shape[1] // 3, 3] = 0  # a cut-out: the left third transparent
    rgba = Image.fromarray(a, "RGBA")
    kept = prepare(rgba, Sizing(target_size=64, square="pad"))
    assert kept.mode == "RGBA" and kept.size == (64, 64)
    assert np.asarray(kept)[32, 0, 3] == 0
    white = prepare(rgba, Sizing(target_size=64, background="white"))
    assert white.mode == "RGB" and max(white.size) == 64
    assert tuple(np.asarray(white)[white.size[1] // 2, 0]) == (255, 255, 255)
    small = prepare(rgba, Sizing(target_size=4 * max(rgba.size), upscale=False))
    assert small.size == rgba.size
    big = prepare(rgba, Sizing(target_size=2 * max(rgba.size)))
    assert max(big.size) == 2 * max(rgba.size)


def test_bad_export_settings_are_one_line_errors(out, tmp_path):
    base = ["export", f"output_dir={out}", f"export.dest={tmp_path / 't'}", "tracking=off"]
    for extra, msg in [("export.format=nope", "export.format must be one of folders, kohya"),
                       ("export.square=circle", "export.square must be one of"),
                       ("export.target_size=-5", "export.target_size must be an integer"),
                       ("export.background=notacolour", "export.background must be"),
                       ("export.repeats=0", "export.repeats must be an integer >= 1"),
                       ("export.names.identity_999=x", "export.names names unknown identities: identity_999")]:
        fmt = [] if extra.startswith("export.format") else ["export.format=kohya"]
        r = invoke(*base, *fmt, extra)
        assert r.exit_code == 2 and msg in r.output, (extra, r.output)
        assert "Traceback" not in r.output
    r = invoke("export", f"output_dir={tmp_path / 'none'}", "export.format=kohya", "tracking=off")
    assert r.exit_code == 2 and "no identity_clustering.json" in r.output
    r = invoke("export", f"output_dir={out}", "export.format=kohya", f"export.dest={out}", "tracking=off")
    assert r.exit_code == 2 and "export.dest must differ from output_dir" in r.output
    report = json.loads((out / "identity_clustering.json").read_text())
    r = invoke("export", f"output_dir={out}", "export.format=kohya", f"export.dest={report['input_dir']}/t", "tracking=off")
    assert r.exit_code == 2 and "overlaps" in r.output


def test_cluster_with_kohya_format_writes_the_training_set_too(clustered, out, tmp_path):
    inputs, _ = clustered
    dest = tmp_path / "train"
    r = invoke("cluster", f"input_dir={inputs}", f"output_dir={out}", f"cache_dir={clustered[1].parent / 'cache'}",
               "clusterer.min_cluster_size=3", "export.overwrite=true",
               "export.format=kohya", f"export.dest={dest}", "export.names.identity_000=woody", "tracking=off", "-q")
    assert r.exit_code == 0, r.output
    assert "wrote a kohya training set (21 images)" in r.output
    assert (dest / "10_woody").is_dir() and (dest / "manifest.csv").is_file()
