"""Accuracy table on the shared fixture: every calibration method/placement, calibrated on tune.tsv and
evaluated on all of eval.tsv with ONNX Runtime CPU (`--target ort-cpu`: U8 activations, FP32 elsewhere).

    python benchmarks/fixture_accuracy.py --out runs/accuracy   # ≈ 10 min on 2 cores

Writes runs/accuracy/table.md and table.json; each row is the output of `qbert calibrate` + `qbert eval`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ROWS = [  # (name, calibrate flags)
    ("minmax, placement full (naive W8A8)", "--method minmax --placement full"),
    ("minmax, placement gemm", "--method minmax --placement gemm"),
    ("percentile 99.9, full", "--method percentile --percentile 99.9 --placement full"),
    ("percentile 99.99, full", "--method percentile --percentile 99.99 --placement full"),
    ("percentile 99.999, full", "--method percentile --percentile 99.999 --placement full"),
    ("entropy, full", "--method entropy --placement full"),
    ("mse, full", "--method mse --placement full"),
    ("mse, gemm", "--method mse --placement gemm"),
    *[(f"PEG K={k}{' permuted' if p else ''}, full", f"--method peg --groups {k} --placement full"
       + ("" if p else " --no-permute")) for k in (2, 3, 4, 6) for p in (True, False)],
    ("PEG K=4 permuted, gemm", "--method peg --groups 4 --placement gemm"),
    ("mixed precision: x/h/y high precision, rest minmax full", "--method minmax --placement full "
     "--fp16-fallback x,h,y"),
]


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "accuracy")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    ap.add_argument("--only", default=None, help="comma-separated substrings: rerun only matching settings and "
                    "reuse the saved results of the others")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(HF_HUB_OFFLINE="1", QBERT_QUIET="1")
    q = f"{sys.executable} -m qbert.cli"
    fp32 = args.out / "fp32.onnx"
    limit = f"--limit {args.limit}" if args.limit else ""
    if not fp32.exists():
        sh(f"{q} export --model {SHARED}/fixtures/minilm-l6-qnli --out {fp32}")
    evaluate = f"{q} eval --data {SHARED}/data/qnli/eval.tsv {limit} --onnx"
    results = []
    sh(f"{evaluate} {fp32} --json {args.out}/fp32.json")
    results.append(("FP32", json.loads((args.out / "fp32.json").read_text()), None))
    only = [o.strip() for o in args.only.split(",")] if args.only else None
    for i, (name, flags) in enumerate(ROWS):
        saved = args.out / f"row{i}.json"
        if only and not any(o in name for o in only) and saved.exists():
            results.append((name, json.loads(saved.read_text()), flags))
            continue
        t0 = time.time()
        onnx = args.out / f"row{i}.onnx"
        sh(f"{q} calibrate --onnx {fp32} --data {SHARED}/data/qnli/tune.tsv --samples {args.samples} "
           f"--target ort-cpu {flags} --out {onnx}")
        sh(f"{evaluate} {onnx} --json {args.out}/row{i}.json")
        res = json.loads((args.out / f"row{i}.json").read_text())
        results.append((name, res, flags))
        print(f"{name:55s} {res['accuracy']:.4f}  ({time.time() - t0:.0f}s)", flush=True)
    fp_preds = results[0][1]["predictions"]
    lines = ["| setting | accuracy | agreement with FP32 | quantized GEMMs | flags |", "|---|---|---|---|---|"]
    table = []
    for name, res, flags in results:
        agree = sum(a == b for a, b in zip(res["predictions"], fp_preds)) / len(fp_preds)
        gemms = (res.get("quantization") or {}).get("quantized_gemms", 0)
        lines.append(f"| {name} | {100 * res['accuracy']:.2f}% | {100 * agree:.1f}% | {gemms} | `{flags or ''}` |")
        table.append({"setting": name, "accuracy": res["accuracy"], "agreement": agree, "flags": flags,
                      "quantized_gemms": gemms, "examples": res["examples"]})
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "table.json").write_text(json.dumps(table, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
