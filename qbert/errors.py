"""Errors: the user's (one line naming the fix, exit 2) apart from qbert's own bugs."""
from __future__ import annotations

import math
from typing import Any


class QbertError(Exception):
    """A problem with the user's input or environment, with a message that names the fix."""


class ConfigError(QbertError):
    """A bad value in a library config or argument; `field` names it, so the CLI can name its flag instead."""

    def __init__(self, field: str, value: Any, problem: str):
        super().__init__(f"{field}={value!r}: {problem}")
        self.field, self.value, self.problem = field, value, problem

    def as_flag(self) -> str:
        """The same message in the CLI's words: `--batch-size 0: must be …`."""
        flag = "--json" if self.field == "json_out" else "--" + self.field.replace("_", "-")
        return f"{flag}: {self.problem}" if isinstance(self.value, bool) else f"{flag} {self.value}: {self.problem}"


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                integer: bool = True, optional: bool = False) -> None:
    """The one rule for numeric arguments, library and CLI alike: a ConfigError naming the argument (the CLI
    prints it as its flag). `None` means "not given": it passes only an `optional` argument (one whose default
    is chosen later); a required one would fail deep inside as a TypeError."""
    if value is None and optional:
        return
    kind = "an integer " if integer else ""
    problem = ("must be a positive integer" if integer and low == 1 and high is None else
               f"must be {kind}in [{low:g}, {high:g}]" if low is not None and high is not None else
               f"must be {kind}≥ {low:g}" if low is not None else f"must be {kind}≤ {high:g}" if high is not None
               else "must be an integer" if integer else "must be a finite number")
    if value is None:
        raise ConfigError(name, value, problem)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or \
            not math.isfinite(value):
        raise ConfigError(name, value, "must be an integer" if integer else "must be a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(name, value, problem)


class InternalError(Exception):
    """A bug in qbert, not the user's doing: the CLI says so and asks for a report (exit 1)."""
