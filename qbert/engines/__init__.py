"""Inference engines behind one small interface (see base.py); heavy runtimes import lazily."""
from __future__ import annotations

from typing import Any

from qbert.engines.base import Engine
from qbert.errors import QbertError

ENGINE_KINDS = ("ort-cpu", "tensorrt", "torch")


def open_engine(kind: str, path: str, **options: Any) -> Engine:
    """Open an engine by kind: `ort-cpu` and `tensorrt` take a model/plan path, `torch` an HF model."""
    if kind == "ort-cpu":
        from qbert.engines.onnxruntime import OrtCpuEngine

        return OrtCpuEngine(path, **options)
    if kind == "torch":
        from qbert.engines.torch import TorchEngine

        return TorchEngine(path, **options)
    if kind == "tensorrt":
        from qbert.engines.tensorrt import TensorRTEngine

        return TensorRTEngine(path, **options)
    raise QbertError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
