from typing import Optional

from .common import Overrides, Quiet, handle_errors, load, out


@handle_errors
def embed(overrides: Optional[list[str]] = Overrides, quiet: bool = Quiet) -> None:
    """Detect (where not cached) and embed the chosen face of every image; cache both."""
    from ..workflows.cluster import run_stage
    from ..export.report import statistics
    run = load(overrides)
    result = run_stage(run, "embed", progress=not quiet)
    s = statistics(result)
    out.print(f"{s['images']} images: {s['embedded']} embeddings ({result.computed['embed']} new), "
              f"cache {run.cache_dir}")
