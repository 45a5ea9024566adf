"""rich progress bars for long stages; silent when disabled (tests, --quiet)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column is for bytes)."""

    def __init__(self, unit: str = "img"):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:.1f} {self.unit}/s" if speed < 100 else f"{speed:.0f} {self.unit}/s", style="progress.data.speed")


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
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield _Task(progress, progress.add_task(description, total=total))
