"""Whole-model effect of emitting Q, K and V side by side (one GEMM per PEG group instead of one per linear and
group), on the models `benchmarks/latency.py` made: each PEG recipe there is emitted again with `fuse=False`, and
both forms are timed with minmax in alternating rounds (ORT CPU, batch 1 and 8, sequence 128).

    python benchmarks/latency.py --suite base --quick   # once, to make runs/latency/base
    python benchmarks/qkv_fusion.py                     # ≈ 4 min on 2 cores

The two forms compute the same values (tests/test_calibration.py checks it); only the kernel count differs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import ROOT
from latency import bench


def unfused(work: Path, name: str) -> Path:
    """`name`'s recipe emitted again with one split GEMM per linear (the form before side-by-side emission)."""
    import onnx

    from qbert.calibration.emit import emit
    from qbert.calibration.recipe import Recipe

    out = work / f"{name}-unfused.onnx"
    if not out.exists():
        model = onnx.load(str(work / "fp32.onnx"))
        q, _ = emit(model, Recipe.load(work / f"{name}.onnx.recipe.json"), "ort-cpu", fuse=False, copy=False)
        onnx.save(q, str(out), save_as_external_data=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "latency" / "base")
    ap.add_argument("--batch", type=lambda v: [int(x) for x in v.split(",")], default=[1, 8])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    from qbert.machine import machine

    facts = machine()
    print(f"CPU: {facts['cpu']}, {facts['logical_cores']} logical cores; ORT INT8 path: {facts['ort_int8_path']}")
    paths = {"minmax": args.work / "minmax.onnx", "minmax, full": args.work / "minmax-full.onnx"}
    for name, label in (("PEG-auto", "PEG auto"), ("PEG-auto-full", "PEG auto, full"), ("PEG-K4", "PEG K=4")):
        if (args.work / f"{name}.onnx").exists():
            paths[f"{label}: Q/K/V side by side"] = args.work / f"{name}.onnx"
            paths[f"{label}: one split GEMM per linear"] = unfused(args.work, name)
    p50 = bench(paths, args.batch, args.iters, 10, rounds=args.rounds)
    print("\n| model | " + " | ".join(f"p50 b={b} ms | × minmax b={b}" for b in args.batch) + " |\n|---|"
          + "---|---|" * len(args.batch))
    for label, ms in p50.items():
        print(f"| {label} | " + " | ".join(f"{ms[b]:.2f} | {p50['minmax'][b] / ms[b]:.2f}×" for b in args.batch) + " |")


if __name__ == "__main__":
    main()
