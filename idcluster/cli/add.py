from typing import Optional

from ..incremental import add_images
from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def add(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Add the images of input_dir to the export in output_dir: they join existing identities when close
    enough, the rest form new ones; existing identities, names and review decisions stay as they are."""
    cfg = load(overrides)
    add_images(cfg, out, progress=not quiet)
