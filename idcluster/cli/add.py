from typing import Optional

from ..workflows.add import add_images
from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def add(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Add input_dir's images to the export in output_dir: close ones join existing identities, the rest form new ones."""
    cfg = load(overrides)
    add_images(cfg, out, progress=not quiet)
