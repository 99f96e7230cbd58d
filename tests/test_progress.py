"""Long jobs show progress on a terminal and in a log file alike."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from agents.progress import JobProgress, track


def run_job(console: Console, log_interval: float) -> None:
    with JobProgress(console=console, log_interval=log_interval) as bar:
        task = bar.add_task("GRPO reward [+1.2]", total=3)
        for _ in range(3):
            bar.advance(task)


def test_a_job_writing_to_a_file_prints_plain_lines_and_no_bar() -> None:
    stream = io.StringIO()
    run_job(Console(file=stream, force_terminal=False, width=120), log_interval=0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "━" not in stream.getvalue()  # one line an advance here; no bar at the end
    assert re.fullmatch(r"GRPO reward \[\+1\.2\]: 1/3 \(0:00:00 elapsed\)", lines[0])  # no rate yet
    assert re.fullmatch(r"GRPO reward \[\+1\.2\]: 2/3 \(0:00:00 elapsed, about \d+:\d\d:\d\d left\)", lines[1])
    assert re.fullmatch(r"GRPO reward \[\+1\.2\]: 3/3 \(0:00:00 elapsed\)", lines[2])  # markup shown literally


def test_lines_come_at_most_every_interval_and_always_at_the_end() -> None:
    stream = io.StringIO()
    run_job(Console(file=stream, force_terminal=False, width=120), log_interval=3600)
    assert stream.getvalue().splitlines() == ["GRPO reward [+1.2]: 3/3 (0:00:00 elapsed)"]


def test_a_terminal_gets_the_live_bar_only() -> None:
    stream = io.StringIO()
    run_job(Console(file=stream, force_terminal=True, width=120), log_interval=0)
    assert "━" in stream.getvalue() and "elapsed" not in stream.getvalue()


def test_track_yields_every_item_and_can_be_silent(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track(range(4), "queries", enabled=False)) == [0, 1, 2, 3]
    assert capsys.readouterr().out == ""
    assert list(track(range(4), "queries")) == [0, 1, 2, 3]
    assert capsys.readouterr().out.splitlines()[-1] == "queries: 4/4 (0:00:00 elapsed)"
