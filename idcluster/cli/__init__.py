"""The `idcluster` command: one module per subcommand, Hydra overrides as arguments.

Each subcommand imports its workflow inside the command, so `idcluster --help` and
`idcluster review` start without loading the pipeline (scikit-learn, SciPy, models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .add import add
from .cache import cache_app
from .cluster import cluster, run
from .common import OVERRIDES_CONTEXT, STATE, groups_epilog
from .demo import demo
from .detect import detect
from .embed import embed
from .export import export
from .subcluster_pose import subcluster_pose
from .review import review
from .sweep import sweep

app = typer.Typer(
    name="idcluster",
    help="Group images of characters by who they are: one folder per identity.",
    epilog=groups_epilog(),
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
for command in (detect, embed, cluster, add, export, sweep, run, demo, review):
    app.command(context_settings=OVERRIDES_CONTEXT, epilog=groups_epilog())(command)
app.command("subcluster-pose", context_settings=OVERRIDES_CONTEXT, epilog=groups_epilog())(subcluster_pose)
app.add_typer(cache_app, name="cache")


@app.callback()
def _options(
    project: Optional[Path] = typer.Option(None, "--project", help="Project file (default: ./idcluster.toml if present)."),
    debug: bool = typer.Option(False, "--debug", help="On a bug in idcluster, print its full traceback "
                               "(also: IDCLUSTER_DEBUG=1; else it is written to a file the error line names)."),
) -> None:
    STATE["project"] = project
    STATE["debug"] = debug


def main() -> None:
    app()
