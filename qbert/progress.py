"""Progress display on stderr (rich), silent when stderr is not a terminal or QBERT_QUIET is set."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator


def _silent() -> bool:
    return bool(os.environ.get("QBERT_QUIET")) or not sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    if _silent():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class Phases:
    """Nested phases with step counts, as TensorRT's IProgressMonitor reports a build; no-op when silent."""

    def __init__(self, bar=None):
        self.bar, self.tasks, self.depth = bar, {}, {}

    def start(self, name: str, parent: str | None, steps: int) -> None:
        if self.bar is not None:
            self.depth[name] = self.depth.get(parent, 0) + 1  # top phases have no parent: depth 1
            self.tasks[name] = self.bar.add_task("  " * self.depth[name] + name, total=steps or None)

    def step(self, name: str, step: int) -> None:
        if self.bar is not None and name in self.tasks:
            self.bar.update(self.tasks[name], completed=step + 1)

    def finish(self, name: str) -> None:
        if self.bar is not None and name in self.tasks:
            self.bar.remove_task(self.tasks.pop(name))


@contextlib.contextmanager
def phase_display(description: str) -> Iterator[Phases]:
    """A top-line spinner with the phases below it, each with its own bar."""
    if _silent():
        yield Phases()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        bar.add_task(description, total=None)
        yield Phases(bar)
