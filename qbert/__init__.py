"""qbert: real INT8 quantization of BERT-family encoders for TensorRT and ONNX Runtime.

The library API (the `qbert` command only wraps it): export → calibrate (a `CalibrationConfig`, giving a
`Recipe`) → quantize (Q/DQ ONNX + recipe + sidecar in one call) → build (TensorRT plan) → open_engine /
evaluate / bench → analyze / reproduce. Names load lazily, so `import qbert` pulls in neither torch nor
ONNX Runtime nor TensorRT until a function needs them. See `qbert.api` for each function's documentation.
"""
from __future__ import annotations

from typing import Any

from qbert._version import __version__

__all__ = ["CalibrationConfig", "ConfigError", "Dataset", "QbertError", "Recipe", "__version__", "analyze", "bench",
           "build", "calibrate", "evaluate", "export", "load_data", "open_engine", "quantize", "reproduce"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from qbert import api

        return getattr(api, name)
    raise AttributeError(f"module 'qbert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
