"""The TOML project file (`idcluster.toml` in the working folder, or --project FILE).

    [defaults]                 # any top-level config key, plus a list of overrides
    input_dir = "instances"
    output_dir = "out"
    overrides = ["embedder=dlib", "clusterer.min_cluster_size=5"]

    [experiments.small_ids]    # idcluster run small_ids  /  idcluster cluster +experiment=small_ids
    overrides = ["clusterer=agglomerative"]

    [sweeps.thresholds]        # idcluster sweep thresholds
    grid = ["clusterer.min_cluster_size=3,5,10", "clusterer.min_samples=1,2"]
    metric = "bcubed_f1"

Precedence: command line > TOML > conf/. Errors name the file and line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .compose import conf_dir
from ..errors import ConfigError

PROJECT_FILE = "idcluster.toml"
EXPERIMENT_OVERRIDE = re.compile(r"^\+?experiment=(.+)$")
SECTIONS = {"defaults", "experiments", "sweeps"}
EXPERIMENT_KEYS = {"overrides", "description"}
SWEEP_KEYS = {"grid", "metric", "overrides", "description"}


@dataclass
class Sweep:
    grid: list[str]
    metric: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class Project:
    path: Path | None = None
    defaults: list[str] = field(default_factory=list)
    experiments: dict[str, list[str]] = field(default_factory=dict)
    sweeps: dict[str, Sweep] = field(default_factory=dict)


def _root_keys() -> set[str]:
    """Top-level config keys: conf/config.yaml's own and its config groups' (appearance, ...)."""
    import yaml

    with open(conf_dir() / "config.yaml") as f:
        root = yaml.safe_load(f)
    groups = {k for d in root.get("defaults", []) if isinstance(d, dict) for k in d}
    return {k for k in root if k != "defaults"} | groups


def _quote(value) -> str:
    """A TOML scalar as a Hydra override value (quoted where Hydra's grammar needs it)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if re.fullmatch(r"[\w./:~+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Located:
    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def error(self, message: str, key: str | None = None, section: str | None = None) -> ConfigError:
        line = self.find(key, section) if (key or section) else None
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {message}")

    def find(self, key: str, section: str | None) -> int | None:
        start = 0
        if section:
            header = re.compile(r"^\s*\[\s*" + re.escape(section).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
            start = next((i for i, l in enumerate(self.lines) if header.match(l)), 0)
        if key is None:
            return start + 1
        pattern = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
        for i in range(start, len(self.lines)):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1 if section else None


def _leaves(table: dict, prefix: str):
    for k, v in table.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}.{k}")
        else:
            yield f"{prefix}.{k}", v


def _string_list(loc: _Located, value, key: str, section: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise loc.error(f"[{section}] {key} must be a list of strings", key, section)
    return list(value)


def load_project(path: str | Path | None = None) -> Project:
    """Read the project file; no file (and none asked for) is an empty project."""
    explicit = path is not None
    path = Path(path or PROJECT_FILE).expanduser()
    if not path.is_file():
        if explicit:
            raise ConfigError(f"project file not found: {path}")
        return Project()
    text = path.read_text(encoding="utf-8")
    loc = _Located(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise ConfigError(f"{path}:{m.group(1) if m else '?'}: invalid TOML: {msg}") from None

    project = Project(path=path)
    for section in data:
        if section not in SECTIONS:
            raise loc.error(f"unknown section [{section}] (known: {', '.join(sorted(SECTIONS))})", None, section)
    roots = _root_keys()
    for key, value in data.get("defaults", {}).items():
        if key == "overrides":
            project.defaults += _string_list(loc, value, key, "defaults")
        elif key in roots and not isinstance(value, dict):
            project.defaults.insert(0, f"{key}={_quote(value)}")
        elif key in roots:  # a table, e.g. [defaults.export.names]: one dotted override per leaf
            project.defaults += [f"{k}={_quote(v)}" for k, v in _leaves(value, key)]
        else:
            raise loc.error(f"unknown key {key!r} in [defaults] (top-level config keys or overrides)", key, "defaults")
    for name, body in data.get("experiments", {}).items():
        for key in body:
            if key not in EXPERIMENT_KEYS:
                raise loc.error(f"unknown key {key!r} in [experiments.{name}] (known: overrides, description)", key, f"experiments.{name}")
        project.experiments[name] = _string_list(loc, body.get("overrides", []), "overrides", f"experiments.{name}")
    for name, body in data.get("sweeps", {}).items():
        for key in body:
            if key not in SWEEP_KEYS:
                raise loc.error(f"unknown key {key!r} in [sweeps.{name}] (known: {', '.join(sorted(SWEEP_KEYS))})", key, f"sweeps.{name}")
        section = f"sweeps.{name}"
        if "grid" not in body:
            raise loc.error(f"[{section}] needs a grid (a list of sweep overrides)", None, section)
        project.sweeps[name] = Sweep(
            grid=_string_list(loc, body["grid"], "grid", section),
            metric=body.get("metric"),
            overrides=_string_list(loc, body.get("overrides", []), "overrides", section),
        )
    return project


def resolve(project: Project, cli: list[str]) -> tuple[list[str], list[str]]:
    """(TOML defaults, explicit overrides): experiments named by +experiment=NAME, then the
    other CLI overrides. Pass them to load_config(explicit, defaults=defaults)."""
    experiments: list[str] = []
    rest: list[str] = []
    for o in cli:
        m = EXPERIMENT_OVERRIDE.match(o)
        if m:
            experiments += experiment(project, m.group(1))
        else:
            rest.append(o)
    return list(project.defaults), [*experiments, *rest]


def experiment(project: Project, name: str) -> list[str]:
    if name not in project.experiments:
        known = ", ".join(sorted(project.experiments)) or "none"
        where = project.path or PROJECT_FILE
        raise ConfigError(f"no experiment {name!r} in {where} (defined: {known})")
    return project.experiments[name]
