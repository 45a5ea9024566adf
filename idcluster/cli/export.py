from typing import Optional

from .. import app
from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def export(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Re-materialise the folders from the cached clustering of the same overrides (computes nothing)."""
    cfg = load(overrides)
    app.cluster(cfg, out, cached_only=True, progress=not quiet)
