"""ONNX Runtime on the CPU: the embedded default engine, a census of which GEMMs run on integer kernels,
and a per-operator time profile."""
from __future__ import annotations

import collections
import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from qbert.engines.base import Engine, check_feeds, longest_sequence, census_shape
from qbert.ort_session import session_for, session_from_path, session_options  # noqa: F401 - the engine's own options
from qbert.progress import warn
from qbert.errors import QbertError
from qbert.machine import kernel_mode, machine
from qbert.timing import interleaved, wall_ms

INTEGER_GEMMS = ("QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul",
                 "QAttention")
FLOAT_GEMMS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm")


class OrtCpuEngine(Engine):
    name = "ort-cpu"

    def __init__(self, path: str, threads: int | None = None, exact: bool = False):

        from qbert.artifacts import load_onnx

        load_onnx(path)  # readable errors for missing/corrupt files
        self.path, self.threads, self.exact = str(path), threads, exact
        cores = os.cpu_count() or 1
        if threads and threads > cores:  # ONNX Runtime honours it: more threads than cores contend for them
            warn(f"{threads} threads on {cores} cores: ONNX Runtime runs them all, and they contend for the cores "
                 "(timings suffer); the result records the count asked")

    def activate(self) -> None:
        try:
            self.session = session_from_path(self.path, session_options(self.threads, exact=self.exact), self.exact)
        except Exception as e:
            raise QbertError(f"ONNX Runtime cannot load {self.path}: {str(e).splitlines()[0][:300]}") from None
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output = self.session.get_outputs()[0].name  # logits, or an embedding model's embeddings

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds)
        self.active()
        try:
            out = self.session.run([self.output], {k: v for k, v in feeds.items() if k in self.input_names})[0]
        except Exception as e:  # ORT's own errors (a shape its graph cannot take, a hand-edited file): one line
            shape = "x".join(map(str, feeds["input_ids"].shape))
            raise QbertError(f"ONNX Runtime failed running {self.path} on a {shape} batch: "
                             f"{str(e).splitlines()[0][:300]}") from None
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"engine": self.name, "onnxruntime": ort.__version__, "model": self.path,
                "threads": self.threads or os.cpu_count(), "high_precision": "fp32",
                "int8_kernels": kernel_mode(self.exact), "machine": machine()}

    def census(self, batch: int = 1, seq: int | None = None) -> dict[str, Any]:
        return ort_census(self.path, self.threads, batch, seq)


def gemm_macs(attrs: dict[str, int], shapes: list[list[int]], out_shape: list[int]) -> int:
    """Multiply-accumulates of one GEMM from the shapes it ran with: output elements × inner dimension of A,
    which is input 0 in every GEMM kind ORT has."""
    a = shapes[0]
    k = a[-2] if attrs.get("transA") else a[-1]
    return int(np.prod(out_shape, dtype=np.int64)) * int(k)


def _profile_events(session: Any) -> list[dict[str, Any]]:
    """End a profiling session and return its events (the file lives in the caller's temporary folder)."""
    import json

    return json.loads(Path(session.end_profiling()).read_text())


def _kernel_events(events: list[dict[str, Any]], since: int = 0) -> Iterator[dict[str, Any]]:
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= since:
            yield e


def _profiled_shapes(session: Any, batch: int, seq: int) -> dict[str, tuple[list[list[int]], list[int]]]:
    """Input and output shapes of every node from one profiled run — fused contrib ops included, which
    ONNX shape inference cannot see."""
    from qbert.encoding import random_feeds

    names = {i.name for i in session.get_inputs()}
    session.run(None, {k: v for k, v in random_feeds(batch, seq, 10).items() if k in names})  # ids < any vocab
    shapes = {}
    for e in _kernel_events(_profile_events(session)):
        args = e["args"]
        if "input_type_shape" in args:
            ins = [next(iter(d.values())) for d in args["input_type_shape"]]
            outs = [next(iter(d.values())) for d in args.get("output_type_shape", [])]
            shapes[e["name"][: -len("_kernel_time")]] = (ins, outs[0] if outs else [])
    return shapes


def op_profile(paths: list[str], feeds: dict[str, np.ndarray], iters: int = 20, warmup: int = 3,
               threads: int | None = None, rounds: int = 5, exact: bool = False) -> list[dict[str, float]]:
    """Where the time goes, by ORT's own profiler: per model, kernel milliseconds per run by operator type,
    plus "(kernels)" (their sum), "(gemm)" (float and integer GEMMs) and "(whole run)" (wall time under the
    profiler, which adds overhead between kernels). Several models run in alternating rounds so that a
    shared machine's drift hits all alike."""

    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        for i, path in enumerate(paths):
            so = session_options(threads, exact=exact)
            so.enable_profiling, so.profile_file_prefix = True, os.path.join(tmp, f"p{i}")
            s = session_from_path(path, so, exact)
            names = {x.name for x in s.get_inputs()}
            sessions.append((s, {k: v for k, v in feeds.items() if k in names}))
            for _ in range(warmup):
                s.run(None, sessions[-1][1])
        # the shared timer's turns (qbert/timing.py): its pause and shuffled rounds keep one session's spinning
        # threads out of the next one's profile; the times themselves come from the profiler
        interleaved({i: functools.partial(wall_ms, functools.partial(s.run, None, f), max(1, iters // rounds))
                     for i, (s, f) in enumerate(sessions)}, rounds)
        results = []
        for s, _ in sessions:
            events = _profile_events(s)
            runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][warmup:]
            n = max(len(runs), 1)
            per_op: dict[str, float] = collections.defaultdict(float)
            for e in _kernel_events(events, runs[0]["ts"] if runs else 0):
                per_op[e["args"]["op_name"]] += e["dur"] / 1000 / n
            per_op["(kernels)"] = sum(per_op.values())
            per_op["(gemm)"] = sum(v for k, v in per_op.items() if k in INTEGER_GEMMS + FLOAT_GEMMS)
            per_op["(whole run)"] = sum(r["dur"] for r in runs) / 1000 / n
            results.append(dict(per_op))
    return results


def _positions(model: Any, path: str) -> int:
    """The longest sequence the model embeds: its position table's rows (base.longest_sequence)."""
    return longest_sequence(next((int(t.dims[0]) for t in model.graph.initializer
                                  if "position_embeddings" in t.name and len(t.dims) == 2), None), path)


def _short_of_space(path: str, folder: str) -> str | None:
    """Why the census could not run, when the temporary folder lacks room for the optimized copy of `path`."""
    import shutil

    free = shutil.disk_usage(folder).free
    if free >= 2 * os.path.getsize(path) + 64 * 2**20:
        return None
    return (f"no space for ONNX Runtime's optimized copy of {path} (the census reads it): {free // 2**20} MiB free "
            f"in {Path(folder).parent}; free some space, or set TMPDIR to a folder with room")


def ort_census(path: str, threads: int | None = None, batch: int = 1, seq: int | None = None) -> dict[str, Any]:
    """Load with all graph optimizations, save the optimized graph, and count integer vs float GEMMs — and,
    from one profiled run at `batch`×`seq`, the share of GEMM multiply-accumulates on integer kernels.

    This is the proof that Q/DQ became real integer kernels: a MatMul left between DQ and Q nodes is
    fake quantization and shows up here as a float GEMM.
    """
    import onnx

    census_shape(batch, seq)  # before loading: a bad shape is the caller's, named as bench names it
    with tempfile.TemporaryDirectory() as tmp:
        opt = str(Path(tmp) / "optimized.onnx")
        so = session_options(threads, opt)
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "profile")
        try:
            session = session_from_path(path, so)
        except Exception:  # ORT reports a failed write of its optimized graph as "Protobuf serialization failed"
            short = _short_of_space(path, tmp)
            if short:
                raise QbertError(short) from None
            raise
        model = onnx.load(opt)
        batch, seq = census_shape(batch, seq, _positions(model, path))  # no longer than the model can embed
        shapes = _profiled_shapes(session, batch, seq)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    inits = {t.name for t in model.graph.initializer}
    integer = {k: v for k, v in ops.items() if k in INTEGER_GEMMS}
    floats = [n for n in model.graph.node if n.op_type in FLOAT_GEMMS]
    weight_gemms = sum(1 for n in floats if len(n.input) > 1 and n.input[1] in inits)
    macs = {"integer": 0, "float": 0}
    for n in model.graph.node:
        if n.op_type in INTEGER_GEMMS + FLOAT_GEMMS and n.name in shapes:
            attrs = {a.name: a.i for a in n.attribute if a.type == onnx.AttributeProto.INT}
            macs["integer" if n.op_type in INTEGER_GEMMS else "float"] += gemm_macs(attrs, *shapes[n.name])
    total = sum(macs.values())
    return {
        "integer_gemms": sum(integer.values()),
        "integer_ops": integer,
        "float_gemms": len(floats),
        "float_weight_gemms": weight_gemms,
        "float_activation_gemms": len(floats) - weight_gemms,
        "quantize_nodes": ops.get("QuantizeLinear", 0) + ops.get("DynamicQuantizeLinear", 0),
        "dequantize_nodes": ops.get("DequantizeLinear", 0),
        "gemm_macs": {**macs, "shape": [batch, seq]},
        "integer_mac_share": macs["integer"] / total if total else 0.0,
    }
