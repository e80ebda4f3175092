"""Recipes and emitted graphs of every method, placement and target on the shared fixture, reduced to
fingerprints a refactoring must leave unchanged (tests/test_recipe_pins.py compares them with
tests/helpers/recipe_pins.json).

Regenerate the pins only when a number is meant to change, and say why in the commit:
    python -m tests.helpers.recipe_pins --write
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

PINS = Path(__file__).with_name("recipe_pins.json")
SAMPLES = 48
# (name, calibrate keyword arguments): every method × placement it applies to, PEG's group modes, a fallback,
# padded observation
CASES: list[tuple[str, dict[str, Any]]] = [
    *[(f"{m}-{p}", dict(method=m, placement=p)) for m in ("minmax", "percentile", "mse", "entropy")
      for p in ("gemm", "full")],
    ("percentile-99.9-gemm", dict(method="percentile", percentile=99.9)),
    ("smoothquant-gemm", dict(method="smoothquant")),
    ("smoothquant-0.6-gemm", dict(method="smoothquant", alpha=0.6)),
    *[(f"peg-{k}-{p}", dict(method="peg", groups=k, placement=p)) for k in (4, "auto") for p in ("gemm", "full")],
    ("peg-4-noperm-full", dict(method="peg", groups=4, permute=False, placement="full")),
    ("peg-auto-split-full", dict(method="peg", groups="auto", placement="full", gemm_split="split")),
    ("minmax-fallback-full", dict(method="minmax", placement="full", fallback=["a", "layer.0.*"])),
    ("minmax-padding-gemm", dict(method="minmax", include_padding=True)),
]
TARGETS = ("ort-cpu", "trt", "openvino")


def _numbers(values: list[float] | None) -> list[float] | None:
    """A long list as a few numbers that move if any entry moves: count, sum, sum of squares, min, max."""
    if values is None:
        return None
    a = np.asarray(values, np.float64)
    return [float(len(a)), float(a.sum()), float((a * a).sum()), float(a.min()), float(a.max())]


def recipe_print(recipe: Any) -> dict[str, Any]:
    sites = {k: {"tensor": s.tensor, "amax": float(s.amax), "group_amax": s.group_amax, "bounds": s.bounds,
                 "smooth": _numbers(s.smooth)} for k, s in sorted(recipe.sites.items())}
    perm = recipe.permutation
    return {"method": recipe.method, "placement": recipe.placement, "percentile": recipe.percentile,
            "alpha": recipe.alpha, "groups": recipe.groups, "permute": recipe.permute,
            "permutation": None if perm is None else hashlib.sha256(np.asarray(perm).tobytes()).hexdigest(),
            "fallback": sorted(recipe.fallback), "calibration": {k: v for k, v in recipe.calibration.items()
                                                                 if k not in ("data",)},
            "sites": sites}


def graph_print(model: Any) -> dict[str, Any]:
    """Op counts, dtypes of Q/DQ zero points, and the scales and initializers as numbers."""
    from onnx import numpy_helper

    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    total = [0.0, 0.0]
    dtypes: dict[str, int] = {}
    for a in inits.values():
        dtypes[str(a.dtype)] = dtypes.get(str(a.dtype), 0) + 1
        f = a.astype(np.float64)
        total[0] += float(f.sum())
        total[1] += float(np.abs(f).sum())
    return {"ops": dict(sorted(ops.items())), "initializer_dtypes": dict(sorted(dtypes.items())),
            "initializers": len(inits), "initializer_sum": total[0], "initializer_abs_sum": total[1]}


def compute(onnx_path: Path, data: Path) -> dict[str, Any]:
    """Every case's recipe fingerprint, and its emission's for every target it can be emitted for."""
    import onnx

    from qbert.artifacts import load_meta
    from tests.helpers.calibration import calibrate
    from qbert.calibration.emit import emit

    model, meta = onnx.load(str(onnx_path)), load_meta(onnx_path)
    out: dict[str, Any] = {}
    for name, kw in CASES:
        recipe = calibrate(onnx_path, meta, model, str(data), samples=SAMPLES, **kw)
        entry = {"recipe": recipe_print(recipe)}
        for target in TARGETS:
            q, summary = emit(model, recipe, target)
            entry[target] = {"graph": graph_print(q), "summary": {k: v for k, v in summary.items()
                                                                  if isinstance(v, (int, float, str))}}
        out[name] = entry
    return out


def main() -> None:
    from qbert.exporter.export import export
    from tests.conftest import FIXTURE, TUNE_TSV

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="write the pins (else print them)")
    ap.add_argument("--work", default="/tmp/qbert-recipe-pins")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / "fixture.onnx"
    if not onnx_path.is_file():
        export(str(FIXTURE), onnx_path)
    pins = compute(onnx_path, TUNE_TSV)
    text = json.dumps(pins, indent=1, sort_keys=True) + "\n"
    if args.write:
        PINS.write_text(text)
        print(f"wrote {PINS} ({len(pins)} recipes)")
    else:
        print(text)


if __name__ == "__main__":
    main()
