"""Peak RSS of `qbert calibrate` on 1,000 sequences of a bert-base-shaped model (12×768, planted outliers).

    python benchmarks/calibration_memory.py            # target: peak RSS < 2 GB for every method

Streaming observers keep only per-tensor statistics; ONNX Runtime's calibrators keep every activation.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from common import QBERT, ROOT, TUNE, bert_base_like, qbert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-base")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--methods", default="minmax,percentile,peg")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = bert_base_like(args.work / "bert-base-like")
    fp32 = args.work / "fp32.onnx"
    if not fp32.exists():
        qbert("export", "--model", model, "--out", fp32)
    print(f"{'method':12s} {'samples':>8s} {'peak RSS MB':>12s} {'seconds':>8s}")
    for method in args.methods.split(","):
        t0 = time.time()
        cmd = [*QBERT, "calibrate", "--onnx", str(fp32), "--data", str(TUNE), "--samples", str(args.samples),
               "--method", method, "--placement", "full", "--out", str(args.work / f"calib-{method}.onnx")]
        # each run in a fresh child: RUSAGE_CHILDREN's maxrss is the largest child so far, so run a
        # python wrapper per method to read that child's own peak
        wrapper = ("import resource,subprocess,sys;subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL);"
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        out = subprocess.run([QBERT[0], "-c", wrapper, *cmd], check=True, capture_output=True, text=True)
        peak_mb = int(out.stdout.strip().splitlines()[-1]) / 1024
        print(f"{method:12s} {args.samples:8d} {peak_mb:12.0f} {time.time() - t0:8.0f}  "
              f"{'OK (< 2048 MB)' if peak_mb < 2048 else 'OVER 2 GB'}", flush=True)


if __name__ == "__main__":
    main()
