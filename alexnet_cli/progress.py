"""Progress reporting that library code can call without knowing about terminals.

Library functions take a ``Progress``; the CLI passes one backed by rich, tests
and scripts pass nothing and get the silent default.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bars

from alexnet_cli.terminal import shown


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None) -> "contextmanager[ProgressTask]": ...

    def note(self, message: str) -> None: ...


class _SilentTask:
    def advance(self, amount: float = 1) -> None:
        pass


class SilentProgress:
    """Reports nothing: the default for library calls."""

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[ProgressTask]:
        yield _SilentTask()

    def note(self, message: str) -> None:
        pass


class RichProgress:
    """Rich progress bars with count, rate (items/s) and ETA, and notes on the console."""

    def __init__(self, console, unit: str = "img") -> None:
        self.console = console
        self.unit = unit

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[ProgressTask]:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn()]
        with Bars(*columns, console=self.console, transient=False) as bars:
            task_id = bars.add_task(shown(description), total=total, rate="")
            unit = self.unit

            class _Task:
                def advance(self, amount: float = 1) -> None:
                    bars.advance(task_id, amount)
                    speed = bars.tasks[task_id].speed
                    bars.update(task_id, rate=f"{speed:,.0f} {unit}/s" if speed else "")

            yield _Task()

    def note(self, message: str) -> None:
        self.console.print(message)
