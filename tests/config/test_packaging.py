"""The wheel ships every subpackage and every config group (pyproject lists them by hand)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_and_config_group_is_in_the_wheel():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, data = set(tool["packages"]), tool["package-data"]
    code = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "idcluster").rglob("__init__.py")}
    groups = {"idcluster.conf." + d.name for d in (ROOT / "conf").iterdir() if d.is_dir() and any(d.glob("*.yaml"))}
    assert code - packages == set(), "add these packages to pyproject's [tool.setuptools] packages"
    assert groups - packages == set(), "add these config groups to pyproject's packages"
    assert groups - set(data) == set(), "add these config groups to pyproject's package-data"
