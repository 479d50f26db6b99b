"""Progress of a run: live bars on a terminal, plain log lines otherwise (cron, CI, pipes).

The engine reports events; a reporter shows them. `make_reporter()` picks the bars when
stderr is a terminal. Both show per batch and overall: requests done, elapsed time, and the
cost so far.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from batcher.money.amounts import fmt_usd, to_usd


class Reporter(Protocol):
    def batch(self, batch_id: str, label: str, done: int, total: int, status: str) -> None:
        """A batch was submitted, polled or finished: `done` of `total` requests."""

    def overall(self, done: int, total: int, cost_pusd: int) -> None:
        """Items in a terminal status, of all items; money spent so far."""

    def note(self, text: str) -> None:
        """Something worth a line of its own (a follow-up round, a retry, a wait)."""

    def close(self) -> None: ...


def _elapsed(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 60}:{seconds % 60:02d}"


class LogReporter:
    """One line a change, to stderr (or `stream`); repeated identical states are skipped."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last: dict[str, tuple] = {}

    def _line(self, text: str) -> None:
        self.stream.write(f"[{_elapsed(self.start)}] {text}\n")
        self.stream.flush()

    def batch(self, batch_id: str, label: str, done: int, total: int, status: str) -> None:
        if self._last.get(batch_id) != (done, status):
            self._last[batch_id] = (done, status)
            self._line(f"batch {batch_id} ({label}): {status}, {done}/{total} requests")

    def overall(self, done: int, total: int, cost_pusd: int) -> None:
        if self._last.get("") != (done, cost_pusd):
            self._last[""] = (done, cost_pusd)
            self._line(f"items {done}/{total} finished, cost so far {fmt_usd(to_usd(cost_pusd))}")

    def note(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        pass


class BarReporter:
    """rich progress bars: one per batch and one overall."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
        )
        self.progress.start()
        self.total_task = self.progress.add_task("all items", total=None, info="")
        self.tasks: dict[str, int] = {}

    def batch(self, batch_id: str, label: str, done: int, total: int, status: str) -> None:
        if batch_id not in self.tasks:
            self.tasks[batch_id] = self.progress.add_task(
                f"{batch_id} {label}", total=total, info=status
            )
        self.progress.update(self.tasks[batch_id], completed=done, total=total, info=status)

    def overall(self, done: int, total: int, cost_pusd: int) -> None:
        self.progress.update(
            self.total_task, completed=done, total=total, info=f"cost {fmt_usd(to_usd(cost_pusd))}"
        )

    def note(self, text: str) -> None:
        self.progress.console.print(text)

    def close(self) -> None:
        self.progress.stop()


class QuietReporter:
    """Shows nothing (library use, tests)."""

    def batch(self, batch_id: str, label: str, done: int, total: int, status: str) -> None:
        pass

    def overall(self, done: int, total: int, cost_pusd: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def make_reporter(stream: TextIO | None = None) -> Reporter:
    """Bars when stderr is a terminal, log lines otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        return BarReporter()
    return LogReporter(stream)
