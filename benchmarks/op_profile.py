"""Where the time goes: ONNX Runtime's own profiler, per operator type, for each model given.

    python benchmarks/op_profile.py runs/latency/base/fp32-opt.onnx runs/latency/base/minmax.onnx

Runs each model `--iters` times at batch `--batch` × seq `--seq` on random ids after warm-up — the models in
alternating rounds, so the machine's drift hits all alike — and prints the mean milliseconds per run that each
operator type spent in its kernels, side by side.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path


def profile_many(paths: list[Path], batch: int = 1, seq: int = 128, iters: int = 20, warmup: int = 3,
                 threads: int | None = None, rounds: int = 5) -> list[dict[str, float]]:
    """Per model: kernel milliseconds per run by operator type, plus "(kernels)" (their sum) and
    "(whole run)" (wall time of a run under the profiler, which adds overhead between kernels)."""
    import onnxruntime as ort

    from qbert.engines.onnxruntime import session_options
    from qbert.eval.bench import random_feeds

    with tempfile.TemporaryDirectory() as tmp:
        sessions, feeds = [], []
        for i, path in enumerate(paths):
            so = session_options(threads)
            so.enable_profiling, so.profile_file_prefix = True, os.path.join(tmp, f"p{i}")
            s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            names = {x.name for x in s.get_inputs()}
            feeds.append({k: v for k, v in random_feeds(batch, seq, 30522).items() if k in names})
            for _ in range(warmup):
                s.run(None, feeds[-1])
            sessions.append(s)
        per_round = max(1, iters // rounds)
        for _ in range(rounds):
            for s, f in zip(sessions, feeds):
                for _ in range(per_round):
                    s.run(None, f)
        results = []
        for s in sessions:
            events = json.loads(Path(s.end_profiling()).read_text())
            runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][warmup:]
            start = runs[0]["ts"] if runs else 0
            n = max(len(runs), 1)
            per_op: dict[str, float] = collections.defaultdict(float)
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
                    per_op[e["args"]["op_name"]] += e["dur"] / 1000 / n
            per_op["(kernels)"] = sum(per_op.values())
            per_op["(whole run)"] = sum(r["dur"] for r in runs) / 1000 / n
            results.append(dict(per_op))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    cols = dict(zip((m.name for m in args.models),
                    profile_many(args.models, args.batch, args.seq, args.iters, args.warmup, args.threads)))
    ops = sorted({o for c in cols.values() for o in c}, key=lambda o: -max(c.get(o, 0) for c in cols.values()))
    print("| op | " + " | ".join(f"{n} ms" for n in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for o in ops:
        print(f"| {o} | " + " | ".join(f"{c.get(o, 0):.1f}" for c in cols.values()) + " |")


if __name__ == "__main__":
    main()
