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
from typing import Any

import numpy as np

from qbert.engines.openvino import GEMM_LAYERS
from qbert.errors import QbertError
from qbert.ov_session import compile_path, openvino, reason
from qbert.timing import interleaved, wall_ms


def layer_profile(paths: list[str], feeds: dict[str, np.ndarray], iters: int = 20, warmup: int = 3,
                  threads: int | None = None, precision: str = "f32", rounds: int = 5) -> list[dict[str, float]]:
    """Per model: milliseconds per run by "<layer type> (<kernel>)" over the layers OpenVINO executed, plus
    "(kernels)" (their sum), "(gemm)" (FullyConnected / MatMul / Gemm layers; a fused attention block is its own
    `Subgraph` row) and "(whole run)" (wall time of an inference with counters on). Several models run in
    alternating rounds (the shared timer's turns, with its pause and shuffled order) so that a shared machine's
    drift hits all alike. At least one warm-up run, always: the first inference of a dynamic-shape model also
    prepares its kernels.

    OpenVINO's counters are each layer's mean since the model was compiled (whole microseconds), not the last
    run's, so they are read twice — after the warm-up and at the end — and the timed runs' mean is what the
    difference of the two totals leaves."""
    warmup = max(1, warmup)
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
        requests.append((request, own, _means(request)))
    n = max(1, iters // rounds)
    samples = interleaved({i: functools.partial(wall_ms, functools.partial(request.infer, own), n)
                           for i, (request, own, _) in enumerate(requests)}, rounds)
    results = []
    for (request, _, before), runs in zip(requests, samples.values()):
        timed = sum(len(r) for r in runs)
        ms: dict[str, float] = collections.defaultdict(float)
        for layer, (key, mean) in _means(request).items():
            ms[key] += (mean * (warmup + timed) - before.get(layer, (key, 0.0))[1] * warmup) / timed
        ms["(kernels)"] = sum(ms.values())
        ms["(gemm)"] = sum(v for k, v in ms.items() if k.split(" (")[0] in GEMM_LAYERS)
        ms["(whole run)"] = float(np.concatenate(runs).mean())
        results.append(dict(ms))
    return results


def _means(request: Any) -> dict[str, tuple[str, float]]:
    """Executed layer → ("<layer type> (<kernel>)", its mean ms per run so far)."""
    executed = openvino().ProfilingInfo.Status.EXECUTED
    return {layer.node_name: (f"{layer.node_type} ({layer.exec_type})", layer.real_time.total_seconds() * 1e3)
            for layer in request.profiling_info if layer.status == executed}
