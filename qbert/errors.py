"""Errors: the user's (one line naming the fix, exit 2) apart from qbert's own bugs."""
from __future__ import annotations

import math
import re
from pathlib import PurePath
from typing import Any, Callable, Mapping


class Step:
    """A qbert call a message advises, in each reader's words: `qbert.export(model_spec='m', out='m.onnx')` for
    the library, the `qbert export` command with its flags for the command line. `args` are the function's
    argument names; `as_flag`'s `flags` spell them as flags."""

    def __init__(self, function: str, **args: Any):
        self.function, self.args = function, args

    def in_api(self) -> str:
        return f"qbert.{self.function}({', '.join(f'{k}={_api_value(v)}' for k, v in self.args.items())})"

    def in_cli(self, flags: Mapping[str, str] | None = None) -> str:
        return " ".join([f"qbert {self.function}", *(f"{_flag(k, flags)} {_cli_value(v)}"
                                                      for k, v in self.args.items())])


class QbertError(Exception):
    """A problem with the user's input or environment, with a message that names the fix.

    The message may refer to arguments as `{name}` (the name alone) or `{name=}` (with its value), each given in
    `mentions`: `str()` names them in the library's words (`samples`, `samples=16`) and `as_flag` in the CLI's
    (the flag, or the flag and its value), so neither reader meets the other's vocabulary. A mention whose value is
    a `Step` reads as that call (`{export}`)."""

    def __init__(self, message: str = "", **mentions: Any):
        self.template, self.mentions = message, mentions
        super().__init__(_render(message, mentions, _api_words))

    def as_flag(self, flags: Mapping[str, str] | None = None) -> str:
        """The message in the CLI's words; `flags` maps an argument to its flag where the two are spelt
        differently (`json_out` is the flag json), any other `name` is the flag of that name, dashed."""
        return _render(self.template, self.mentions, lambda name, value, with_value: (
            value.in_cli(flags) if isinstance(value, Step) else
            _flag(name, flags) if not with_value or isinstance(value, bool) else
            f"{_flag(name, flags)} {_cli_value(value)}"))


class ConfigError(QbertError):
    """A bad value in a library config or argument; `field` names it, so the CLI can name its flag instead:
    `field=value: problem` here; in `as_flag` the flag, its value (none for a boolean), then the problem."""

    def __init__(self, field: str, value: Any, problem: str, **mentions: Any):
        super().__init__(problem, **mentions)
        self.field, self.value, self.problem = field, value, str(self)
        self.args = (f"{field}={_api_value(value)}: {self.problem}",)

    def as_flag(self, flags: Mapping[str, str] | None = None) -> str:
        """The same message in the CLI's words: the flag and the value as typed, then the problem."""
        flag, problem = _flag(self.field, flags), super().as_flag(flags)
        return f"{flag}: {problem}" if isinstance(self.value, bool) else f"{flag} {_cli_value(self.value)}: {problem}"


def _flag(name: str, flags: Mapping[str, str] | None) -> str:
    return (flags or {}).get(name) or "--" + name.replace("_", "-")


def _cli_value(value: Any) -> str:
    """A value as it is typed after its flag: a list comma-separated."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _api_value(value: Any) -> str:
    text = repr(str(value)) if isinstance(value, PurePath) else repr(value)
    return text if len(text) <= 80 else f"<{type(value).__name__}: {text[:60]}…>"  # one line, not a whole recipe


def _api_words(name: str, value: Any, with_value: bool) -> str:
    return value.in_api() if isinstance(value, Step) else f"{name}={_api_value(value)}" if with_value else name


def _render(message: str, mentions: Mapping[str, Any], words: Callable[[str, Any, bool], str]) -> str:
    """Each mentioned argument's `{name}` or `{name=}` in `words`; any other brace is text (a path, a dict)."""
    if not mentions:
        return message
    return re.sub(r"\{(\w+)(=?)\}", lambda m: words(m[1], mentions[m[1]], bool(m[2])) if m[1] in mentions
                  else m[0], message)


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
