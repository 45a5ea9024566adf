"""runner=local: the per-image work in this process, or on a pool of `workers` processes.

Work goes out in batches of `batch_images` images (their faces share one embedder
call); each batch's results come back to the driver as it finishes, so an
interrupted run loses at most the batches in flight. Fewer than POOL_MIN_TASKS
images, or one worker, run inline: a pool costs more than it saves there.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from ..errors import PipelineError

# Below this many images to process, a process pool costs more than it saves.
POOL_MIN_TASKS = 8


def default_workers(workers: int) -> int:
    """workers=0: one per core."""
    return workers if workers > 0 else (os.cpu_count() or 1)


def _batches(tasks: list, size: int):
    for i in range(0, len(tasks), size):
        yield tasks[i:i + size]


# One per pool process: the unpickled spec (its models load once per process) and the work function.
_WORKER: tuple[Any, Callable] | None = None


def _init_worker(blob: bytes) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import cv2

    cv2.setNumThreads(1)  # one image per core; no nested thread pools
    _WORKER = pickle.loads(blob)


def _work_in_pool(tasks: list) -> list:
    spec, work = _WORKER
    return work(spec, tasks)


class LocalRunner:
    def __init__(self, workers: int = 1, batch_images: int = 16):
        self.workers = workers  # 0: one per core
        self.batch_images = batch_images

    def run(self, spec: Any, tasks: list, work: Callable[[Any, list], list],
            on_result: Callable[[Any, Any], None], advance: Callable[[], None]) -> None:
        workers = default_workers(int(self.workers))
        size = max(1, int(self.batch_images))
        if workers <= 1 or len(tasks) < POOL_MIN_TASKS:
            for batch in _batches(tasks, size):
                for task, out in zip(batch, work(spec, batch)):
                    on_result(task, out)
                    advance()
            return
        blob = pickle.dumps((spec.for_workers(), work))
        # Small batches while there are few tasks per worker, so every core gets work.
        size = max(1, min(size, len(tasks) // (workers * 4) or 1))
        pending: dict = {}
        queue = _batches(tasks, size)
        window = workers * 2  # bounded in-flight work keeps memory flat on huge folders
        # spawn, not fork: a fork after onnxruntime/OpenMP threads exist in this
        # process can deadlock the child (seen here when models ran in the parent first).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(blob,)) as pool:
            try:
                while True:
                    while len(pending) < window:
                        batch = next(queue, None)
                        if batch is None:
                            break
                        pending[pool.submit(_work_in_pool, batch)] = batch
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        batch = pending.pop(fut)
                        for task, out in zip(batch, fut.result()):
                            on_result(task, out)
                            advance()
            except BrokenProcessPool:
                raise PipelineError(
                    "a worker process died (out of memory, or killed); finished images are cached: "
                    "run again to resume, or with workers=1"
                ) from None
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
