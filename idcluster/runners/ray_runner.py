"""runner=ray: decode/detect/embed on Ray actors that hold the models; results return to the driver.

Each actor unpickles the worker spec once (so the detector and embedder load
once per actor, on a GPU when device=cuda: `num_gpus_per_actor`) and runs the
pipeline's work function on one image at a time. The driver writes each result
into the content cache as it arrives, so:

- the cache needs no shared filesystem (results travel back through Ray's object store);
- a worker that dies loses only its in-flight images: the run stops with one
  error line, and a re-run finds every finished image cached and resumes.

`address`: None = RAY_ADDRESS if set (ray.init reads it), else a new local
instance (`num_cpus` caps it); "auto" joins the cluster started by `ray start --head`.
`device` and `workers` come from the run's config (conf/runner/ray.yaml interpolates them).
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Callable

from ..errors import PipelineError
from .local import default_workers

log = logging.getLogger(__name__)


def _import_ray():
    from ..models.extras import require

    (ray,) = require("ray", "runner=ray")
    return ray


class _Worker:
    """Actor body: one unpickled spec (its models) serving many tasks."""

    def __init__(self, blob: bytes, work: Callable):
        import cv2

        cv2.setNumThreads(1)
        self.spec, self.work = pickle.loads(blob), work

    def pid(self) -> int:
        return os.getpid()

    def run(self, task: Any) -> Any:
        return self.work(self.spec, [task])[0]


class RayRunner:
    def __init__(self, address: str | None = None, num_cpus: int | None = None, actors: int | None = None,
                 num_gpus_per_actor: float = 0.0, window: int = 4, device: str = "cpu", workers: int = 1):
        self.address = address
        self.num_cpus = num_cpus
        self.actors = actors or default_workers(int(workers))  # actors: null = one per worker
        # GPUs are reserved only when the run asks for them (device=cuda).
        self.num_gpus_per_actor = float(num_gpus_per_actor or 0) if device == "cuda" else 0.0
        self.window = int(window or 4)
        self.workers: list = []  # live actor handles during a run (tests kill one)

    def init(self):
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                      "include_dashboard": False, "configure_logging": False}
            if self.address:
                kwargs["address"] = self.address
            elif self.num_cpus and not os.environ.get("RAY_ADDRESS"):
                kwargs["num_cpus"] = int(self.num_cpus)
            ray.init(**kwargs)
        return ray

    def run(self, spec: Any, tasks: list, work: Callable[[Any, list], list],
            on_result: Callable[[Any, Any], None], advance: Callable[[], None]) -> None:
        if not tasks:
            return
        ray = self.init()
        from ray.exceptions import RayActorError, RayTaskError

        gpus = float(self.num_gpus_per_actor or 0)
        if gpus and ray.cluster_resources().get("GPU", 0) < gpus:
            log.warning("device=cuda: the Ray cluster has no GPU; actors run on CPU")
            gpus = 0.0
        n = max(1, int(self.actors))
        if gpus:
            n = min(n, max(1, int(ray.cluster_resources().get("GPU", 0) // gpus)))
        n = min(n, len(tasks))
        Actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(_Worker)
        blob = pickle.dumps(spec.for_workers())
        self.workers = [Actor.remote(blob, work) for _ in range(n)]
        pending: dict = {}
        queue = iter(tasks)
        try:
            # Bounded in-flight work per actor: memory stays flat, and a dead actor loses at most `window` images.
            for w in self.workers:
                for _ in range(self.window):
                    task = next(queue, None)
                    if task is not None:
                        pending[w.run.remote(task)] = (task, w)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                task, w = pending.pop(ref)
                out = ray.get(ref)
                on_result(task, out)
                advance()
                nxt = next(queue, None)
                if nxt is not None:
                    pending[w.run.remote(nxt)] = (nxt, w)
        except RayActorError:
            raise PipelineError("a Ray worker died (killed, or out of memory); finished images are cached: "
                                "run again to resume") from None
        except RayTaskError as e:
            raise PipelineError(f"a Ray task failed: {str(e).splitlines()[0]}") from None
        finally:
            for w in self.workers:
                ray.kill(w)
            self.workers = []
