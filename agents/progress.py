"""The progress display every long job shows (evaluation, training, the audit, precompute).

On a terminal: a live bar with the job's description, the count, time elapsed and time left.
Into a file (a job under ``nohup``, a batch scheduler's log, CI): a plain line per task at most
every ``LOG_INTERVAL_SECONDS`` and one when it finishes, e.g.
``GRPO reward +1.234 valid 98%: 12/40 (0:26:01 elapsed, about 0:59:40 left)``. Rich alone draws a
bar into a file only when the job stops, so a two-hour training run would show nothing until its
end. Both show one estimate of the time left: the rate of this run so far (a resumed job counts
only its own steps), which needs no window of recent steps, so jobs of few long steps get one too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from datetime import timedelta
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    get_console,
)
from rich.text import Text

LOG_INTERVAL_SECONDS = 60.0
Item = TypeVar("Item")


class JobProgress(Progress):
    """A rich ``Progress`` that, when its console is not a terminal, also writes the plain lines
    described in the module docstring (and no bar at the end); ``enabled=False`` shows nothing."""

    def __init__(
        self,
        enabled: bool = True,
        console: Console | None = None,
        log_interval: float = LOG_INTERVAL_SECONDS,
        get_time: Callable[[], float] | None = None,
    ) -> None:
        console = console or get_console()
        self.logs_lines = enabled and not console.is_terminal
        super().__init__(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeLeftColumn(self.time_left),
            console=console,
            disable=not enabled or self.logs_lines,  # into a file: the lines only, no bar drawn at the end
            get_time=get_time,
        )
        self.log_interval = log_interval
        self.last_line: dict[TaskID, float] = {}  # when each task's last line was written
        self.completed_at_start: dict[TaskID, float] = {}  # a resumed job starts part-way
        self.finished_lines: set[TaskID] = set()

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self.last_line[task_id] = self.get_time()
        self.completed_at_start[task_id] = self._tasks[task_id].completed
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self.write_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self.write_line(task_id)

    def write_line(self, task_id: TaskID) -> None:
        """The task's plain line, when lines are written and one is due."""
        if not self.logs_lines:
            return
        with self._lock:
            task = self._tasks[task_id]
            now = self.get_time()
            if task_id in self.finished_lines:
                return
            if not task.finished and now - self.last_line.get(task_id, now) < self.log_interval:
                return
            self.last_line[task_id] = now
            if task.finished:
                self.finished_lines.add(task_id)
            count = f"{task.completed:,.0f}" + ("" if task.total is None else f"/{task.total:,.0f}")
            timing = f"{_clock(task.elapsed)} elapsed"
            left = self.time_left(task)
            if not task.finished and left is not None:
                timing += f", about {_clock(left)} left"
            line = f"{task.description}: {count} ({timing})"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def time_left(self, task: Task) -> float | None:
        """Seconds left at this run's mean rate so far; None before its first step (or without a total)."""
        if task.finished:
            return 0.0
        done_here = task.completed - self.completed_at_start.get(task.id, task.completed)
        if task.total is None or done_here <= 0 or not task.elapsed:
            return None
        return (task.total - task.completed) * task.elapsed / done_here


class TimeLeftColumn(ProgressColumn):
    """The bar's time left, from the same estimate as the plain lines (``JobProgress.time_left``)."""

    def __init__(self, estimate: Callable[[Task], float | None]) -> None:
        super().__init__()
        self.estimate = estimate

    def render(self, task: Task) -> Text:
        seconds = self.estimate(task)
        return Text("-:--:--" if seconds is None else _clock(seconds), style="progress.remaining")


def _clock(seconds: float | None) -> str:
    return str(timedelta(seconds=round(seconds or 0.0)))


def progress_bar(enabled: bool = True) -> JobProgress:
    """The progress display for a job (``with progress_bar(...) as bar: task = bar.add_task(...)``)."""
    return JobProgress(enabled)


def track(items: Iterable[Item], description: str, total: int | None = None, enabled: bool = True) -> Iterator[Item]:
    """``items`` one by one, with the job's progress display (``total``: ``len(items)`` where it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with progress_bar(enabled) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
