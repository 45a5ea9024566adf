from typing import Optional

from rich.table import Table

from .common import Overrides, Quiet, handle_errors, load, out

IDENTITY = "identity="


@handle_errors
def subcluster_pose(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Split identities of output_dir by head pose into <identity>/<view>/ folders (identity=NAME for one)."""
    from ..experiments import mlflow_link, tracking
    from ..pose.views import subcluster_pose as split
    from ..pose.views import view_order

    args = list(overrides or [])
    # identity= picks what to split; it is not a config key (nothing else reads it).
    identity = next((a[len(IDENTITY):] for a in args if a.startswith(IDENTITY)), None)
    run = load([a for a in args if not a.startswith(IDENTITY)], require_input=False)
    exporter = run.component("export")  # export.mode places the view folders' files, export.names names identities
    pose = run.component("pose")
    result = split(run.output_dir, pose, run.cache_dir, mode=exporter.mode, names=exporter.names,
                   identity=identity or None, progress=not quiet)
    table = Table(title=f"views per identity ({pose.method}) in {result['root']}", title_justify="left")
    views = sorted({v for counts in result["views"].values() for v in counts}, key=view_order)
    table.add_column("identity")
    for v in views:
        table.add_column(v, justify="right")
    table.add_column("total", justify="right")
    for ident, counts in result["views"].items():
        table.add_row(ident, *[str(counts.get(v, 0)) for v in views], str(sum(counts.values())))
    out.print(table)
    for name, c in sorted(result["centres"].items()):
        out.print(f"{name}: centre yaw {c['yaw']:+.0f}, pitch {c['pitch']:+.0f}")
    if result["sheets"]:
        out.print(f"contact sheets in {result['sheets'][0].parent}")
    if run.tracking.enabled:
        tracker = tracking.Tracker(run.tracking.uri, run.tracking.experiment)
        with tracker.run("subcluster-pose", tags={"command": "subcluster-pose"}) as run_id:
            if run_id:
                counts = {f"views.{i}.{v}": n for i, c in result["views"].items() for v, n in c.items()}
                tracker.log(tracking.flatten({"pose": run.choice("pose")}), counts, result["sheets"])
        if tracker.ok:
            out.print(mlflow_link.runs_line(tracker.uri, tracker.experiment, tracker.experiment_id))
