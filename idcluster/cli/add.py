from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from ..config.compose import build
from ..workflows.add import add_images
from ..workflows.cluster import make_spec
from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def add(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Add input_dir's images to the export in output_dir: close ones join existing identities, the rest form new ones."""
    cfg = load(overrides)
    spec = make_spec(cfg, "cluster", progress=not quiet)
    add_images(spec, Path(cfg.output_dir).expanduser(), float(cfg.embedder.distance_threshold),
               build(cfg, "export").mode, out, config=OmegaConf.to_container(cfg, resolve=True))
