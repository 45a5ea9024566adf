from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def export(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet,
           retarget: Optional[Path] = typer.Option(None, "--retarget", metavar="FOLDER", help=(
               "A kohya training set was moved to FOLDER: rewrite its dataset_config.toml for that place "
               "(nothing else is read or written)."))) -> None:
    """Re-materialise the folders from the cached clustering (export.format=folders), or write a
    training set from output_dir's identity_clustering.json (export.format=kohya). Computes no clustering."""
    if retarget is not None:
        from ..export.kohya import retarget as move

        done = move(retarget)
        out.print(f"{done['dest']}: dataset_config.toml now points here (was {done['was']})" if done["dataset_config"]
                  else f"{done['dest']}: no dataset_config.toml to rewrite")
        out.print(f"sd-scripts: {'--dataset_config ' + str(done['dataset_config']) + '   or: ' if done['dataset_config'] else ''}"
                  f"{done['flags']}")
        return
    from ..export.locking import output_lock
    from ..export.report import read_report
    from ..workflows import cluster as app

    run = load(overrides, require_input=False)
    exporter = run.component("export")
    if not exporter.reads_report:
        app.cluster(load(overrides), out, cached_only=True, progress=not quiet)  # load: needs input_dir
        return
    output_dir = run.output_dir
    read_report(output_dir)  # a missing clustering is an error before the lock creates output_dir
    with output_lock(output_dir, "export"):
        pose = run.component("pose") if exporter.needs_pose else None
        result = exporter.write(output_dir, pose, run.cache_dir, progress=not quiet)
    table = Table(title=f"training set ({exporter.format}) in {result['dest']}", title_justify="left")
    table.add_column("folder")
    table.add_column("images", justify="right")
    table.add_column("repeats", justify="right")
    for folder, n in result["folders"].items():
        table.add_row(folder, str(n), str(result["repeats"][folder]))
    out.print(table)
    out.print(exporter.summary(result))
