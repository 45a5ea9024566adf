"""The idcluster.toml project file: defaults, experiments, sweeps, precedence and errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from idcluster.cli import app
from idcluster.config.compose import load_config
from idcluster.errors import ConfigError
from idcluster.config.project import load_project, resolve

runner = CliRunner()


def write(tmp_path, text):
    path = tmp_path / "idcluster.toml"
    path.write_text(text)
    return path


def test_precedence_cli_over_toml_over_conf(tmp_path):
    path = write(tmp_path, """
[defaults]
input_dir = "some images"
workers = 1
overrides = ["clusterer=hdbscan", "clusterer.min_cluster_size=5", "clusterer.min_samples=3"]

[experiments.tight]
overrides = ["clusterer=agglomerative", "clusterer.distance_threshold=0.05"]
""")
    project = load_project(path)
    defaults, explicit = resolve(project, ["clusterer.min_samples=4"])
    cfg = load_config(explicit, defaults=defaults)
    assert cfg.input_dir == "some images" and cfg.workers == 1      # TOML over conf/
    assert cfg.clusterer.min_cluster_size == 5                     # TOML
    assert cfg.clusterer.min_samples == 4                          # CLI over TOML
    assert cfg.clusterer.cluster_selection_method == "eom"         # conf/
    defaults, explicit = resolve(load_project(path), ["+experiment=tight", "input_dir=other"])
    cfg = load_config(explicit, defaults=defaults)  # the TOML's HDBSCAN-only keys no longer apply: dropped
    assert cfg.clusterer.distance_threshold == 0.05 and cfg.input_dir == "other"


def test_project_file_is_found_in_the_working_folder_and_runs_experiments(small_set, tmp_path):
    folder, _ = small_set
    write(tmp_path, f"""
[defaults]
input_dir = "{folder}"
output_dir = "out"
tracking = "off"
overrides = ["clusterer.min_cluster_size=3"]

[experiments.agglo]
overrides = ["clusterer=agglomerative"]
""")
    result = runner.invoke(app, ["run", "agglo", "-q"])  # tests run in tmp_path (conftest)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "identity_clustering.json").read_text())
    assert report["config"]["clusterer"]["_target_"].endswith("Agglomerative")
    result = runner.invoke(app, ["run", "nope"])
    assert result.exit_code == 2
    assert result.output == "error: no experiment 'nope' in idcluster.toml (defined: agglo)\n"


def test_named_sweep(small_set, tmp_path):
    folder, _ = small_set
    path = write(tmp_path, f"""
[defaults]
input_dir = "{folder}"
output_dir = "out"
tracking = "off"

[sweeps.sizes]
grid = ["clusterer.min_cluster_size=2,3"]
metric = "-noise_share"
""")
    result = runner.invoke(app, ["--project", str(path), "sweep", "sizes", "workers=1", "-q"])
    assert result.exit_code == 0, result.output
    assert "sweep: 2 points over clusterer.min_cluster_size; sorting by noise_share" in result.output


@pytest.mark.parametrize("text, message", [
    ("[defaults]\ninput_dir = \n", r"idcluster.toml:2: invalid TOML: Invalid value"),
    ("[defaults]\nworkers = 1\ncolour = 'red'\n", r"idcluster.toml:3: unknown key 'colour' in \[defaults\]"),
    ("[default]\nworkers = 1\n", r"idcluster.toml:1: unknown section \[default\]"),
    ("[experiments.x]\noverides = ['a=1']\n", r"idcluster.toml:2: unknown key 'overides' in \[experiments.x\]"),
    ("[sweeps.s]\nmetric = 'bcubed_f1'\n", r"idcluster.toml:1: \[sweeps.s\] needs a grid"),
    ("[defaults]\noverrides = 'clusterer=dbscan'\n", r"idcluster.toml:2: \[defaults\] overrides must be a list of strings"),
])
def test_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_project(write(tmp_path, text))


def test_cli_error_line_keeps_the_section_name(tmp_path):
    (tmp_path / "idcluster.toml").write_text("[sweeps.eps]\ngrid = ['a=1']\n\nparams = 3\n")
    result = runner.invoke(app, ["sweep", "eps"])
    assert result.exit_code == 2
    assert result.output == ("error: idcluster.toml:4: unknown key 'params' in [sweeps.eps] "
                             "(known: description, grid, metric, overrides)\n")


def test_explicit_project_file_must_exist(tmp_path):
    result = runner.invoke(app, ["--project", str(tmp_path / "nope.toml"), "cluster", "input_dir=x"])
    assert result.exit_code == 2
    assert result.output == f"error: project file not found: {tmp_path / 'nope.toml'}\n"


def test_requires_python_is_what_the_code_and_its_pinned_stack_need():
    """pyproject's requires-python: no lower than the code (tomllib: 3.11) and the pinned
    libraries (their own Requires-Python) need, and met by the Python running the tests (CI's)."""
    import platform
    import tomllib
    from importlib.metadata import metadata
    from pathlib import Path

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    root = Path(__file__).resolve().parents[2]
    declared = SpecifierSet(tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"])
    assert Version(platform.python_version()) in declared
    (lowest,) = [Version(s.version) for s in declared if s.operator == ">="]
    assert lowest >= Version("3.11")  # config/project.py imports tomllib
    for dist in ("scikit-learn", "numpy", "onnxruntime"):
        needs = metadata(dist)["Requires-Python"]
        assert needs is None or lowest in SpecifierSet(needs), f"{dist} needs Python {needs}"
