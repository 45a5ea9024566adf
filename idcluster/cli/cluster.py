from typing import Optional

import typer

from .common import Overrides, Quiet, handle_errors, load, out
from .sweep import sweep_overrides


@handle_errors
def cluster(
    overrides: Optional[list[str]] = Overrides,
    multirun: bool = typer.Option(False, "--multirun", "-m", help="Treat a=1,2,3 style overrides as a sweep."),
    quiet: bool = Quiet,
) -> None:
    """Run the whole pipeline (cached stages are reused) and export one folder per identity."""
    from ..experiments.sweep import run_sweep
    from ..workflows import cluster as app

    if multirun:
        defaults, base, swept, metric, name = sweep_overrides(list(overrides or []))
        run_sweep(base, swept, out, name=name, metric=metric, progress=not quiet, defaults=defaults)
        return
    app.cluster(load(overrides), out, progress=not quiet)


@handle_errors
def run(
    name: str = typer.Argument(..., help="An [experiments.NAME] of the project file."),
    overrides: Optional[list[str]] = Overrides,
    quiet: bool = Quiet,
) -> None:
    """Run a named experiment of idcluster.toml (same as: cluster +experiment=NAME)."""
    from ..workflows import cluster as app

    app.cluster(load(overrides, f"+experiment={name}"), out, progress=not quiet)
