"""Errors: the user's (one line naming the fix, exit 2) apart from qbert's own bugs."""
from __future__ import annotations

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
        return f"{flag} {self.value}: {self.problem}"


class InternalError(Exception):
    """A bug in qbert, not the user's doing: the CLI says so and asks for a report (exit 1)."""
