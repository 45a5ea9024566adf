"""Shared CLI plumbing: override arguments, error handling, logging."""

from __future__ import annotations

import functools
import logging
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from ..config.compose import GROUPS, default_options, group_options
from ..errors import IdclusterError

out = Console(soft_wrap=True)  # long paths and commands stay on one line (copy-paste)
err = Console(stderr=True, soft_wrap=True)

# Commands take Hydra overrides as free arguments (`group=option key=value`).
OVERRIDES_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}
Overrides = typer.Argument(None, help="Hydra overrides: group=option, key=value, +new.key=value", show_default=False)
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def groups_epilog() -> str:
    lines = ["Config groups (choose with group=option, * = default):"]
    defaults = default_options()
    for g in (*GROUPS, "pose"):  # pose: views of subcluster-pose and kohya captions
        opts = [o + ("*" if o == defaults.get(g) else "") for o in group_options(g)]
        lines.append(f"  {g}: {', '.join(opts)}")
    lines.append("Any key of the composed config can be overridden, e.g. clusterer.min_cluster_size=5.")
    return "\n\n".join(lines)


def setup_logging() -> None:
    root = logging.getLogger("idcluster")
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def handle_errors(fn):
    """User-caused failures: one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        setup_logging()
        try:
            return fn(*args, **kwargs)
        except IdclusterError as e:
            # escape: rich would eat "[sweeps.eps]" or the "[torch]" of "idcluster[torch]" as markup
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished images are cached; run the same command again to resume", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


# Set by the app callback (--project FILE); None = ./idcluster.toml when present.
STATE: dict = {"project": None}


def project():
    from ..config.project import load_project

    return load_project(STATE["project"])


def load(overrides: Optional[list[str]], *front: str, require_input: bool = True):
    """The run config: conf/ < project defaults < `front` (a command's own) < CLI overrides.

    require_input=False for commands that read an earlier output (its JSON) instead of input_dir."""
    from ..config.compose import load_config
    from ..config.project import resolve

    defaults, explicit = resolve(project(), [*front, *(overrides or [])])
    return load_config(explicit, defaults=defaults, require_input=require_input)
