"""The calibration methods, one module each behind one interface (base.Method), and their registry.

Adding a method is one module with a `Method` subclass and one line in REGISTRY below: the command line's
method choices, CalibrationConfig's validation, recipe checks and method `auto`'s candidates (select.py) all read
it.
"""
from __future__ import annotations

from qbert.calibration.methods.base import Choice, Method, Observed, PerTensor, Settings
from qbert.calibration.methods.entropy import Entropy
from qbert.calibration.methods.minmax import MinMax
from qbert.calibration.methods.mse import Mse
from qbert.calibration.methods.peg import Peg
from qbert.calibration.methods.percentile import Percentile
from qbert.calibration.methods.smoothquant import SmoothQuant
from qbert.errors import ConfigError

__all__ = ["AUTO", "METHODS", "NONE", "REGISTRY", "Choice", "Method", "Observed", "PerTensor", "Settings",
           "method", "readers"]

REGISTRY: dict[str, Method] = {m.name: m for m in (MinMax(), Percentile(), Mse(), Entropy(), Peg(), SmoothQuant())}
METHODS = tuple(REGISTRY)  # the built-in ones; read REGISTRY where a method registered later must count
AUTO = "auto"  # not a method: the search over the registered ones (select.py)
NONE = "none"  # a reproduction row with nothing in INT8; never a recipe file's method


def method(name: str) -> Method:
    """The registered method called `name`."""
    if name not in REGISTRY:
        raise ConfigError("method", name, f"choose one of {', '.join(REGISTRY)}, {AUTO}")
    return REGISTRY[name]


def readers(name: str) -> list[tuple[str, dict[str, object]]]:
    """The methods that read setting `name`, each with the other settings it needs for that (unconditional
    readers first): what an error says when `name` is given to a method that ignores it."""
    found = [(m.name, m.reads_when.get(name, {})) for m in REGISTRY.values() if name in m.reads]
    return sorted(found, key=lambda r: len(r[1]))
