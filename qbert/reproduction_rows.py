"""The study's rows — what `qbert reproduce` measures, each a name, a kind and the calibration settings it
varies — and how a selection (`only`) picks among them."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from qbert.errors import ConfigError


@dataclass
class Row:
    name: str
    kind: str  # fp32 | fp16 | int8
    calibrate: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # short, comma-free, stable: what `--only` takes (names contain commas); not in the cache key


ROWS = [
    Row("FP32", "fp32", id="fp32"),
    Row("FP16 (no INT8)", "fp16", id="fp16"),
    Row("W8A8 minmax, placement full (the study's naive W8A8)", "int8", dict(method="minmax", placement="full"),
        id="w8a8-minmax-full"),
    Row("W8A8 minmax, placement gemm (GEMM inputs only)", "int8", dict(method="minmax", placement="gemm"),
        id="w8a8-minmax-gemm"),
    # "gemm placement", not "placement gemm": `--only 'placement gemm'` (the README's short run) keeps one INT8 row
    Row("SmoothQuant α=0.85 (gemm placement)", "int8", dict(method="smoothquant", placement="gemm", alpha=0.85),
        id="smoothquant-gemm"),
    Row("Mixed precision: x, h, y high precision", "int8",
        dict(method="minmax", placement="full", fallback=["x", "h", "y"]), id="mixed-xhy"),
    *[Row(f"PEG K={k}{' permuted' if p else ''}", "int8",
          dict(method="peg", placement="full", groups=k, permute=p), id=f"peg-k{k}{'-permuted' if p else ''}")
      for k in (3, 4) for p in (True, False)],
    *[Row(f"Percentile {p}", "int8", dict(method="percentile", placement="full", percentile=p), id=f"percentile-{p:g}")
      for p in (99.0, 99.9, 99.99)],
    Row("MSE", "int8", dict(method="mse", placement="full"), id="mse"),
    Row("Auto mixed precision (budget 0.5 pt)", "int8",
        dict(method="minmax", placement="full", auto_fp16=True, budget=0.5), id="auto-mixed"),
    Row("PEG groups=auto (K per tensor)", "int8", dict(method="peg", placement="full", groups="auto"), id="peg-auto"),
    Row("Method auto (fastest within 0.3 pt on held-out calibration rows)", "int8", dict(method="auto", budget=0.3),
        id="method-auto"),
]


MIN_PART = 3  # a part of an id or name shorter than this ("a", ".", "1") would pick rows by accident


def select_rows(only: str | list[str] | None) -> list[Row]:
    """The rows `only` names, in table order. Each item is a row's exact id or name (`fp32`, `MSE`: that
    row), else a part of ids or names at least MIN_PART characters long (`peg-k4`, `placement gemm`: every row
    containing it, listed on stderr so a broad pick is never silent); anything shorter, or naming no row, is
    an error listing the ids. A string is split on commas, but a run of pieces that names a row as a whole is
    read as one (row names contain commas); a list is taken item by item."""
    if not only:
        return list(ROWS)
    picked: set[str] = set()
    unknown: list[str] = []
    pieces = only.split(",") if isinstance(only, str) else list(only)
    step = len(pieces) if isinstance(only, str) else 1
    i = 0
    while i < len(pieces):
        runs = [(j, ",".join(pieces[i:j]).strip()) for j in range(min(len(pieces), i + step), i, -1)]
        exact = next(((j, t, hits) for j, t in runs if (hits := _exact(t))), None)
        part = exact or next(((j, t, hits) for j, t in runs if (hits := _containing(t))), None)
        if part is None:
            if pieces[i].strip():
                unknown.append(pieces[i].strip())
            i += 1
            continue
        j, text, hits = part
        if exact is None and len(hits) > 1:
            print(f"note: {text!r} is part of {len(hits)} rows: {', '.join(hits)}", file=sys.stderr, flush=True)
        picked.update(hits)
        i = j
    if unknown or not picked:
        named = ",".join(unknown) or str(only)
        raise ConfigError("only", named, f"matches no row; give row ids ({', '.join(r.id for r in ROWS)}), exact "
                          f"row names, or a part of them of at least {MIN_PART} characters")
    return [r for r in ROWS if r.id in picked]


def _exact(text: str) -> list[str]:
    """The row whose id or name is `text` (any case)."""
    text = text.lower()
    return [r.id for r in ROWS if text in (r.id, r.name.lower())]


def _containing(text: str) -> list[str]:
    """Ids of the rows whose id or name contains `text` (any case), for a text of at least MIN_PART characters."""
    text = text.lower()
    if len(text) < MIN_PART:
        return []
    return [r.id for r in ROWS if text in r.id or text in r.name.lower()]
