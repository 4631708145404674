"""Progress of long commands: a live bar on a terminal, plain periodic lines in a log file.

Under a batch scheduler (Slurm, ``nohup``, CI) standard error is a file, where rich draws no bar
until the end; :class:`LogProgress` prints one plain line every ``interval_s`` seconds instead::

    [17:40:12] demo: records 120/400 (30%), 2m10s elapsed, about 5m03s left

Both kinds offer the subset of ``rich.progress.Progress`` the command line uses (``add_task``,
``update``, ``advance``, and use as a context manager).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

INTERVAL_ENV = "WORKBENCH_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 30.0


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0


class LogProgress:
    """Plain progress lines: at the first count, then at most every ``interval_s`` seconds, then at the end.

    Args:
        console: where lines go (standard error of the command line).
        interval_s: seconds between lines.
        clock: monotonic seconds (injectable for tests).
        wall_clock: the ``HH:MM:SS`` stamp of each line.
    """

    def __init__(
        self,
        console: Console,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], str] = lambda: time.strftime("%H:%M:%S"),
    ) -> None:
        self.console = console
        self.interval_s = interval_s
        self.clock = clock
        self.wall_clock = wall_clock
        self.tasks: dict[TaskID, _Task] = {}
        self._started = clock()
        self._last_line: float | None = None

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            for task_id in self.tasks:
                self._line(task_id)

    def add_task(self, description: str, total: float | None = None) -> TaskID:
        task_id = TaskID(len(self.tasks))
        self.tasks[task_id] = _Task(description, total)
        self.console.print(f"[{self.wall_clock()}] {description}", markup=False, highlight=False)
        return task_id

    def update(self, task_id: TaskID, *, description: str | None = None, total: float | None = None) -> None:
        task = self.tasks[task_id]
        if description is not None:
            task.description = description
        if total is not None:
            task.total = total

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.tasks[task_id].completed += advance
        now = self.clock()
        if self._last_line is None or now - self._last_line >= self.interval_s:
            self._line(task_id)

    def _line(self, task_id: TaskID) -> None:
        task = self.tasks[task_id]
        now = self.clock()
        self._last_line = now
        elapsed = now - self._started
        done = f"{task.completed:.0f}"
        left = ""
        if task.total:
            share = task.completed / task.total
            done += f"/{task.total:.0f} ({share:.0%})"
            if 0 < share < 1:
                left = f", about {_duration(elapsed * (1 - share) / share)} left"
        line = f"[{self.wall_clock()}] {task.description} {done}, {_duration(elapsed)} elapsed{left}"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    """``125.4`` -> ``"2m05s"``; ``3725`` -> ``"1h02m"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_display(console: Console) -> Progress | LogProgress:
    """A rich bar when ``console`` is a terminal, else :class:`LogProgress`.

    The log interval is ``$WORKBENCH_PROGRESS_SECONDS`` (default 30).
    """
    if console.is_terminal:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
    try:
        interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        interval = DEFAULT_INTERVAL_S
    return LogProgress(console, interval_s=interval)
