from typing import Optional

from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def detect(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Detect faces in every image of input_dir and cache them (nothing is exported)."""
    from ..workflows.cluster import run_stage
    from ..export.report import statistics
    run = load(overrides)
    result = run_stage(run, "detect", progress=not quiet)
    s = statistics(result)
    out.print(f"{s['images']} images: {s['images_with_face']} with a usable face; "
              f"detected {result.computed['detect']} new, cache {run.cache_dir}")
