"""The end-of-run summary table of a clustering (printed by `idcluster cluster`)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_summary(report: dict, console: Console, max_rows: int = 15) -> None:
    stats = report["statistics"]
    n = stats['identities']
    table = Table(title=f"idcluster: {n} {'identity' if n == 1 else 'identities'} from {stats['images']} image{'' if stats['images'] == 1 else 's'}", title_justify="left")
    table.add_column("folder")
    table.add_column("images", justify="right")
    table.add_column("example", overflow="fold")
    for c in report["clusters"][:max_rows]:
        table.add_row(c["identity"], str(c["size"]), c["images"][0] if c["images"] else "")
    if len(report["clusters"]) > max_rows:
        rest = report["clusters"][max_rows:]
        table.add_row(f"... {len(rest)} more", str(sum(c["size"] for c in rest)), "")
    reasons = ", ".join(f"{k} {v}" for k, v in report["noise"]["reasons"].items())
    table.add_row("noise", str(report["noise"]["size"]), reasons)
    console.print(table)
    t = stats["timings_s"]
    parts = [f"{k} {v:.2f}s" for k, v in t.items()]
    console.print("time: " + ", ".join(parts))
