"""Compose the run config with Hydra's compose API (Typer owns the command line).

Overrides use Hydra's grammar (`group=option`, `key=value`, `+new_key=value`);
every Hydra/OmegaConf error becomes one ConfigError line. Building a component
(`build`, `instantiate_node`) tells the user's mistakes (a key that does not fit
the class, a value the constructor rejects with an IdclusterError) from bugs in
the constructor, which propagate as they are.
"""

from __future__ import annotations

import inspect
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..cache.store import default_cache_dir
from ..errors import ConfigError, IdclusterError

log = logging.getLogger(__name__)

# conf/config.yaml's cache_dir: ${idcluster_cache:} = $IDCLUSTER_CACHE, $XDG_CACHE_HOME/idcluster or ~/.cache/idcluster.
OmegaConf.register_new_resolver("idcluster_cache", lambda: str(default_cache_dir()), replace=True)

def _groups() -> tuple[str, ...]:
    """Every config group, in conf/config.yaml's defaults-list order (each option a `_target_`)."""
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir() / "config.yaml")).get("defaults", [])
    return tuple(k for d in defaults if isinstance(d, dict) for k in d)


# Options that change where/how fast a model runs, not its results: left out of cache keys.
RUNTIME_KEYS = frozenset({"device", "threads", "batch_size", "memory", "backend", "model_dir"})
# Facts about a component that other groups read by interpolation (an embedder's or instance
# model's calibrated thresholds, a face embedder's domain band), not constructor arguments.
META_KEYS = frozenset({"distance_threshold", "grey_distance_threshold", "domain_band"})
META_GROUPS = frozenset({"embedder", "instance"})
# Config mappings whose keys are the user's (identity -> name): `export.names.identity_000=woody`
# adds a key without Hydra's `+`, on the command line and in the project file.
OPEN_MAPPINGS = ("export.names.",)
# Keys that became config group choices: `export.format=kohya` (command line, project file) is `export=kohya`.
GROUP_KEYS = {"export.format": "export"}


def conf_dir() -> Path:
    return Path(str(resources.files("idcluster.conf")))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


GROUPS = _groups()


def default_options() -> dict[str, str]:
    """group -> option chosen by conf/config.yaml's defaults list."""
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir() / "config.yaml")).get("defaults", [])
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    for tail in (" full_key:", " Config search path:", " See https://hydra.cc"):
        msg = msg.split(tail)[0]
    return msg


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def open_mapping(override: str) -> str:
    """`export.names.X=Y` -> `++export.names.X=Y` (add or replace); other overrides unchanged."""
    if override.startswith(OPEN_MAPPINGS) and "=" in override:
        return "++" + override
    return override


def group_choice(override: str) -> str:
    """`export.format=X` -> `export=X` (the key before export formats were a config group); others unchanged."""
    key, eq, value = override.partition("=")
    group = GROUP_KEYS.get(key.lstrip("+"))
    if group is None or not eq:
        return override
    options = group_options(group)
    if value not in options:
        raise ConfigError(f"{key.lstrip('+')} must be one of {', '.join(options)}, got {value!r}")
    return f"{group}={value}"


def load_config(overrides: list[str] = (), require_input: bool = True, defaults: list[str] = (),
                resolve: bool = True) -> DictConfig:
    """Compose conf/ + `defaults` (the project file's, lower precedence) + `overrides`.

    A default that does not fit the chosen components (e.g. `clusterer.min_samples`
    from the project file while an experiment picks `clusterer=agglomerative`)
    is dropped with a warning; a bad `overrides` entry is a ConfigError.
    """
    soft = [open_mapping(group_choice(o)) for o in defaults]
    overrides = [open_mapping(group_choice(o)) for o in overrides]
    while True:
        try:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                cfg = compose(config_name="config", overrides=[*soft, *overrides])
            if resolve:
                OmegaConf.resolve(cfg)
            break
        except (HydraException, OmegaConfBaseException) as e:
            msg = _one_line(e)
            culprit = next((d for d in soft if f"'{_key(d)}'" in msg or f"'{d}'" in msg), None)
            if culprit is None:
                raise ConfigError(f"bad override: {msg}") from None
            log.warning("project default %s does not apply to this config (%s): ignored", culprit, msg)
            soft.remove(culprit)
    if require_input:
        require_input_dir(cfg)
    return cfg


def require_input_dir(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "input_dir"):
        raise ConfigError("input_dir is required: add input_dir=path/to/images")


def build(cfg: DictConfig, group: str) -> Any:
    """Instantiate the component chosen for `group`; the user's mistakes are a ConfigError."""
    node = cfg[group]
    if group in META_GROUPS:
        node = OmegaConf.create({k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in META_KEYS})
    return instantiate_node(node, f"cannot build {group} from config")


def instantiate_node(node: DictConfig, what: str) -> Any:
    """hydra.utils.instantiate(node); what the user caused is one ConfigError line `what: reason`.

    Hydra wraps whatever a constructor raises (InstantiationException). The user's: a
    `_target_` that does not exist, keys that do not fit the class's signature (a typo,
    a missing argument), an IdclusterError the constructor raised on a value (ConfigError,
    ModelError), and Hydra's/OmegaConf's own complaints about the config. Anything else
    is a bug in the constructor: its own exception propagates, traceback and all.
    """
    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__
        if not _user_caused(node, cause):
            raise cause from None
        raise ConfigError(f"{what}: {_one_line(cause or e)}") from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{what}: {_one_line(e)}") from None


def _user_caused(node: DictConfig, cause: BaseException | None) -> bool:
    if cause is None or isinstance(cause, (IdclusterError, HydraException, OmegaConfBaseException)):
        return True
    if isinstance(cause, ImportError):  # locating `_target_`: Hydra wraps the import's own error
        original = cause.__cause__
        return original is None or isinstance(original, (ModuleNotFoundError, AttributeError))
    if isinstance(cause, TypeError):
        return not _arguments_fit(node)
    return False


def _arguments_fit(node: DictConfig) -> bool:
    """Whether the node's keys bind to its `_target_`'s signature (a TypeError despite that is a bug)."""
    keys = [str(k) for k in node if not (str(k).startswith("_") and str(k).endswith("_"))]
    try:
        signature = inspect.signature(get_object(str(node["_target_"])))
    except (ImportError, ValueError, TypeError):  # not introspectable: cannot tell, so not a bug of ours
        return False
    try:
        signature.bind(**dict.fromkeys(keys))
    except TypeError:
        return False
    return True


def params(cfg: DictConfig, group: str) -> dict:
    """The group's parameters as they enter cache keys (runtime-only keys removed)."""
    d = OmegaConf.to_container(cfg[group], resolve=True)
    skip = RUNTIME_KEYS | (META_KEYS if group in META_GROUPS else frozenset())
    return {k: v for k, v in d.items() if k not in skip}
