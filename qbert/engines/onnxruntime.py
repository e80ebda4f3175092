"""ONNX Runtime on the CPU: the embedded default engine, and a census of which GEMMs run on integer kernels."""
from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from qbert.engines.base import Engine
from qbert.errors import QbertError

INTEGER_GEMMS = ("QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul",
                 "QAttention")
FLOAT_GEMMS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm")


def session_options(threads: int | None = None, optimized_path: str | None = None, exact: bool = False) -> Any:
    """ORT's x86 U8S8/S8S8 kernels use VPMADDUBSW, whose 16-bit pair sums can saturate; `exact` selects the
    slower non-saturating path (measured on the tiny test BERT: 20,000× closer to exact fake-quant)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if exact:
        so.add_session_config_entry("session.x64quantprecision", "1")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return so


def session_for(model: Any, so: Any) -> Any:
    """An ORT CPU session for an in-memory model; models past protobuf's 2 GB go through external data."""
    import onnxruntime as ort

    from qbert.atomic import _proto_size, external_data_threshold, save_onnx

    if _proto_size(model) <= external_data_threshold():
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="qbert-ort-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(model, path)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OrtCpuEngine(Engine):
    name = "ort-cpu"

    def __init__(self, path: str, threads: int | None = None, exact: bool = False, **_: Any):
        import onnxruntime as ort

        from qbert.artifacts import load_onnx

        load_onnx(path)  # readable errors for missing/corrupt files
        self.path, self.threads, self.exact = str(path), threads, exact
        try:
            self.session = ort.InferenceSession(self.path, session_options(threads, exact=exact),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise QbertError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        self.input_names = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(["logits"], {k: v for k, v in feeds.items() if k in self.input_names})[0]
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"engine": self.name, "onnxruntime": ort.__version__, "model": self.path,
                "threads": self.threads or os.cpu_count(), "high_precision": "fp32",
                "int8_kernels": "exact (x64quantprecision)" if self.exact else "fast (VPMADDUBSW, may saturate)"}

    def census(self) -> dict[str, Any]:
        return ort_census(self.path, self.threads)


def ort_census(path: str, threads: int | None = None) -> dict[str, Any]:
    """Load with all graph optimizations, save the optimized graph, and count integer vs float GEMMs.

    This is the proof that Q/DQ became real integer kernels: a MatMul left between DQ and Q nodes is
    fake quantization and shows up here as a float GEMM.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(path, session_options(threads, opt), providers=["CPUExecutionProvider"])
        model = onnx.load(opt)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    inits = {t.name for t in model.graph.initializer}
    integer = {k: v for k, v in ops.items() if k in INTEGER_GEMMS}
    floats = [n for n in model.graph.node if n.op_type in FLOAT_GEMMS]
    weight_gemms = sum(1 for n in floats if len(n.input) > 1 and n.input[1] in inits)
    return {
        "integer_gemms": sum(integer.values()),
        "integer_ops": integer,
        "float_gemms": len(floats),
        "float_weight_gemms": weight_gemms,
        "float_activation_gemms": len(floats) - weight_gemms,
        "quantize_nodes": ops.get("QuantizeLinear", 0) + ops.get("DynamicQuantizeLinear", 0),
        "dequantize_nodes": ops.get("DequantizeLinear", 0),
    }
