"""Argument checks for the library API, the same rules the CLI applies to its flags: each failure is a
ConfigError naming the argument (the CLI prints it as its flag), raised before any work or any file is written,
so a script gets one clear line instead of a TypeError or IndexError from deep inside. Checking arguments loads
neither torch nor ONNX Runtime."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from qbert.errors import ConfigError, check_range

MAX_BENCH_BATCH = 1024  # bert-base at seq 128 and batch 1024 already needs ≈ 40 GB of attention scores
DATA_SUFFIXES = (".tsv", ".jsonl", ".json")


def choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if not isinstance(value, (str, type(None))) or value not in allowed:
        raise ConfigError(name, value, f"choose one of {', '.join(str(a) for a in allowed if a is not None)}")


def flag(name: str, value: Any) -> None:
    """A boolean: "no" or 0 would otherwise read as true or false by accident."""
    if not isinstance(value, bool):
        raise ConfigError(name, value, "must be True or False")


def path(name: str, value: Any, optional: bool = False) -> None:
    """A file or folder name (str or Path); whether it must exist is the caller's to say, in its own words."""
    if value is None and optional:
        return
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise ConfigError(name, value, "must be a path (str or pathlib.Path)")


def only_with(name: str, value: Any, applies: bool, why: str) -> None:
    """An argument that does something only with others (`applies`): given without them it would be silently
    ignored, so it is refused, as the CLI refuses a flag that does nothing."""
    if value is not None and not applies:
        raise ConfigError(name, value, why)


def text(name: str, value: Any) -> None:
    """An optional string (labels, hub ids)."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(name, value, "must be a string (or None)")


def data(name: str, value: Any) -> None:
    """Rows: a .tsv/.jsonl file (which must exist), a datasets spec, a Dataset or a list of rows."""
    from qbert.data import Dataset

    if isinstance(value, (str, Path)):
        if Path(value).suffix.lower() in DATA_SUFFIXES and not Path(value).exists():
            raise ConfigError(name, str(value), "data file not found")  # a folder or pipe: named by the loader
        return
    if not isinstance(value, (Dataset, list, tuple)):
        raise ConfigError(name, value, "give a .tsv/.jsonl path, a datasets spec like glue/qnli, a Dataset or a "
                          "list of rows")


def label_ids(name: str, value: Any) -> None:
    """None, or label names → distinct class ids 0…n-1."""
    if value is None:
        return
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value) or \
            sorted(v if isinstance(v, int) and not isinstance(v, bool) else -1 for v in value.values()) != \
            list(range(len(value))):
        raise ConfigError(name, value, "must map label names to distinct class ids 0…n-1, like "
                          "{'entailment': 0, 'not_entailment': 1}")


def batch_sizes(name: str, value: Any) -> list[int]:
    """Distinct batch sizes in [1, MAX_BENCH_BATCH], as a list (each is timed once)."""
    if isinstance(value, (str, bytes, int)) or not isinstance(value, Sequence):
        raise ConfigError(name, value, "must be a list of batch sizes, like [1, 8]")
    sizes = list(value)
    if not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BENCH_BATCH
                            for b in sizes):
        raise ConfigError(name, value, f"must be integers in [1, {MAX_BENCH_BATCH}], like [1, 8]")
    if len(set(sizes)) < len(sizes):
        raise ConfigError(name, value, "a batch size is repeated (each is timed once)")
    return sizes


def names(name: str, value: Any) -> None:
    """None or a list of strings (not one string, whose letters would each become a name)."""
    if value is not None and (isinstance(value, str) or not isinstance(value, (list, tuple))
                              or not value or not all(isinstance(v, str) and v.strip() for v in value)):
        raise ConfigError(name, value, "must be a non-empty list of strings, like ['fp32', 'peg']")


def compute_capability(name: str, value: Any) -> None:
    """`auto`, or a compute capability as a number (86) or its digits ("86")."""
    if isinstance(value, bool) or not (value == "auto" or (isinstance(value, int) and value > 0) or
                                       (isinstance(value, str) and value.isdigit())):
        raise ConfigError(name, value, "must be auto or a compute capability such as 86 (SM86)")


def keyword_checked(cls: type) -> type:
    """A config dataclass whose constructor names a misspelt or missing field in a ConfigError, as `validate()`
    names a bad value, instead of Python's TypeError about `__init__`."""
    cls.__init__ = _checked(cls.__init__, cls.__name__, "field", skip=1)  # type: ignore[method-assign]
    return cls


def arguments_checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A public function whose misspelt, extra or missing argument is a ConfigError naming it, as a bad value is,
    instead of Python's TypeError about the call."""
    return _checked(fn, f"{fn.__name__}()", "argument")


def _checked(fn: Callable[..., Any], who: str, what: str, skip: int = 0) -> Callable[..., Any]:
    """`fn` whose call is bound to its signature first: the first unknown keyword, a surplus positional or the
    first missing required parameter becomes one ConfigError naming it (`skip`: leading parameters, like self,
    the caller never names)."""
    sig = inspect.signature(fn)
    names = list(sig.parameters)[skip:]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            user = args[skip:]
            unknown = [k for k in kwargs if k not in sig.parameters]
            if unknown:
                raise ConfigError(unknown[0], kwargs[unknown[0]], f"{who} has no such {what} ({what}s: "
                                  f"{', '.join(names)})") from None
            if len(user) > len(names):
                raise ConfigError(names[-1], user[-1], f"{who} takes at most {len(names)} values; name them") from None
            given = {*names[:len(user)], *kwargs}
            missing = [n for n in names if sig.parameters[n].default is sig.parameters[n].empty and n not in given]
            name = missing[0] if missing else names[0]
            raise ConfigError(name, None, f"{who} needs {name}") from None
        return fn(*args, **kwargs)

    return call
