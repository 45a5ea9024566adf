"""`idcluster cache info|prune`: the shared stage cache (default ~/.cache/idcluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import OVERRIDES_CONTEXT, Overrides, handle_errors, load, out

cache_app = typer.Typer(help="Inspect or prune the stage cache shared by all runs (cache_dir).", no_args_is_help=True)


def _root(overrides: Optional[list[str]]) -> Path:
    # The same cache_dir a run would use: $IDCLUSTER_CACHE / project defaults / cache_dir=... all apply.
    return Path(load(overrides, require_input=False).cache_dir).expanduser()


@cache_app.command(context_settings=OVERRIDES_CONTEXT)
@handle_errors
def info(overrides: Optional[list[str]] = Overrides) -> None:
    """Where the cache is, and its entries and size per stage."""
    from ..cache.maintenance import human_size, info as cache_info

    root = _root(overrides)
    if not root.exists():
        out.print(f"cache {root}: empty (nothing cached yet)")
        return
    stats = cache_info(root)
    table = Table(title=f"cache {stats['root']}: {stats['entries']} entries, {human_size(stats['bytes'])}", title_justify="left")
    for col in ("stage", "entries", "size"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage, s in stats["stages"].items():
        table.add_row(stage, str(s["entries"]), human_size(s["bytes"]))
    if stats["pack"]:  # the per-image entries above live in this one file
        table.add_row(f"{stats['pack']['file']} (on disk)", str(stats["pack"]["entries"]), human_size(stats["pack"]["disk_bytes"]))
    for name, size in stats["other_files"].items():
        table.add_row(name, "-", human_size(size))
    out.print(table)


@cache_app.command(context_settings=OVERRIDES_CONTEXT)
@handle_errors
def prune(
    overrides: Optional[list[str]] = Overrides,
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Drop entries unused for this long (30d, 12h, 2w)."),
    max_size: Optional[str] = typer.Option(None, "--max-size", help="Then drop least recently used entries down to this size (5GB)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
) -> None:
    """Remove old cache entries (least recently used first); never touches anything outside the cache."""
    from ..cache.maintenance import human_size, parse_age, parse_size, prune as cache_prune

    age = parse_age(older_than) if older_than else None
    size = parse_size(max_size) if max_size else None
    r = cache_prune(_root(overrides), older_than_s=age, max_bytes=size, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {r['removed']} entries ({human_size(r['freed_bytes'])}); "
              f"kept {r['kept']} ({human_size(r['kept_bytes'])}) in {r['root']}")
