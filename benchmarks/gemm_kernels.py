"""The ceiling on INT8 speed-up in ONNX Runtime on this CPU: one GEMM, FP32 vs the Q/DQ pattern qbert emits for
`--target ort-cpu` (U8 activation per-tensor, S8 weight per-channel → ORT's `MatMulIntegerToFloat`).

    python benchmarks/gemm_kernels.py            # bert-base GEMM shapes, batch 1 and 8, seq 128

Both graphs of a shape are timed in alternating rounds (so clock drift hits both alike); prints p50 ms,
achieved GMAC/s and the INT8/FP32 ratio per shape, and the MAC-weighted ratio over one bert-base layer — the
most the whole model can gain from INT8 GEMMs if nothing else changed.
"""
from __future__ import annotations

import argparse
import functools

import numpy as np

LAYER = {"qkv + attn_out (768→768) ×4": (768, 768, 4), "ffn1 (768→3072)": (768, 3072, 1),
         "ffn2 (3072→768)": (3072, 768, 1)}


def gemm_model(k: int, n: int, int8: bool):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    inits, nodes = [], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])
    if not int8:
        inits.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
    else:
        ws = np.abs(w).max(axis=0) / 127
        inits += [numpy_helper.from_array(np.round(w / ws).astype(np.int8), "wq"),
                  numpy_helper.from_array(ws.astype(np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(n, np.int8), "wz"),
                  numpy_helper.from_array(np.array(4.0 / 127, np.float32), "xs"),
                  numpy_helper.from_array(np.array(128, np.uint8), "xz")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
                  helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "gemm", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def session(model, threads: int | None):
    import onnxruntime as ort

    from qbert.engines.onnxruntime import session_options

    return ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])


def timed(sessions: dict[str, object], x: np.ndarray, rounds: int, per_round: int) -> dict[str, float]:
    """p50 ms per session, the sessions timed in alternating rounds (qbert.timing)."""
    from qbert.timing import interleaved, wall_ms

    for s in sessions.values():
        s.run(None, {"x": x})
    timers = {k: functools.partial(wall_ms, functools.partial(s.run, None, {"x": x}), per_round)
              for k, s in sessions.items()}
    return {k: float(np.median(np.concatenate(runs))) for k, runs in interleaved(timers, rounds).items()}


def timing_args(description: str, per_round: int) -> argparse.Namespace:
    """The flags every micro-benchmark here takes: batch sizes, sequence, rounds × runs per round, threads."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=per_round)
    ap.add_argument("--threads", type=int)
    return ap.parse_args()


def main() -> None:
    args = timing_args(__doc__, per_round=10)
    print("| GEMM | M | FP32 ms | INT8 ms | FP32 GMAC/s | INT8 GMAC/s | INT8 speed-up |")
    print("|---|---|---|---|---|---|---|")
    for b in args.batch:
        m = b * args.seq
        x = np.random.default_rng(1).standard_normal((m, 3072)).astype(np.float32)
        total = {"fp32": 0.0, "int8": 0.0}
        for label, (k, n, count) in LAYER.items():
            sess = {"fp32": session(gemm_model(k, n, False), args.threads),
                    "int8": session(gemm_model(k, n, True), args.threads)}
            ms = timed(sess, np.ascontiguousarray(x[:, :k]), args.rounds, args.per_round)
            macs = m * k * n / 1e9
            for key in total:
                total[key] += ms[key] * count
            print(f"| {label} | {m} | {ms['fp32']:.2f} | {ms['int8']:.2f} | {macs / ms['fp32'] * 1e3:.0f} | "
                  f"{macs / ms['int8'] * 1e3:.0f} | {ms['fp32'] / ms['int8']:.2f}× |", flush=True)
        print(f"| **one layer's GEMMs** | {m} | {total['fp32']:.2f} | {total['int8']:.2f} | | | "
              f"**{total['fp32'] / total['int8']:.2f}×** |", flush=True)


if __name__ == "__main__":
    main()
