"""rich progress bars for long stages; silent when disabled (tests, --quiet)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class _Task:
    def __init__(self, progress: Progress, task_id):
        self._progress, self._id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)


@contextmanager
def stage_bar(description: str, total: int, enabled: bool = True):
    """Yields an object with `.advance(n)`; shows a bar on stderr when enabled and total > 0."""
    if not enabled or total <= 0:
        yield _NullTask()
        return
    with Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield _Task(progress, progress.add_task(description, total=total))
