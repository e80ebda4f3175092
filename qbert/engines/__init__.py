"""Inference engines behind one small interface (see base.py); heavy runtimes import lazily."""
from __future__ import annotations

from qbert.engines.base import Engine
from qbert.errors import QbertError

ENGINE_KINDS = ("ort-cpu", "tensorrt", "torch")


def check_exact(kind: str, exact: bool) -> None:
    """`exact` (non-saturating x86 INT8) is an ONNX Runtime CPU setting: refuse it for any other engine."""
    if exact and kind != "ort-cpu":
        raise QbertError(f"--exact selects ONNX Runtime's x86 INT8 kernels; it does not apply to --engine {kind}")


def open_engine(kind: str, path: str, threads: int | None = None, exact: bool = False) -> Engine:
    """Open an engine by kind: `ort-cpu` and `tensorrt` take a model/plan path, `torch` an HF model. Use it as a
    context manager. `threads` applies to the CPU engines, `exact` (non-saturating x86 INT8) to ort-cpu only."""
    check_exact(kind, exact)
    if kind == "ort-cpu":
        from qbert.engines.onnxruntime import OrtCpuEngine

        return OrtCpuEngine(path, threads=threads, exact=exact)
    if kind == "torch":
        from qbert.engines.torch import TorchEngine

        return TorchEngine(path, threads=threads)
    if kind == "tensorrt":
        from qbert.engines.tensorrt import TensorRTEngine

        return TensorRTEngine(path)
    raise QbertError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
