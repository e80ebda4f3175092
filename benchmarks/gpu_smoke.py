"""The whole GPU path on your card, in one command: export the shared fixture, calibrate on tune.tsv, build
FP16 and INT8 (minmax `trt` placement, PEG K=4) TensorRT plans for the GPU in hand, check that TensorRT predicts
what ONNX Runtime CPU predicts on eval.tsv, time batch 1/8/32 at sequence 128 (CUDA events, with and without
CUDA-graph replay) and read the engine's INT8 census. Prints one table and writes table.json.

    pip install -e '.[gpu,trt]'        # or '.[gpu,rtx]' on a GeForce/RTX card (SM75-SM121)
    python benchmarks/gpu_smoke.py --out runs/gpu_smoke

Exits 2 with one line where there is no GPU, no TensorRT, or a TensorRT that cannot serve this GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SETTINGS = [  # (name, recipe flags or None for plain FP16)
    ("FP16 (no INT8)", None),
    ("INT8 minmax, gemm placement", dict(method="minmax", placement="gemm")),
    ("INT8 PEG K=4 permuted, gemm placement", dict(method="peg", placement="gemm", groups=4)),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_smoke")
    ap.add_argument("--model", default=str(SHARED / "fixtures" / "minilm-l6-qnli"))
    ap.add_argument("--eval-data", default=str(SHARED / "data" / "qnli" / "eval.tsv"))
    ap.add_argument("--calib-data", default=str(SHARED / "data" / "qnli" / "tune.tsv"))
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from qbert.errors import QbertError

    try:
        rows = run(args)
    except QbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("| setting | plan | agrees with ORT-CPU | p50 b=1 / 8 / 32 ms | with CUDA graph | INT8 share of GEMM MACs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lat = " / ".join(f"{r['latency'][b]['p50_ms']:.2f}" for b in ("1", "8", "32"))
        graph = " / ".join(f"{r['latency_cuda_graph'][b]['p50_ms']:.2f}" for b in ("1", "8", "32"))
        print(f"| {r['name']} | {r['plan']['target']} {r['plan']['backend']} {r['plan']['version']} | "
              f"{100 * r['agreement']:.2f}% | {lat} | {graph} | {100 * r['census']['integer_mac_share']:.1f}% |")
    print(f"\nGPU: {rows[0]['gpu']}; results in {args.out}/table.json")
    return 0


def run(args: argparse.Namespace) -> list[dict]:
    from dataclasses import replace

    import numpy as np
    import onnx

    from qbert.artifacts import load_meta
    from qbert.atomic import ensure_dir, save_onnx, sha256_onnx, write_json
    from qbert.calibration.calibrate import calibrate
    from qbert.calibration.config import CalibrationConfig
    from qbert.calibration.emit import emit
    from qbert.calibration.recipe import Recipe
    from qbert.engines import open_engine
    from qbert.engines.tensorrt import build
    from qbert.eval.accuracy import evaluate
    from qbert.data import time_engine
    from qbert.encoding import random_feeds
    from qbert.data import load_dataset_spec
    from qbert.exporter.export import export
    from qbert.exporter.hf import load_tokenizer
    from qbert.reproduction import check_gpu_ready

    check_gpu_ready()  # before any work: a GPU and a TensorRT that serves it
    out = ensure_dir(args.out)
    fp32 = out / "fp32.onnx"
    if not fp32.is_file():
        export(args.model, fp32)
    meta, model = load_meta(fp32), onnx.load(str(fp32))
    tokenizer = load_tokenizer(meta.tokenizer)
    eval_ds = load_dataset_spec(args.eval_data, meta.label2id)
    seq = min(128, meta.max_length)
    rows = []
    for name, flags in SETTINGS:
        recipe = (Recipe(method="none", placement="gemm", sites={}) if flags is None else
                  calibrate(fp32, meta, model, CalibrationConfig(data=args.calib_data, **flags)))
        stem = name.split(",")[0].replace(" ", "_").replace("=", "")
        paths = {}
        for target in ("ort-cpu", "trt"):
            q, _ = emit(model, recipe, target, "fp16" if flags is None and target == "trt" else None)
            paths[target] = out / f"{stem}.{target}.onnx"
            save_onnx(q, paths[target])
            replace(meta, kind="qdq", sha256=sha256_onnx(paths[target])).write(paths[target])
        plan = build(paths["trt"], out / f"{stem}.plan", shapes=f"1x1/8x{seq}/32x{seq}").to_json()
        with_ort = open_engine("ort-cpu", str(paths["ort-cpu"]))
        try:
            ref = evaluate(with_ort, eval_ds, tokenizer, max_length=seq)
        finally:
            with_ort.close()
        eng = open_engine("tensorrt", str(out / f"{stem}.plan"))
        try:
            res = evaluate(eng, eval_ds, tokenizer, max_length=seq)  # the plan's longest shape
            feeds = {b: random_feeds(b, seq, meta.vocab_size) for b in (1, 8, 32)}
            row = {"name": name, "plan": plan, "gpu": eng.describe()["gpu"],
                   "accuracy": res["accuracy"], "ort_cpu_accuracy": ref["accuracy"],
                   "agreement": float(np.mean(np.array(res["predictions"]) == np.array(ref["predictions"]))),
                   "latency": {str(b): time_engine(eng, f, 20, args.iters) for b, f in feeds.items()},
                   "latency_cuda_graph": {str(b): time_engine(eng, f, 20, args.iters, cuda_graph=True)
                                          for b, f in feeds.items()},
                   "device_memory_bytes": eng.describe()["device_memory_bytes"], "census": eng.census(1, seq)}
        finally:
            eng.close()
        rows.append(row)
        write_json(out / "table.json", rows)
    return rows


if __name__ == "__main__":
    sys.exit(main())
