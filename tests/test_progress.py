"""Long jobs show progress on a terminal and in a log file alike."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from agents.progress import JobProgress, TimeLeftColumn, track


def run_job(console: Console, log_interval: float) -> None:
    """Three steps of 2 seconds each on a made-up clock."""
    clock = [0.0]
    with JobProgress(console=console, log_interval=log_interval, get_time=lambda: clock[0]) as bar:
        task = bar.add_task("GRPO reward [+1.2]", total=3)
        for _ in range(3):
            clock[0] += 2
            bar.advance(task)


def test_a_job_writing_to_a_file_prints_plain_lines_and_no_bar() -> None:
    stream = io.StringIO()
    run_job(Console(file=stream, force_terminal=False, width=120), log_interval=0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "━" not in stream.getvalue()  # one line an advance here; no bar at the end
    assert lines[0] == "GRPO reward [+1.2]: 1/3 (0:00:02 elapsed, about 0:00:04 left)"  # markup shown literally
    assert lines[1] == "GRPO reward [+1.2]: 2/3 (0:00:04 elapsed, about 0:00:02 left)"
    assert lines[2] == "GRPO reward [+1.2]: 3/3 (0:00:06 elapsed)"


def test_lines_come_at_most_every_interval_and_always_at_the_end() -> None:
    stream = io.StringIO()
    run_job(Console(file=stream, force_terminal=False, width=120), log_interval=3600)
    assert stream.getvalue().splitlines() == ["GRPO reward [+1.2]: 3/3 (0:00:06 elapsed)"]


def test_time_left_is_the_mean_rate_of_this_run_also_when_resumed_and_steps_are_long() -> None:
    stream, clock = io.StringIO(), [1000.0]
    console = Console(file=stream, force_terminal=False, width=120)
    with JobProgress(console=console, log_interval=60, get_time=lambda: clock[0]) as bar:
        task = bar.add_task("GRPO", total=10, completed=4)  # resumed at step 4 of 10
        for _ in range(2):
            clock[0] += 150  # a step of 150 s: rich's own estimate would need two within its window
            bar.advance(task)
    assert stream.getvalue().splitlines() == [
        "GRPO: 5/10 (0:02:30 elapsed, about 0:12:30 left)",  # 5 steps left at 150 s each
        "GRPO: 6/10 (0:05:00 elapsed, about 0:10:00 left)",
    ]


def test_the_bar_shows_the_same_time_left_as_the_lines() -> None:
    clock = [1000.0]
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with JobProgress(console=console, get_time=lambda: clock[0]) as bar:
        task = bar.add_task("GRPO", total=10, completed=4)  # resumed at step 4 of 10
        column = next(column for column in bar.columns if isinstance(column, TimeLeftColumn))
        assert str(column.render(bar.tasks[0])) == "-:--:--"  # no step of this run yet
        clock[0] += 150
        bar.advance(task)
        assert str(column.render(bar.tasks[0])) == "0:12:30"  # as the line says: 5 steps left at 150 s
        bar.update(task, completed=10)
        assert str(column.render(bar.tasks[0])) == "0:00:00"


def test_a_terminal_gets_the_live_bar_only() -> None:
    stream = io.StringIO()
    run_job(Console(file=stream, force_terminal=True, width=120), log_interval=0)
    assert "━" in stream.getvalue() and "elapsed" not in stream.getvalue()


def test_track_yields_every_item_and_can_be_silent(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track(range(4), "queries", enabled=False)) == [0, 1, 2, 3]
    assert capsys.readouterr().out == ""
    assert list(track(range(4), "queries")) == [0, 1, 2, 3]
    assert capsys.readouterr().out.splitlines()[-1] == "queries: 4/4 (0:00:00 elapsed)"
