"""detector=auto: a chain of detectors, tried per image in order.

The next detector runs only on images where the previous ones found no face,
so the cheap, accurate first detector does most of the work. Every face keeps
the name of the detector that found it (`Face.detector`, written to
identity_clustering.json). The chain's model_id combines its members' ids, so
changing any member changes the detect cache key.

The members are given as configs (`_target_` + arguments) and built here, so
`device` and `threads` are set once for the whole chain and stay out of the
members' parameters (and so out of cache keys); `with_threads` gives a chain of
re-threaded copies (for worker processes) without touching these members.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..models.lazy import rethreaded
from ..records import Face


def _build(spec: Any, device: str, threads: int):
    from hydra.utils import get_class
    from omegaconf import DictConfig, OmegaConf

    from ..config.compose import instantiate_node

    if not isinstance(spec, (dict, DictConfig)) or "_target_" not in spec:
        return spec  # already a detector object
    cfg = OmegaConf.create(OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec))
    try:
        cls = get_class(cfg._target_)
    except (ImportError, ValueError) as e:  # no such module/class, or not a class
        raise ConfigError(f"detector.detectors: cannot import {cfg._target_}: {e}") from None
    accepted = inspect.signature(cls.__init__).parameters
    for key, value in (("device", device), ("threads", threads)):
        if key in accepted and key not in cfg:
            cfg[key] = value
    # A bad member argument: one line naming the member; a bug in a member propagates.
    return instantiate_node(cfg, f"detector.detectors: cannot build {cfg._target_}")


class ChainDetector:
    def __init__(self, detectors: list, names: list[str] | None = None, device: str = "cpu", threads: int = 0):
        if not detectors:
            raise ConfigError("detector.detectors must list at least one detector")
        self.device = device
        self.threads = threads
        self.detectors = [_build(d, device, threads) for d in detectors]
        self.names = list(names) if names else [type(d).__name__ for d in self.detectors]
        if len(self.names) != len(self.detectors):
            raise ConfigError("detector.names must name each of detector.detectors")

    def with_threads(self, threads: int) -> "ChainDetector":
        """A chain of copies running on `threads` threads each (for worker processes); this one is unchanged."""
        clone = copy.copy(self)
        clone.threads = threads
        clone.detectors = [rethreaded(d, threads) for d in self.detectors]
        return clone

    @property
    def model_id(self) -> str:
        return "chain[" + ",".join(f"{n}={d.model_id}" for n, d in zip(self.names, self.detectors)) + "]"

    def detect(self, image: np.ndarray) -> list[Face]:
        for name, det in zip(self.names, self.detectors):
            faces = det.detect(image)
            if faces:
                return [f if f.detector == name else Face(f.box, f.landmarks, f.score, name) for f in faces]
        return []
