"""Progress on stderr: rich bars on a terminal, plain timestamped lines otherwise (CI logs, nohup, `2>log`).

A long command must never look dead in a log, so when stderr is not a TTY each top-level step prints a line
(`[  12.3s] calibrate [minmax]: 256/512 (50%)`) at every tenth of the way, at least every 10 s while it moves
and when it ends; steps nested inside another (calibrate inside reproduce) stay quiet unless they run for
more than 30 s. `QBERT_QUIET=1` (what the CLI's quiet option sets) silences everything.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterator, Optional

_T0 = time.monotonic()
_depth = 0  # open progress bars, to tell nested steps from top-level ones
NESTED_HEARTBEAT_S = 30.0
TOP_LEVEL_EVERY_S = 10.0

Advance = Callable[..., None]  # advance(n, note=None)


def quiet() -> bool:
    return bool(os.environ.get("QBERT_QUIET"))


def _plain() -> bool:
    return not sys.stderr.isatty()


def line(message: str) -> None:
    """One timestamped line on stderr (unless quiet): what a long command is doing now."""
    if not quiet():
        print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def warn(text: str) -> None:
    """One line on stderr starting with `warning:`, shown even when quiet: it is about the result, not progress."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


class _Lines:
    """The non-TTY progress display: decides which advances deserve a line."""

    def __init__(self, description: str, total: int, nested: bool):
        self.description, self.total, self.nested = description, max(total, 0), nested
        self.done, self.tenths, self.last = 0, 0, time.monotonic()

    def advance(self, n: int = 1, note: Optional[str] = None) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.done >= self.total
        tenths = 10 * self.done // self.total if self.total else 10
        if self.nested:
            due = not finished and now - self.last >= NESTED_HEARTBEAT_S
        else:
            due = finished or note is not None or tenths > self.tenths or now - self.last >= TOP_LEVEL_EVERY_S
        self.tenths = tenths
        if due:
            self.last = now
            pct = f" ({100 * self.done // self.total}%)" if self.total else ""
            line(f"{self.description}: {self.done}/{self.total}{pct}" + (f" — {note}" if note else ""))


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Advance]:
    """Yield `advance(n, note=None)`; `note` names what was just finished (a row, a file)."""
    global _depth
    nested = _depth > 0
    _depth += 1
    try:
        if quiet():
            yield lambda n=1, note=None: None
        elif _plain():
            yield _Lines(description, total, nested).advance
        else:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(description, total=total)

                def advance(n: int = 1, note: Optional[str] = None) -> None:
                    bar.update(task, advance=n, description=f"{description} — {note}" if note else description)

                yield advance
    finally:
        _depth -= 1


class Phases:
    """Nested phases with step counts, as TensorRT's IProgressMonitor reports a build; no-op when silent.

    With a rich `bar` every phase gets its own bar; with `plain=True` top-level phases print a line when they
    start and when they end (with their duration)."""

    def __init__(self, bar=None, plain: bool = False):
        self.bar, self.plain, self.tasks, self.depth, self.started = bar, plain, {}, {}, {}

    def start(self, name: str, parent: str | None, steps: int) -> None:
        self.depth[name] = self.depth.get(parent, 0) + 1  # top phases have no parent: depth 1
        if self.bar is not None:
            self.tasks[name] = self.bar.add_task("  " * self.depth[name] + name, total=steps or None)
        elif self.plain and self.depth[name] == 1:
            self.started[name] = time.monotonic()
            line(f"{name} …")

    def step(self, name: str, step: int) -> None:
        if self.bar is not None and name in self.tasks:
            self.bar.update(self.tasks[name], completed=step + 1)

    def finish(self, name: str) -> None:
        if self.bar is not None and name in self.tasks:
            self.bar.remove_task(self.tasks.pop(name))
        elif name in self.started:
            line(f"{name}: done in {time.monotonic() - self.started.pop(name):.1f} s")


@contextlib.contextmanager
def phase_display(description: str) -> Iterator[Phases]:
    """A top-line spinner with the phases below it, each with its own bar (plain lines when not a TTY)."""
    if quiet():
        yield Phases()
        return
    if _plain():
        line(description)
        yield Phases(plain=True)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        bar.add_task(description, total=None)
        yield Phases(bar)
