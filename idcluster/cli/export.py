from pathlib import Path
from typing import Optional

from rich.table import Table

from ..workflows import cluster as app
from ..config.compose import build, require_input_dir
from ..export.locking import output_lock
from ..export.report import read_report
from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def export(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Re-materialise the folders from the cached clustering (export.format=folders), or write a
    training set from output_dir's identity_clustering.json (export.format=kohya). Computes no clustering."""
    cfg = load(overrides, require_input=False)
    exporter = build(cfg, "export")
    if not exporter.reads_report:
        require_input_dir(cfg)
        app.cluster(cfg, out, cached_only=True, progress=not quiet)
        return
    output_dir = Path(cfg.output_dir).expanduser()
    read_report(output_dir)  # a missing clustering is an error before the lock creates output_dir
    with output_lock(output_dir, "export"):
        result = exporter.write(output_dir, build(cfg, "pose"), Path(cfg.cache_dir).expanduser(), progress=not quiet)
    table = Table(title=f"training set ({exporter.format}) in {result['dest']}", title_justify="left")
    table.add_column("folder")
    table.add_column("images", justify="right")
    table.add_column("repeats", justify="right")
    for folder, n in result["folders"].items():
        table.add_row(folder, str(n), str(result["repeats"][folder]))
    out.print(table)
    out.print(f"wrote {result['files']} image/caption pairs and manifest.csv to {result['dest']}")
