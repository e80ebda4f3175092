"""Where the time goes on OpenVINO: its CPU plugin's own per-layer performance counters, summed per executed
layer type and kernel — the table ONNX Runtime's profiler gives for ort-cpu (engines/onnxruntime.py op_profile).

The counters are read from the compiled model that actually ran, so they name what OpenVINO made of the graph:
an INT8 `FullyConnected` on a `brgemm_avx512_I8` kernel, a fused attention block as one `Subgraph`, a
FakeQuantize it could not absorb. Two graphs whose census is the same can still spend their time differently
(an output transpose left outside the fused attention, a quantize step on its own rather than fused into the
preceding elementwise op); this is where that shows.
"""
from __future__ import annotations

import collections
import functools
import time

import numpy as np

from qbert.engines.openvino import GEMM_LAYERS
from qbert.errors import QbertError
from qbert.ov_session import compile_path, openvino, reason
from qbert.timing import interleaved


def layer_profile(paths: list[str], feeds: dict[str, np.ndarray], iters: int = 20, warmup: int = 3,
                  threads: int | None = None, precision: str = "f32", rounds: int = 5) -> list[dict[str, float]]:
    """Per model: milliseconds per run by "<layer type> (<kernel>)" over the layers OpenVINO executed, plus
    "(kernels)" (their sum), "(gemm)" (FullyConnected / MatMul / Gemm layers; a fused attention block is its own
    `Subgraph` row) and "(whole run)" (wall time of an inference with counters on). Several models run in
    alternating rounds (the shared timer's turns, with its pause and rotation) so that a shared machine's drift
    hits all alike."""
    executed = openvino().ProfilingInfo.Status.EXECUTED
    requests = []
    for path in paths:
        compiled = compile_path(path, threads, precision, counters=True)
        names = {i.get_any_name() for i in compiled.inputs}
        request = compiled.create_infer_request()
        own = {k: v for k, v in feeds.items() if k in names}
        try:
            for _ in range(warmup):
                request.infer(own)
        except Exception as e:  # noqa: BLE001 - OpenVINO's errors carry C++ traces: one line
            raise QbertError(f"OpenVINO failed running {path}: {reason(e)}") from None
        requests.append((request, own))
    per_model: list[dict[str, float]] = [collections.defaultdict(float) for _ in paths]

    def turn(i: int) -> np.ndarray:
        """One model's turn: each run's wall time, and its layers' counters added up after each run."""
        request, own = requests[i]
        counters = per_model[i]
        ms = np.empty(max(1, iters // rounds))
        for j in range(ms.size):
            start = time.perf_counter()
            request.infer(own)
            ms[j] = (time.perf_counter() - start) * 1e3
            for layer in request.profiling_info:  # the counters of the inference just run
                if layer.status == executed:
                    counters[f"{layer.node_type} ({layer.exec_type})"] += layer.real_time.total_seconds() * 1e3
        counters["(whole run)"] += float(ms.sum())
        return ms

    samples = interleaved({i: functools.partial(turn, i) for i in range(len(paths))}, rounds)  # pause, rotation
    results = []
    for ops, runs in zip(per_model, samples.values()):
        n = sum(len(r) for r in runs)
        ms = {k: v / n for k, v in ops.items()}
        layers = {k: v for k, v in ms.items() if not k.startswith("(")}
        ms["(kernels)"] = sum(layers.values())
        ms["(gemm)"] = sum(v for k, v in layers.items() if k.split(" (")[0] in GEMM_LAYERS)
        results.append(ms)
    return results
