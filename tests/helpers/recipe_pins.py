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


def _ops(model: Any) -> dict[str, int]:
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


def graph_print(model: Any, fp32: Any) -> dict[str, Any]:
    """What emission decided, independent of how the exporter spelled the FP32 graph (constants as initializers
    or Constant nodes differ between onnx/onnxscript releases): the ops emission added or removed (counts against
    the FP32 graph), the Q/DQ scales and zero-point types, and the INT8 weights."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    before, after = _ops(fp32), _ops(model)
    ops = {k: after.get(k, 0) - before.get(k, 0) for k in {*before, *after}}
    ops = {k: v for k, v in ops.items() if v}
    scales, zero_points = [], {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scales.extend(np.asarray(values[n.input[1]], np.float64).ravel().tolist())
            if len(n.input) > 2 and n.input[2] in values:
                kind = str(values[n.input[2]].dtype)
                zero_points[kind] = zero_points.get(kind, 0) + 1
    weights = [a for a in values.values() if a.dtype == np.int8]
    return {"ops": dict(sorted(ops.items())), "qdq_scales": _numbers(scales),
            "zero_point_dtypes": dict(sorted(zero_points.items())),
            "int8_weights": _numbers(np.concatenate([w.ravel() for w in weights]).tolist() if weights else None)}


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
            entry[target] = {"graph": graph_print(q, model), "summary": {k: v for k, v in summary.items()
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
