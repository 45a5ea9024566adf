"""Compose the run config with Hydra's compose API (Typer owns the command line).

Overrides use Hydra's grammar (`group=option`, `key=value`, `+new_key=value`);
every Hydra/OmegaConf error becomes one ConfigError line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

GROUPS = ("detector", "embedder", "reducer", "clusterer")
# Options that change where/how fast a model runs, not its results: left out of cache keys.
RUNTIME_KEYS = frozenset({"device", "threads", "batch_size"})


def conf_dir() -> Path:
    return Path(str(resources.files("idcluster.conf")))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def default_options() -> dict[str, str]:
    """group -> option chosen by conf/config.yaml's defaults list."""
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir() / "config.yaml")).get("defaults", [])
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    for tail in (" full_key:", " Config search path:", " See https://hydra.cc"):
        msg = msg.split(tail)[0]
    return msg


def load_config(overrides: list[str] = (), require_input: bool = True) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"bad override: {_one_line(e)}") from None
    if require_input and OmegaConf.is_missing(cfg, "input_dir"):
        raise ConfigError("input_dir is required: add input_dir=path/to/images")
    return cfg


def build(cfg: DictConfig, group: str) -> Any:
    """Instantiate the component chosen for `group`; bad parameters are a ConfigError."""
    try:
        return instantiate(cfg[group])
    except HydraException as e:
        cause = e.__cause__ or e
        raise ConfigError(f"cannot build {group} from config: {_one_line(cause)}") from None


def params(cfg: DictConfig, group: str) -> dict:
    """The group's parameters as they enter cache keys (runtime-only keys removed)."""
    d = OmegaConf.to_container(cfg[group], resolve=True)
    return {k: v for k, v in d.items() if k not in RUNTIME_KEYS}
