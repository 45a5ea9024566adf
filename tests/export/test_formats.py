"""Export formats are a config group (one class + one YAML each); export.format=X still picks one,
on the command line and in the project file. Folder names: one sanitizer."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from idcluster.config.compose import build, group_options, load_config
from idcluster.config.project import load_project, resolve
from idcluster.errors import ConfigError, InputError
from idcluster.export.folders import FoldersExport
from idcluster.export.report import JSON_NAME, folder_name, identity_folder, identity_names, read_report
from idcluster.export.training_set import KohyaExport


@pytest.mark.parametrize("option", group_options("export"))
def test_every_export_option_composes_and_builds(option, tmp_path):
    cfg = load_config([f"export={option}", "export.mode=hardlink", "export.names.identity_000=woody"], require_input=False)
    exporter = build(cfg, "export")
    target = cfg.export._target_
    assert f"{type(exporter).__module__}.{type(exporter).__name__}" == target
    assert isinstance(exporter, FoldersExport) and exporter.format == option
    assert (exporter.mode, exporter.names, exporter.overwrite) == ("hardlink", {"identity_000": "woody"}, False)
    # folders' keys are every format's keys (kohya extends them through its defaults list)
    assert set(load_config(["export=folders"], require_input=False).export) <= set(cfg.export)
    # what it writes beyond the folders (kohya's training set runs in test_kohya.py)
    assert exporter.reads_report == (option != "folders")
    if not exporter.reads_report:
        assert exporter.write(tmp_path, None, tmp_path) is None


def test_export_groups_options():
    assert group_options("export") == ["folders", "kohya"]
    cfg = load_config([], require_input=False)
    assert cfg.export.format == "folders" and type(build(cfg, "export")) is FoldersExport


def test_export_format_key_picks_the_group_option():
    for overrides in (["export.format=kohya"], ["export=kohya"], ["++export.format=kohya"]):
        cfg = load_config(["input_dir=x", *overrides, "export.dest=train", "export.repeats=5"])
        exporter = build(cfg, "export")
        assert type(exporter) is KohyaExport and cfg.export.format == "kohya"
        assert exporter.settings.repeats == 5 and exporter.dest.name == "train"
    # the command line beats the project file, whichever spelling either uses
    cfg = load_config(["input_dir=x", "export.format=folders"], defaults=["export.format=kohya", "export.repeats=5"])
    assert type(build(cfg, "export")) is FoldersExport and "repeats" not in cfg.export
    cfg = load_config(["input_dir=x", "export=kohya"], defaults=["export.format=folders"])
    assert type(build(cfg, "export")) is KohyaExport


def test_unknown_export_format_is_one_line():
    with pytest.raises(ConfigError, match=r"^export.format must be one of folders, kohya, got 'nope'$"):
        load_config(["input_dir=x", "export.format=nope"])
    with pytest.raises(ConfigError, match=r"Could not find 'export/nope'"):
        load_config(["input_dir=x", "export=nope"])
    with pytest.raises(ConfigError, match=r"export.repeats must be an integer >= 1, got 0"):
        build(load_config(["input_dir=x", "export.format=kohya", "export.repeats=0"]), "export")


NAMES = '[defaults.export.names]\nidentity_000 = "woody"\n'


@pytest.mark.parametrize("text", [
    '[defaults.export]\nformat = "kohya"\nrepeats = 4\n' + NAMES,
    '[defaults]\noverrides = ["export.format=kohya", "export.repeats=4"]\n' + NAMES,
    '[defaults]\nexport = "kohya"\noverrides = ["export.repeats=4", "export.names.identity_000=woody"]\n',
])
def test_project_file_picks_the_format(tmp_path, text):
    path = tmp_path / "idcluster.toml"
    path.write_text(text, encoding="utf-8")
    defaults, explicit = resolve(load_project(path), ["input_dir=x"])
    cfg = load_config(explicit, defaults=defaults)
    exporter = build(cfg, "export")
    assert type(exporter) is KohyaExport and exporter.settings.repeats == 4 and exporter.names == {"identity_000": "woody"}
    assert OmegaConf.to_container(cfg.export)["format"] == "kohya"


def test_one_folder_name_rule():
    # identity folders (review names) and kohya folders share the sanitizer; identity folders join words with _
    assert identity_folder(3, 3, "Lisa K.") == "identity_003_Lisa_K"
    assert identity_folder(3, 3, "Rachel and Monica") == "identity_003_Rachel_and_Monica"
    assert identity_folder(3, 4, "  ..  ") == "identity_0003"
    assert identity_folder(12, 3, "a/b\\c:d") == "identity_012_a_b_c_d"
    assert folder_name("Bo Peep") == "Bo Peep" and folder_name(" .x. ") == "x" and folder_name("..") == ""
    assert folder_name('<>:"/\\|?*\x01') == "_" * 10
    assert len(folder_name("é" * 300)) == 60 and len(identity_folder(0, 3, "é" * 300).encode()) < 255
    assert identity_names(2, {1: {"name": "Ann Lee"}}) == ["identity_000", "identity_001_Ann_Lee"]


def test_read_report_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^no earlier export in .*: no identity_clustering.json \(.* not found\)"):
        read_report(tmp_path)
    path = tmp_path / JSON_NAME
    for text, why in [("{not json", "JSONDecodeError"), ("[1, 2]", "not a JSON object"),
                      (json.dumps({"format_version": 1, "images": []}), "no clusters or images list")]:
        path.write_text(text)
        with pytest.raises(InputError) as info:
            read_report(tmp_path)
        assert str(info.value).startswith(f"{path} is not an idcluster clustering file (") and why in str(info.value)
        assert "\n" not in str(info.value)
