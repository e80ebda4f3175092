"""What a PEG split costs on ONNX Runtime CPU: GEMMs of the bert-base shape as qbert emits them for
`--target ort-cpu`, per-tensor against split into K per-tensor INT8 GEMMs over channel groups.

    python benchmarks/split_gemm.py              # batch 1 and 8, seq 128; ≈ 1 min on 2 cores

Variants of one linear (each with its bias Add), timed in alternating rounds so that drift hits all alike:
- per-tensor: Q/DQ → MatMul (ORT fuses it into one MatMulIntegerToFloat), as minmax emits;
- PEG K=2: two channel groups (752 + 16: the outliers alone in 16 channels, what `--groups auto` picks on the
  bert-base shape's LayerNorm outputs) → Slice, Q/DQ and an INT8 GEMM each, partial products summed by an Add;
- PEG K=2, outlier group FP32: the same, but the 16-channel group as a float GEMM (LLM.int8()-style);
- PEG K=2, outlier group FP32 Gemm into C: the 16-channel group's Q/DQ values through an ONNX Gemm whose C input
  is the INT8 GEMM's biased output (beta 1), so the partial sum needs no separate Add;
- PEG K=4: four groups (512 + 176 + 64 + 16).
Then Q, K and V reading one grouped tensor: per-tensor (3 GEMMs), PEG K=2 with one split GEMM per linear (6 GEMMs,
3 partial-sum Adds), and PEG K=2 side by side — one GEMM per group over [W_q | W_k | W_v], one Add, one Split —
which is what qbert emits.

Prints p50 ms and each variant's speed relative to the first (1.00× = as fast). A K-way split has the same MACs
but K GEMM launches and K−1 full-size [tokens, N] partial outputs to sum; on a CPU whose INT8 GEMMs are fast
(VNNI/AMX) the 16-channel group's GEMM costs about half a full one.
"""
from __future__ import annotations

import numpy as np

from gemm_kernels import session, timed, timing_args

SPLITS = {"per-tensor": [768], "PEG K=2": [752, 16], "PEG K=2, outlier group FP32": [752, 16],
          "PEG K=2, outlier group FP32 Gemm into C": [752, 16], "PEG K=4": [512, 176, 64, 16]}
QKV = {"per-tensor": ([768], False), "PEG K=2, one split GEMM per linear": ([752, 16], False),
       "PEG K=2, side by side (qbert)": ([752, 16], True)}


def split_model(sizes: list[int], widths: list[int], fp_last: bool = False, side_by_side: bool = False,
                into_c: bool = False):
    """X[b, s, 768] · W_j + bias_j for each output width, X's channels in len(sizes) contiguous groups with their
    own Q/DQ and GEMM; `side_by_side`: the linears as one GEMM per group over [W_1 | W_2 | …], then a Split;
    `into_c`: the last group as a float Gemm accumulating into the others' biased sum (its C input)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", sum(sizes)])
    srcs, start = [], 0
    for k, size in enumerate(sizes):
        src = "x"
        if len(sizes) > 1:
            src = f"x{k}"
            nodes.append(helper.make_node("Slice", ["x", init(f"a{k}", np.array([start])),
                                                    init(f"e{k}", np.array([start + size])),
                                                    init(f"ax{k}", np.array([-1]))], [src]))
        nodes += [helper.make_node("QuantizeLinear", [src, init(f"xs{k}", np.array(0.03, np.float32)),
                                                      init(f"xz{k}", np.array(128, np.uint8))], [f"q{k}"]),
                  helper.make_node("DequantizeLinear", [f"q{k}", f"xs{k}", f"xz{k}"], [f"d{k}"])]
        srcs.append((src, f"d{k}", start, size))
        start += size
    heads = [("all", sum(widths))] if side_by_side else [(f"o{j}", n) for j, n in enumerate(widths)]
    outs = []
    for h, n in heads:
        w = rng.standard_normal((sum(sizes), n)).astype(np.float32) * 0.05
        partial = []
        for k, (raw, dq, a, size) in enumerate(srcs):
            rows, name = w[a:a + size], f"{h}.p{k}"
            if into_c and k == len(srcs) - 1:
                continue
            if fp_last and k == len(srcs) - 1:
                nodes.append(helper.make_node("MatMul", [raw, init(f"{h}.w{k}", rows)], [name]))
            else:
                ws = np.abs(rows).max(axis=0) / 127
                nodes += [helper.make_node("DequantizeLinear", [init(f"{h}.wq{k}", np.round(rows / ws).astype(np.int8)),
                                                                init(f"{h}.ws{k}", ws.astype(np.float32)),
                                                                init(f"{h}.wz{k}", np.zeros(n, np.int8))],
                                           [f"{h}.wd{k}"], axis=1),
                          helper.make_node("MatMul", [dq, f"{h}.wd{k}"], [name])]
            partial.append(name)
        acc = partial[0]
        for k, p in enumerate(partial[1:], start=1):
            nodes.append(helper.make_node("Add", [acc, p], [f"{h}.sum{k}"]))
            acc = f"{h}.sum{k}"
        nodes.append(helper.make_node("Add", [acc, init(f"{h}.bias", np.zeros(n, np.float32))],
                                      [f"{h}.yc" if into_c else f"{h}.y"]))
        if into_c:  # Gemm is 2-D: [b·s, ·] views in and out (ORT's Reshape does not copy)
            _, dq, a, size = srcs[-1]
            rows = w[a:a + size]
            ws = np.abs(rows).max(axis=0) / 127
            nodes += [helper.make_node("Reshape", [dq, init(f"{h}.ka", np.array([-1, size]))], [f"{h}.a2"]),
                      helper.make_node("Reshape", [f"{h}.yc", init(f"{h}.kc", np.array([-1, n]))], [f"{h}.c2"]),
                      helper.make_node("Gemm", [f"{h}.a2", init(f"{h}.wf", (np.round(rows / ws) * ws).astype(
                          np.float32)), f"{h}.c2"], [f"{h}.y2"], beta=1.0),
                      helper.make_node("Shape", ["x"], [f"{h}.xs"], end=2),
                      helper.make_node("Concat", [f"{h}.xs", init(f"{h}.n", np.array([n]))], [f"{h}.ys"], axis=0),
                      helper.make_node("Reshape", [f"{h}.y2", f"{h}.ys"], [f"{h}.y"])]
        outs.append(f"{h}.y")
    if side_by_side:
        outs = [f"y{j}" for j in range(len(widths))]
        nodes.append(helper.make_node("Split", ["all.y", init("widths", np.array(widths))], outs, axis=-1))
    graph = helper.make_graph(nodes, "split", [x], [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                    for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def table(title: str, variants: dict[str, object], cases: list[tuple[str, object]], args) -> None:
    """One row per case and batch: p50 ms per variant (timed in alternating rounds), then each × the first."""
    names = list(variants)
    print(f"\n{title}\n\n| GEMM | tokens | " + " | ".join(f"{k} ms" for k in names) + " | "
          + " | ".join(f"{k} × {names[0]}" for k in names[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(names) - 1))
    for b in args.batch:
        x = np.random.default_rng(1).standard_normal((b, args.seq, 768)).astype(np.float32)
        for label, make in cases:
            sessions = {k: session(make(v), args.threads) for k, v in variants.items()}
            ms = timed(sessions, x, args.rounds, args.per_round)
            print(f"| {label} | {b * args.seq} | " + " | ".join(f"{ms[k]:.3f}" for k in names) + " | "
                  + " | ".join(f"{ms[names[0]] / ms[k]:.2f}×" for k in names[1:]) + " |", flush=True)


def main() -> None:
    args = timing_args(__doc__, per_round=20)
    from qbert.machine import machine

    facts = machine()
    print(f"CPU: {facts['cpu']}, {facts['logical_cores']} logical cores; ORT INT8 path: {facts['ort_int8_path']}")
    one = [(label, lambda v, n=n: split_model(SPLITS[v], [n], fp_last="FP32" in v, into_c="into C" in v))
           for label, n in (("768→768", 768), ("768→3072 (FFN1)", 3072))]
    table("One linear", {k: k for k in SPLITS}, one, args)
    qkv = [("Q, K, V: 768→3×768", lambda v: split_model(QKV[v][0], [768] * 3, side_by_side=QKV[v][1]))]
    table("Q, K and V reading one tensor", {k: k for k in QKV}, qkv, args)


if __name__ == "__main__":
    main()
