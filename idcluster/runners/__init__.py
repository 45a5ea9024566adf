"""Runners execute the pipeline's per-image work; the driver writes every result into the content cache.

The interface is one method, so the pipeline's work can change without the runners knowing:

    runner.run(spec, tasks, work, on_result, advance)

- `work(spec, tasks) -> outs` is the picklable batch function (pipeline.work.work_batch:
  WorkItems in, one WorkResult each out), run wherever the runner puts it;
- `spec` is what `work` needs (pipeline.work.ImageStages); a runner that ships it to
  other processes sends `spec.for_workers()` (unpickled there once, models loaded once);
- `on_result(task, out)` runs in the driver (it caches the result), `advance()`
  ticks the progress bar.

Each option of the `runner` config group names its class by `_target_`
(conf/runner/*.yaml): `local` (runners.local.LocalRunner, a process pool) and `ray`
(runners.ray_runner.RayRunner, extra `idcluster[ray]`). Clustering and export never
know which ran.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol


class Runner(Protocol):
    def run(self, spec: Any, tasks: list, work: Callable[[Any, list], list],
            on_result: Callable[[Any, Any], None], advance: Callable[[], None]) -> None: ...


def make_runner(cfg) -> Runner:
    """The runner chosen by the `runner` config group, built from its `_target_`."""
    from ..config.compose import build  # here: pool workers import this package without Hydra

    return build(cfg, "runner")
