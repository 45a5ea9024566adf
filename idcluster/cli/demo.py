from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def demo(
    overrides: Optional[list[str]] = Overrides,
    folder: Path = typer.Option(Path("idcluster_demo"), "--dir", help="Where to write the demo instances and output."),
    quiet: bool = Quiet,
) -> None:
    """Build a labelled instance folder from photos shipped in installed packages, cluster it, score it."""
    from ..experiments.demo_data import build_demo_set
    from ..experiments.metrics import score
    from ..workflows import cluster as app

    # Six identities with 8 images each: clusters of 3+ are real identities here.
    base = [f"output_dir={folder / 'output'}", "clusterer.min_cluster_size=3", "export.overwrite=true"]
    probe = load(overrides, "input_dir=unused")
    instances, truth = build_demo_set(folder, probe.component("detector"))
    out.print(f"demo: {len(truth)} instance crops of {len(set(truth.values()))} people in {instances}")
    report = app.cluster(load(overrides, f"input_dir={instances}", *base), out, progress=not quiet)

    by_path = {img["rel_path"]: img["identity"] for img in report["images"]}
    table = Table(title="found vs truth", title_justify="left")
    table.add_column("folder")
    table.add_column("images", justify="right")
    table.add_column("true identities inside")
    groups: dict[str, list[str]] = {}
    for rel, folder_name in by_path.items():
        groups.setdefault(folder_name, []).append(truth[rel])
    for name in sorted(groups, key=lambda n: (n == "noise", n)):
        members = groups[name]
        inside = ", ".join(f"{t} x{members.count(t)}" for t in sorted(set(members)))
        table.add_row(name, str(len(members)), inside)
    out.print(table)
    names = sorted(by_path)
    found = [int(by_path[n].split("_")[1]) if by_path[n] != "noise" else -1 for n in names]
    m = score([truth[n] for n in names], found)
    out.print(f"BCubed F1 {m['bcubed_f1']:.3f} (P {m['bcubed_precision']:.3f}, R {m['bcubed_recall']:.3f}); "
              f"pairwise F1 {m['pairwise_f1']:.3f}")
    out.print(f"next: fix identities in the browser with `idcluster review {folder / 'output'}`; "
              "running the demo again keeps those fixes")
