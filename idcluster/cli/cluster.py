from typing import Optional

from .. import app
from ..config import load_config
from .common import Overrides, Quiet, handle_errors, out, overrides_list


@handle_errors
def cluster(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Run the whole pipeline (cached stages are reused) and export one folder per identity."""
    cfg = load_config(overrides_list(overrides))
    app.cluster(cfg, out, progress=not quiet)
