"""Inference engines behind one small interface (see base.py); heavy runtimes import lazily."""
from __future__ import annotations

from typing import Any

from qbert.calibration.targets import TARGETS
from qbert.engines.base import Engine
from qbert.errors import ConfigError, QbertError

ENGINE_KINDS = ("ort-cpu", "openvino", "tensorrt", "torch")


def check_exact(kind: str, exact: bool, engine: str = "engine") -> None:
    """`exact` (non-saturating x86 INT8) is an ONNX Runtime CPU setting: refuse it for any other engine. `engine`:
    the caller's name for the engine kind, which the message names (open_engine calls it `kind`)."""
    if exact and kind != "ort-cpu":
        raise ConfigError("exact", exact, "selects ONNX Runtime's x86 INT8 kernels; it does not apply to "
                          "{" + engine + "=}", **{engine: kind})


def check_precision(kind: str, precision: str, engine: str = "engine") -> None:
    """The inference precision is an OpenVINO setting; every other engine runs the model's own dtypes."""
    if precision != "f32" and kind != "openvino":
        raise ConfigError("precision", precision, "sets OpenVINO's inference precision; it does not apply to "
                          "{" + engine + "=}", **{engine: kind})


def check_emitted_for(kind: str, path: str) -> None:
    """A Q/DQ ONNX emitted for OpenVINO (S8 activations shaped for its low-precision transformations) is refused by
    ONNX Runtime, whose fast kernels want the ort-cpu form: one line instead of a slower, differently rounded run."""
    from qbert.atomic import sidecar_json

    quant = (sidecar_json(path) or {}).get("quantization")
    target = quant.get("target") if isinstance(quant, dict) else None
    spec = TARGETS.get(target) if isinstance(target, str) else None
    if spec is not None and kind in spec.refused_by:
        raise QbertError(f"{path} was quantized for {{target=}}: run it with {{engine=}}, or re-emit its recipe with "
                         f"{{target}} {kind} for {TARGETS[kind].runtime if kind in TARGETS else kind}", target=target,
                         engine=spec.engine)
    if spec is not None and kind in spec.misread_by:  # runs, but its numbers are neither CPU's nor TensorRT's
        from qbert.progress import warn

        warn(f"{path} was quantized for {spec.runtime} ({spec.summary}); on the CPU its FP16 and Q/DQ run "
             "mostly on float kernels, so these numbers describe neither TensorRT nor a CPU deployment — re-emit "
             "its recipe for the CPU target to measure that")


def open_engine(kind: str, path: str, threads: int | None = None, exact: bool = False,
                precision: str = "f32", pooling: Any = None) -> Engine:
    """Open an engine by kind: `ort-cpu`, `openvino` and `tensorrt` take a model/plan path, `torch` an HF model.
    Use it as a context manager. `threads` applies to the CPU engines, `exact` (non-saturating x86 INT8) to
    ort-cpu only, `precision` (f32 | bf16 inference) to openvino only, `pooling` (an exporter.pooling.Pooling:
    run the HF model as that embedding model) to torch only — the other engines run what the graph computes."""
    check_exact(kind, exact)
    check_precision(kind, precision)
    if kind == "ort-cpu":
        from qbert.engines.onnxruntime import OrtCpuEngine

        check_emitted_for(kind, path)
        return OrtCpuEngine(path, threads=threads, exact=exact)
    if kind == "openvino":
        from qbert.engines.openvino import OpenVinoEngine

        return OpenVinoEngine(path, threads=threads, precision=precision)
    if kind == "torch":
        from qbert.engines.torch import TorchEngine

        return TorchEngine(path, threads=threads, pooling=pooling)
    if kind == "tensorrt":
        from qbert.engines.tensorrt_runner import TensorRTEngine

        return TensorRTEngine(path)
    raise QbertError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
