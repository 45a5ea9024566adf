from typing import Optional

import typer

from ..errors import ConfigError
from ..config.project import resolve
from .common import Overrides, Quiet, handle_errors, out, project


def sweep_overrides(args: list[str]) -> tuple[list[str], list[str], list[str], str | None, str]:
    """(project defaults, base overrides, sweep overrides, metric, name).

    A first argument without '=' names a [sweeps.NAME] of the project file.
    """
    proj = project()
    name, metric, named = "sweep", None, []
    if args and "=" not in args[0]:
        name, args = args[0], args[1:]
        if name not in proj.sweeps:
            known = ", ".join(sorted(proj.sweeps)) or "none"
            raise ConfigError(f"no sweep {name!r} in {proj.path or 'idcluster.toml'} (defined: {known})")
        named, metric = proj.sweeps[name].grid, proj.sweeps[name].metric
        args = [*proj.sweeps[name].overrides, *args]
    defaults, explicit = resolve(proj, list(args))
    swept = [o for o in [*named, *explicit] if _is_sweep(o)]
    base = [o for o in explicit if not _is_sweep(o)]
    if not swept:
        raise ConfigError("nothing to sweep: give at least one key=a,b,c (or range(), choice(), glob())")
    return defaults, base, swept, metric, name


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except HydraException:
        return False  # load_config reports the bad override with its own message


@handle_errors
def sweep(
    overrides: Optional[list[str]] = Overrides,
    metric: Optional[str] = typer.Option(None, "--metric", help="Sort by this metric (prefix - to minimise)."),
    quiet: bool = Quiet,
) -> None:
    """Run a grid of configs over the cached detections/embeddings: key=a,b,c range() choice() glob(), or a TOML sweep name."""
    from ..experiments.sweep import run_sweep

    defaults, base, swept, toml_metric, name = sweep_overrides(list(overrides or []))
    run_sweep(base, swept, out, name=name, metric=metric or toml_metric, progress=not quiet, defaults=defaults)
