"""OpenVINO CPU compiled models for files and in-memory ONNX models: what method `auto` for the openvino target
and the openvino engine both run on (kept below them, as ort_session is for ONNX Runtime). openvino is an optional
dependency, imported only here and only when used."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qbert.errors import QbertError

PRECISIONS = ("f32", "bf16")


def openvino() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise QbertError("OpenVINO is not installed: pip install 'qbert[openvino]' (or pip install openvino)") from None
    return ov


def core() -> Any:
    """The process's one OpenVINO Core. Every Core loads its own CPU plugin, and the plugin points the calling
    thread's alternate signal stack at a buffer of its own while it lives, restoring the previous one when it goes:
    with two plugins alive at once (a Core per compile, method auto's candidates held side by side), the second
    to go restores the first's freed buffer, and the next signal the process receives — Ctrl-C — kills it with a
    segmentation fault instead of raising KeyboardInterrupt. One Core, kept, means one plugin and a valid stack."""
    return _kept_core(openvino())  # openvino() first: a missing package is still its one-line error


@functools.lru_cache(maxsize=1)
def _kept_core(ov: Any) -> Any:
    return ov.Core()


def compile_config(threads: int | None = None, precision: str = "f32", counters: bool = False) -> dict[str, str]:
    """Latency-oriented (one stream), with the inference precision stated: on a CPU with AVX-512 BF16 or AMX,
    OpenVINO's default is bf16, which changes accuracy and speed. `counters`: per-layer performance counters
    (PERF_COUNT), off for timing since collecting them costs a little on every layer."""
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if counters:
        config["PERF_COUNT"] = "YES"
    return config


def read_model(path: str | Path, shape: tuple[int, int] | None = None) -> Any:
    """OpenVINO's model of an ONNX file; `shape` (batch, seq) fixes the inputs' shape (for the census)."""
    try:
        model = core().read_model(str(path))
        if shape is not None:
            model.reshape({i.get_any_name(): list(shape) for i in model.inputs})
        return model
    except QbertError:
        raise
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses carrying C++ traces
        raise QbertError(f"OpenVINO cannot read {path}: {reason(e)}") from None


def compile_read(model: Any, path: str | Path, threads: int | None = None, precision: str = "f32",
                 counters: bool = False) -> Any:
    """Compile a model `read_model` returned (`path` only names it in errors)."""
    try:
        return core().compile_model(model, "CPU", compile_config(threads, precision, counters))
    except Exception as e:  # noqa: BLE001
        raise QbertError(f"OpenVINO cannot load {path}: {reason(e)}") from None


def compile_path(path: str | Path, threads: int | None = None, precision: str = "f32",
                 shape: tuple[int, int] | None = None, counters: bool = False) -> Any:
    """A compiled model for an ONNX file (see read_model for `shape`; compile_config for `counters`)."""
    return compile_read(read_model(path, shape), path, threads, precision, counters)


def compile_model(model: Any, threads: int | None = None, precision: str = "f32") -> Any:
    """A compiled model for an in-memory ONNX model (written to a temporary file: OpenVINO reads ONNX by path)."""
    from qbert.atomic import save_onnx

    with tempfile.TemporaryDirectory(prefix="qbert-ov-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(model, path)
        return compile_path(path, threads, precision)


def runner(compiled: Any) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """feeds → the model's one output (logits, or an embedding model's embeddings; float32) through one infer
    request of `compiled`."""
    request = compiled.create_infer_request()
    names = {i.get_any_name() for i in compiled.inputs}
    out = compiled.outputs[0]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(request.infer({k: v for k, v in feeds.items() if k in names})[out], dtype=np.float32)

    return run


def reason(e: Exception) -> str:
    """OpenVINO's message without the C++ source locations it is wrapped in ("Exception from src/…:117:")."""
    lines = [l.strip().split(" failed at src/")[0] for l in str(e).splitlines()
             if l.strip() and not l.strip().startswith("Exception from")]
    return (lines[0] if lines else str(e).strip().splitlines()[0])[:300]
