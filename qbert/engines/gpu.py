"""The CUDA GPU in hand, and whether a TensorRT backend can build for it and run on it.

Standard TensorRT builds for the GPU it runs on (Turing, SM75, and newer); TensorRT-RTX cross-compiles ahead of
time for the consumer architectures its `ComputeCapability` enum lists (1.7: SM75/80/86/89/120/121) and has no
datacenter Hopper (SM90). Checking before a build or a load turns TensorRT's late "Error Code 6: API Usage
Error (The engine cannot run on this GPU …)" into one line that names the fix. Nothing here imports TensorRT;
the CUDA query needs only cuda-python (extra `gpu`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qbert.errors import ConfigError, QbertError

DEFAULT_SM = 86  # RTX 30xx (e.g. an RTX 3050): the target when no GPU is visible
STANDARD_TRT_MIN_SM = 75
INSTALL_TRT = "install standard TensorRT: pip install 'qbert[trt]'"


@dataclass(frozen=True)
class Device:
    """One CUDA device as cudaGetDeviceProperties reports it."""

    name: str
    major: int
    minor: int

    @property
    def sm(self) -> int:
        return 10 * self.major + self.minor

    def __str__(self) -> str:
        return f"{self.name} (compute capability {self.major}.{self.minor})"


def cuda_runtime() -> tuple[Any | None, str]:
    """(cuda-python's runtime module, "") or (None, why not)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None, "cuda-python is not installed (pip install 'qbert[gpu]')"
    return cudart, ""


def query_device() -> tuple[Device | None, str]:
    """(the first visible CUDA device, "") or (None, why there is none). Tests stub this one function."""
    cudart, why = cuda_runtime()
    if cudart is None:
        return None, why
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return None, "no CUDA GPU is visible"
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return None, f"cudaGetDeviceProperties failed ({err})"
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return Device(name.rstrip("\x00").strip(), int(props.major), int(props.minor)), ""


def rtx_targets(trt: Any) -> list[int]:
    """Compute capabilities this TensorRT-RTX can target, from its own enum (SM75 → 75)."""
    return sorted(int(c[2:]) for c in dir(trt.ComputeCapability) if c.startswith("SM") and c[2:].isdigit())


def _sm_list(sms: list[int]) -> str:
    return ", ".join(f"SM{s}" for s in sms)


def choose_target(trt: Any, backend: str, sm: str | int, device: Device | None) -> int:
    """The compute capability to build for. `sm` auto: the present GPU, else SM86; an explicit number
    cross-compiles (TensorRT-RTX only: standard TensorRT always builds for the GPU it runs on)."""
    explicit = None if str(sm).lower() == "auto" else _parse_sm(sm)
    if backend == "tensorrt":
        if device is None:
            raise QbertError("standard TensorRT builds for the GPU it runs on, and no CUDA GPU is visible; "
                             "cross-compile with {backend=} and {sm=} instead", backend="tensorrt-rtx", sm=DEFAULT_SM)
        if explicit is not None and explicit != device.sm:
            raise ConfigError("sm", explicit, f"standard TensorRT builds only for the present GPU, {device}; "
                              "use {sm=}, or {backend=} to cross-compile", sm="auto", backend="tensorrt-rtx")
        check_backend_serves(trt, backend, device.sm, device)
        return device.sm
    target = explicit if explicit is not None else device.sm if device is not None else DEFAULT_SM
    check_backend_serves(trt, backend, target, device if explicit is None else None)
    return target


def check_backend_serves(trt: Any, backend: str, sm: int, device: Device | None = None) -> None:
    """Refuse in one line when `backend` cannot build for / run on compute capability `sm`."""
    what = f"run on {device}" if device is not None else f"target SM{sm}"
    if backend == "tensorrt-rtx":
        supported = rtx_targets(trt)
        if sm not in supported:
            raise QbertError(f"TensorRT-RTX {trt.__version__} cannot {what}; it supports {_sm_list(supported)} — "
                             f"{INSTALL_TRT}")
    elif sm < STANDARD_TRT_MIN_SM:
        raise QbertError(f"TensorRT {trt.__version__} cannot {what}; it needs compute capability ≥ 7.5 (Turing)")


def check_plan_runs_here(backend: str, target: int | None, hw_compat: bool, trt: Any, device: Device) -> None:
    """Before deserializing: the plan's target must be this GPU (TensorRT-RTX plans are per architecture;
    standard TensorRT plans are for the GPU they were built on unless built hardware-compatible)."""
    check_backend_serves(trt, backend, device.sm, device)
    if isinstance(target, int) and target != device.sm and not hw_compat:
        raise QbertError(f"this plan was built for SM{target}, and this GPU is {device}; rebuild it here (build "
                         "with {sm=})", sm="auto")


def network_flags(trt: Any) -> int:
    """Creation flags for a strongly typed network: TensorRT 10.x defaults to weakly typed (which would silently
    run the ONNX's FP16 fallback layers in FP32), so set STRONGLY_TYPED where the enum has it; TensorRT 11 and
    TensorRT-RTX are strongly typed anyway (11 ignores the flag)."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _parse_sm(sm: str | int) -> int:
    text = str(sm).strip().lower().removeprefix("sm").replace(".", "")
    if not text.isdigit() or not 30 <= int(text) <= 200:
        raise ConfigError("sm", sm, "expected auto or a compute capability like 86 (RTX 30xx) or 89")
    return int(text)
