"""Runners execute the pipeline's per-image work; the driver writes every result into the content cache.

The interface is one method, so the pipeline's per-task function (pipeline._work
today, a batched variant tomorrow) can change without the runners knowing:

    runner.run(spec, tasks, work, on_result, advance)

- `work(spec, task) -> out` is the picklable per-task function, run wherever the
  runner puts it (with `spec` unpickled there once, models loaded once);
- `on_result(task, out)` runs in the driver (it caches the result), `advance()`
  ticks the progress bar.

`local` is pipeline._run_tasks' process pool (runner=None in the Spec); `ray`
(idcluster.runners.ray_runner, extra `idcluster[ray]`) runs model-holding actors
on a Ray cluster. Clustering and export never know which ran.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..errors import ConfigError

RUNNERS = ("local", "ray")


class Runner(Protocol):
    def run(self, spec: Any, tasks: list[dict], work: Callable[[Any, dict], dict],
            on_result: Callable[[dict, dict], None], advance: Callable[[], None]) -> None: ...


def make_runner(cfg) -> Runner | None:
    """The runner chosen by the `runner` config group; None = the local process pool."""
    node = cfg.get("runner") if cfg is not None else None
    name = node.get("name", "local") if node is not None else "local"
    if name == "local":
        return None
    if name == "ray":
        from .ray_runner import RayRunner

        gpus = float(node.get("num_gpus_per_actor") or 0) if cfg.get("device") == "cuda" else 0.0
        return RayRunner(address=node.get("address"), num_cpus=node.get("num_cpus"), actors=node.get("actors"),
                         num_gpus_per_actor=gpus, window=int(node.get("window") or 4))
    raise ConfigError(f"runner must be one of {', '.join(RUNNERS)}, got {name!r}")
