from typing import Optional

from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def add(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Add input_dir's images to the export in output_dir: close ones join existing identities, the rest form new ones."""
    from ..workflows.add import add_images
    from ..workflows.cluster import make_spec
    run = load(overrides)
    spec = make_spec(run, "cluster", progress=not quiet)
    add_images(spec, run.output_dir, float(run.distance_threshold), run.component("export").mode, out,
               config=run.config)
