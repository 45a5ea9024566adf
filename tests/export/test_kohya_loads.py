"""The kohya export loads the way sd-scripts loads it (issue 18 items 10-14), checked against the conditions
sd-scripts' own loader checks (tests/export/kohya_rules.py): bucket bounds at any target_size, captions
with the plain --train_data_dir flags, a moved export, names with commas and keep_tokens, a class word
and a regularisation folder, and sd-scripts' cache files beside the images."""

from __future__ import annotations

import csv
import random
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idcluster.cli import app
from idcluster.export.kohya_config import DATASET_CONFIG, bucket_bounds, plan, toml_text

from tests.export import kohya_rules as kohya
from tests.export.test_kohya import clustered, out  # noqa: F401 (fixtures: 21 real crops of 7 people, clustered once)

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def export(out, dest, *extra):
    r = invoke("export", f"output_dir={out}", "export.format=kohya", f"export.dest={dest}", "tracking=off", "-q", *extra)
    assert r.exit_code == 0, r.output
    return r.output


def manifest(dest: Path) -> dict[str, dict]:
    """output path (absolute) -> manifest row."""
    return {str(dest / r["output_path"]): r for r in csv.DictReader((dest / "manifest.csv").open(encoding="utf-8"))}


def printed_flags(output: str) -> dict:
    """The --flag=value pairs idcluster printed for the classic --train_data_dir way."""
    line = next(l for l in output.splitlines() if "--train_data_dir=" in l)
    words = shlex.split(line[line.index("--train_data_dir="):])
    return {w[2:].split("=", 1)[0]: w.split("=", 1)[1] for w in words if w.startswith("--") and "=" in w}


def classic_args(flags: dict, **more):
    """printed_flags as from_train_data_dir's arguments."""
    args = {"caption_extension": flags["caption_extension"], **more}
    if "keep_tokens" in flags:
        args["keep_tokens"] = int(flags["keep_tokens"])
    return Path(flags["train_data_dir"]), (Path(flags["reg_data_dir"]) if "reg_data_dir" in flags else None), args


# ---------------------------------------------------------------- item 10: bucket bounds


@pytest.mark.parametrize("target_size", [None, 32, 64, 200, 255, 512, 768, 1024, 1280, 2000])
def test_dataset_config_passes_sd_scripts_checks_at_every_target_size(target_size, tmp_path):
    resolution = target_size or 512
    subsets = [{"folder": "10_woody", "num_repeats": 10, "class_tokens": "woody", "keep_tokens": 1}]
    (tmp_path / "10_woody").mkdir()
    for square in ("none", "pad"):
        (tmp_path / DATASET_CONFIG).write_text(toml_text(tmp_path, plan(resolution, square == "none", ".txt", subsets)))
        config = kohya.sanitize(tomllib.loads((tmp_path / DATASET_CONFIG).read_text()))
        ds = config["datasets"][0]
        kohya.from_dataset_config(tmp_path / DATASET_CONFIG, tmp_path)  # no AssertionError
        if square == "none":
            assert ds["min_bucket_reso"] % ds["bucket_reso_steps"] == 0 == ds["max_bucket_reso"] % ds["bucket_reso_steps"]
            assert ds["min_bucket_reso"] <= resolution <= ds["max_bucket_reso"]
    # What failed before (sd-scripts' defaults 256/1024, no bounds written): the rules reproduce it.
    for size, message in ((1280, "max_bucket_reso must be equal or greater"), (200, "min_bucket_reso must be equal or less")):
        with pytest.raises(AssertionError, match=message):
            kohya.adjust_buckets((size, size), 256, 1024, 64)
    assert bucket_bounds(512) == {"min_bucket_reso": 256, "max_bucket_reso": 1024, "bucket_reso_steps": 64}


@pytest.mark.parametrize("target_size", [200, 1280])
def test_the_sizes_that_failed_load_end_to_end(out, tmp_path, target_size):
    dest = tmp_path / "train"
    export(out, dest, f"export.target_size={target_size}", "export.dataset_config=true")
    images, warnings = kohya.from_dataset_config(dest / DATASET_CONFIG, tmp_path)
    rows = manifest(dest)
    assert len(images) == len(rows) == 21 and not warnings
    for im in images:
        assert im["caption"] == rows[im["path"]]["caption"] and im["num_repeats"] == int(rows[im["path"]]["repeats"])


# ---------------------------------------------------------------- item 11: captions the classic way


def test_plain_train_data_dir_reads_every_caption_with_the_printed_flags(out, tmp_path):
    dest = tmp_path / "train"
    output = export(out, dest, "export.caption_prefix='a photo'")
    rows = manifest(dest)
    # sd-scripts' default caption_extension is .caption: the .txt captions are ignored, as issue 18 found.
    images, _ = kohya.from_train_data_dir(dest, resolution=512)
    assert len(images) == 21 and all(im["caption"] == im["subset"]["class_tokens"] for im in images)
    # The flags idcluster prints read each image's own caption.
    flags = printed_flags(output)
    assert flags["caption_extension"] == ".txt" and flags["keep_tokens"] == "2"
    train, reg, args = classic_args(flags, resolution=512)
    images, warnings = kohya.from_train_data_dir(train, reg, **args)
    assert len(images) == 21 and not warnings
    assert all(im["caption"] == rows[im["path"]]["caption"] and im["caption"].startswith("a photo, ") for im in images)
    # export.caption_extension=.caption: sd-scripts' default reads them with no flag at all.
    export(out, dest, "export.caption_prefix='a photo'", "export.caption_extension=.caption")
    images, _ = kohya.from_train_data_dir(dest, resolution=512)
    assert all(im["caption"] == manifest(dest)[im["path"]]["caption"] for im in images)
    assert not list(dest.rglob("*.txt"))  # the earlier .txt captions went with the earlier export


# ---------------------------------------------------------------- item 12: a moved export


def test_a_moved_export_loads_after_retarget_and_the_classic_way_at_once(out, tmp_path):
    dest = tmp_path / "train"
    export(out, dest, "export.dataset_config=true")
    moved = tmp_path / "elsewhere" / "set"
    moved.parent.mkdir()
    shutil.move(str(dest), str(moved))
    trainer_cwd = tmp_path / "sd-scripts"
    trainer_cwd.mkdir()
    # As issue 18 found: the absolute image_dir paths point where the folder was.
    images, warnings = kohya.from_dataset_config(moved / DATASET_CONFIG, trainer_cwd)
    assert images == [] and any(w.startswith("not directory") for w in warnings)
    # The classic flags need no paths inside the folder: they load it where it is now.
    r = invoke("export", "--retarget", moved)
    assert r.exit_code == 0, r.output
    assert f"now points here (was {dest.resolve()})" in r.output
    rows = manifest(moved)
    images, warnings = kohya.from_dataset_config(moved / DATASET_CONFIG, trainer_cwd)
    assert len(images) == 21 and not warnings
    assert all(im["caption"] == rows[im["path"]]["caption"] for im in images)
    train, reg, args = classic_args(printed_flags(r.output), resolution=512)
    assert train == moved.resolve() and len(kohya.from_train_data_dir(train, reg, **args)[0]) == 21
    # A re-export into the moved folder is idcluster's own: no foreign files.
    export(out, moved, "export.dataset_config=true")
    r = invoke("export", "--retarget", tmp_path / "nothing")
    assert r.exit_code == 2 and "holds no training set idcluster wrote" in r.output


# ---------------------------------------------------------------- item 13: commas, class word, regularisation


def test_a_name_with_a_comma_keeps_its_tokens_with_a_class_word_and_reg_images(out, demo_set, tmp_path):
    src, _ = demo_set
    reg_src = tmp_path / "person_images"
    reg_src.mkdir()
    for p in sorted(src.glob("*"))[:4]:
        shutil.copy2(p, reg_src / p.name)
    dest = tmp_path / "train"
    output = export(out, dest, "export.caption_prefix='a photo, realistic'", "export.names.identity_000='Rumsfeld, Donald'",
                    "export.class_word=person", f"export.reg_images={reg_src}", "export.dataset_config=true")
    assert (dest / "10_Rumsfeld, Donald person").is_dir() and (dest / "reg" / "1_person").is_dir()
    images, warnings = kohya.from_dataset_config(dest / DATASET_CONFIG, tmp_path, {"shuffle_caption": True})
    assert not warnings and len(images) == 21 + 4
    rng = random.Random(0)
    seen = 0
    for im in images:
        sub = im["subset"]
        if im["is_reg"]:
            assert im["caption"] == "a photo, realistic, person" and sub["class_tokens"] == "person"
            continue
        start = f"a photo, realistic, {sub['class_tokens']}"
        assert im["caption"].startswith(start + ", ") or im["caption"] == start
        for _ in range(30):  # shuffle (turned on at the command line) never moves the prefix or the name
            assert kohya.process_caption(im["caption"], sub["keep_tokens"], True, rng).startswith(start)
        seen += sub["class_tokens"] == "Rumsfeld, Donald person"
    assert seen == 3
    # With one keep_tokens for all (the name counted as one token) the comma name broke, as issue 18 found.
    caption = next(im["caption"] for im in images if im["subset"]["class_tokens"] == "Rumsfeld, Donald person")
    assert any(not kohya.process_caption(caption, 3, True, random.Random(s)).startswith("a photo, realistic, Rumsfeld, Donald")
               for s in range(30))
    # The classic way reads the same folders (reg included) with the printed flags; keep_tokens differs
    # between folders, so it is not among them (dataset_config.toml has it per folder).
    flags = printed_flags(output)
    assert "keep_tokens" not in flags and flags["reg_data_dir"] == str((dest / "reg").resolve())
    train, reg, args = classic_args(flags, resolution=512)
    classic, warnings = kohya.from_train_data_dir(train, reg, **args)
    assert len(classic) == 25 and warnings == ["ignore directory without repeats: reg"]
    assert sum(im["is_reg"] for im in classic) == 4
    rows = list(csv.DictReader((dest / "manifest.csv").open(encoding="utf-8")))
    assert sum(r["identity"] == "reg" for r in rows) == 4


def test_class_word_and_reg_settings_are_one_line_errors(out, tmp_path):
    for extra, msg in [(("export.reg_images=/x",), "export.reg_images needs export.class_word"),
                       (("export.class_word=person", f"export.reg_images={tmp_path / 'none'}"), "is not a folder"),
                       (("export.caption_extension=txt",), "export.caption_extension must be a file extension"),
                       (("export.caption_extension=.png",), "export.caption_extension must be a file extension")]:
        r = invoke("export", f"output_dir={out}", "export.format=kohya", f"export.dest={tmp_path / 't'}", "tracking=off",
                   *extra)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (extra, r.output)


# ---------------------------------------------------------------- item 14: sd-scripts' caches


def test_sd_scripts_caches_are_kept_while_valid_and_never_foreign(out, tmp_path):
    dest = tmp_path / "train"
    base = ["export.target_size=128"]
    export(out, dest, *base)
    rows = manifest(dest)
    folder = Path(next(iter(rows))).parent
    stems = sorted(Path(p).stem for p in rows if Path(p).parent == folder)
    caches = {s: [folder / f"{s}_0128x0128_sd.npz", folder / f"{s}.npz", folder / f"{s}_te_outputs.npz",
                  folder / f"{s}_flux_te.npz"] for s in stems}
    for paths in caches.values():
        for p in paths:
            p.write_bytes(b"latents")
    (folder / "metadata_cache.json").write_text("{}")
    # Same export again: idcluster's and sd-scripts' files only, nothing refused, every cache kept.
    export(out, dest, *base)
    assert all(p.is_file() for paths in caches.values() for p in paths) and (folder / "metadata_cache.json").is_file()
    # Fewer images: the caches of the images that left go, the others stay; the folder's metadata cache goes.
    r = invoke("export", f"output_dir={out}", "export.format=kohya", f"export.dest={dest}", "tracking=off", "-q", *base,
               "export.max_per_view=1")
    assert r.exit_code == 0, r.output
    kept = {Path(p).stem for p in manifest(dest) if Path(p).parent == folder}
    now = folder  # max_per_view=1 keeps this folder's repeats (and so its name): some of its images leave
    assert kept and set(stems) - kept
    for s, paths in caches.items():
        assert all(p.is_file() == (s in kept) for p in paths), s
    assert not (folder / "metadata_cache.json").exists()
    # Another size: the images are rewritten, their latents are stale.
    for p in now.glob("*.png"):
        (now / f"{p.stem}_0128x0128_sd.npz").write_bytes(b"latents")
    export(out, dest, "export.target_size=96", "export.max_per_view=1")
    assert not list(dest.rglob("*.npz"))
    # A file sd-scripts did not write (no image of that name) is still foreign.
    (now / "mine.npz").write_bytes(b"x")
    r = invoke("export", f"output_dir={out}", "export.format=kohya", f"export.dest={dest}", "tracking=off", "-q",
               "export.target_size=96", "export.max_per_view=1")
    assert r.exit_code == 2 and "idcluster did not write" in r.output and "mine.npz" in r.output
