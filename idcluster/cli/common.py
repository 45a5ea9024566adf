"""Shared CLI plumbing: override arguments, error handling, logging."""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
import tempfile
import traceback
from typing import Optional

import typer
from typer.exceptions import TyperException
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
    for g in GROUPS:
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


DEBUG_ENV = "IDCLUSTER_DEBUG"


def debug() -> bool:
    """--debug on the command line, or IDCLUSTER_DEBUG set to anything but 0/empty."""
    return bool(STATE["debug"]) or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def handle_errors(fn):
    """What the user caused (IdclusterError): one line on stderr, exit 2, never a traceback.
    Anything else is a bug in idcluster: one line saying so and where its traceback is, exit 1
    (the traceback in full on stderr with --debug / IDCLUSTER_DEBUG=1). Ctrl-C: exit 130."""

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
        except (typer.Exit, typer.Abort, TyperException):  # the command line's own control flow
            raise
        except Exception as e:  # noqa: BLE001 - the one place a bug is caught: reported as a bug
            report_bug(e)
            raise typer.Exit(1) from None

    return wrapper


def report_bug(e: BaseException) -> None:
    """One line on stderr: a bug, not the user's doing, and where its traceback is."""
    what = " ".join(f"{type(e).__name__}: {e}".split())[:300]
    text = "".join(traceback.format_exception(e))
    if debug():
        sys.stderr.write(text)
        sys.stderr.flush()
        where = "the traceback is above"
    else:
        path = _write_report(text)
        where = (f"traceback in {path}" if path else
                 f"run again with `idcluster --debug ...` or {DEBUG_ENV}=1 to see the traceback")
    err.print(f"[bold red]bug:[/] this is a bug in idcluster, not something you did ({escape(what)}); "
              f"{escape(where)}; please report it", highlight=False, soft_wrap=True)


def _write_report(text: str) -> str | None:
    """The traceback and versions in a file of the temp folder; None when it cannot be written."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("idcluster")
    except PackageNotFoundError:
        ours = "unknown"
    head = (f"idcluster {ours}, Python {platform.python_version()} on {platform.platform()}\n"
            f"command: {' '.join(sys.argv)}\n\n")
    try:
        with tempfile.NamedTemporaryFile("w", prefix="idcluster-bug-", suffix=".txt", delete=False,
                                         encoding="utf-8") as f:
            f.write(head + text)
        return f.name
    except OSError:
        return None


# Set by the app callback (--project FILE, --debug); project None = ./idcluster.toml when present.
STATE: dict = {"project": None, "debug": False}


def project():
    from ..config.project import load_project

    return load_project(STATE["project"])


def load(overrides: Optional[list[str]], *front: str, require_input: bool = True):
    """The run's settings: conf/ < project defaults < `front` (a command's own) < CLI overrides,
    composed by Hydra and read into typed, frozen RunSettings (the edge: nothing below reads Hydra).

    require_input=False for commands that read an earlier output (its JSON) instead of input_dir."""
    from ..config.compose import load_config
    from ..config.project import resolve
    from ..config.settings import RunSettings

    defaults, explicit = resolve(project(), [*front, *(overrides or [])])
    return RunSettings.from_config(load_config(explicit, defaults=defaults, require_input=require_input))
