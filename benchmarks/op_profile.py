"""Where the time goes: ONNX Runtime's own profiler, per operator type, for each model given.

    python benchmarks/op_profile.py runs/latency/base/fp32-opt.onnx runs/latency/base/minmax.onnx

Runs each model `--iters` times at batch `--batch` × seq `--seq` on random ids after warm-up — the models in
alternating rounds, so the machine's drift hits all alike — and prints the mean milliseconds per run that each
operator type spent in its kernels, side by side (`qbert bench --profile` does the same for one model).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from qbert.engines.onnxruntime import op_profile
    from qbert.encoding import random_feeds

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    profiles = op_profile([str(m) for m in args.models], random_feeds(args.batch, args.seq, 30522), args.iters,
                          args.warmup, args.threads)
    cols = dict(zip((m.name for m in args.models), profiles))
    ops = sorted({o for c in cols.values() for o in c}, key=lambda o: -max(c.get(o, 0) for c in cols.values()))
    print("| op | " + " | ".join(f"{n} ms" for n in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for o in ops:
        print(f"| {o} | " + " | ".join(f"{c.get(o, 0):.1f}" for c in cols.values()) + " |")


if __name__ == "__main__":
    main()
