"""TensorRT and TensorRT-RTX behind one code path: the module is chosen at run time and imported lazily.

Building needs no GPU with TensorRT-RTX (ahead-of-time for a compute capability, e.g. SM86 = RTX 3050);
standard TensorRT builds for the GPU it runs on. Running needs a CUDA GPU and cuda-python (extra `gpu`).
Networks are always strongly typed: the ONNX dtypes (INT8 Q/DQ, FP16 elsewhere) are the precision.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from qbert.atomic import read_json, sha256_file, sha256_onnx, sidecar_path, staged, write_bytes, write_json
from qbert.output_checks import check_outputs
from qbert.artifacts import PlanMeta, load_meta, load_onnx, load_plan_meta
from qbert.calibration.targets import TARGETS
from qbert.engines.base import Engine, check_feeds, census_shape
from qbert.engines.gpu import (_parse_sm, check_plan_runs_here, choose_target, cuda_runtime, network_flags,
                              query_device, trt_major)
from qbert.errors import ConfigError, QbertError
from qbert.data import INPUT_NAMES
from qbert.progress import Phases, phase_display

BACKENDS = ("auto", "tensorrt", "tensorrt-rtx")
DEFAULT_SHAPES = ((1, 1), (8, 128), (32, 128))  # (batch, seq) min / opt / max


def import_trt(backend: str = "auto") -> tuple[Any, str]:
    """(module, backend name): `tensorrt` first under auto (it runs W8A8 INT8 GEMMs), else `tensorrt_rtx`."""
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, f"choose one of {', '.join(BACKENDS)}")
    order = {"auto": ("tensorrt", "tensorrt-rtx"), "tensorrt": ("tensorrt",), "tensorrt-rtx": ("tensorrt-rtx",)}
    for name in order[backend]:
        try:
            module = __import__(name.replace("-", "_"))
            return module, name
        except ImportError:
            continue
    raise ConfigError("backend", backend, "no TensorRT module is installed for it: pip install 'qbert[rtx]' "
                      "(TensorRT-RTX) or 'qbert[trt]' (TensorRT)")


def parse_shapes(spec: str | None) -> tuple[tuple[int, int], ...]:
    """`1x1/8x128/32x128` → ((1, 1), (8, 128), (32, 128))."""
    if not spec:
        return DEFAULT_SHAPES
    bad = ConfigError("shapes", spec, "expected min/opt/max as BxS/BxS/BxS, e.g. 1x1/8x128/32x128")
    try:
        shapes = tuple(tuple(int(v) for v in part.lower().split("x")) for part in spec.split("/"))
    except ValueError:
        raise bad from None
    if len(shapes) != 3 or not all(len(s) == 2 and min(s) >= 1 for s in shapes):
        raise bad
    for i in range(2):
        if not shapes[0][i] <= shapes[1][i] <= shapes[2][i]:
            raise ConfigError("shapes", spec, "need min ≤ opt ≤ max in each dimension")
    return shapes


def build(onnx_path: Path, out: Path, backend: str = "auto", sm: str | int = "auto", shapes: str | None = None,
          opt_level: int = 3, timing_cache: Path | None = None, force: bool = False,
          hw_compat: bool = False) -> PlanMeta:
    """Build (or reuse) a serialized plan; returns its sidecar. Cache key = everything that shapes the plan.

    `sm="auto"` targets the visible GPU (SM86 when there is none); a number cross-compiles (TensorRT-RTX)."""
    profile = parse_shapes(shapes)  # flags first: a bad flag reads the same with or without TensorRT installed
    if not 0 <= opt_level <= 5:
        raise ConfigError("opt_level", opt_level, "must be 0-5")
    if str(sm).lower() != "auto":
        _parse_sm(sm)
    check_outputs({"out": out, "timing_cache": timing_cache}, {"onnx": onnx_path}, kinds={"out": "plan"})  # the cache is read, too
    load_onnx(onnx_path)
    if sidecar_path(onnx_path).is_file():  # target and positions come from it: it must describe this very ONNX
        meta = load_meta(onnx_path)
        emitted_for = (meta.quantization or {}).get("target")
        why = TARGETS[emitted_for].why_not_tensorrt if emitted_for in TARGETS else ""
        if why:
            recipe = (meta.quantization or {}).get("recipe") or "its recipe"
            raise QbertError(f"{onnx_path} was emitted for {{target=}} ({why}); for TensorRT, re-emit its recipe "
                             f"{recipe} from {meta.fp32_onnx} with {{target}} trt", target=emitted_for)
        if shapes is None:  # default profile within the model's positions
            profile = tuple((b, min(s, meta.max_length)) for b, s in profile)
        elif max(s for _, s in profile) > meta.max_length:
            raise ConfigError("shapes", shapes, f"sequence {max(s for _, s in profile)} is longer than the model "
                              f"takes ({meta.max_length} tokens: its position table / export {{max_length}})",
                              max_length=meta.max_length)
    trt, name = import_trt(backend)
    if hw_compat and name == "tensorrt-rtx":  # backend auto may land here: the setting would do nothing
        raise QbertError("{hw_compat} is a standard-TensorRT setting and this build uses TensorRT-RTX ({backend=}), "
                         "which targets one compute capability ({sm}): drop {hw_compat} or install TensorRT and use "
                         "{backend} tensorrt", hw_compat=True, backend=backend, sm=sm)
    if timing_cache is not None and name == "tensorrt-rtx":  # its timing-cache calls are documented no-ops
        raise QbertError("{timing_cache} is a standard-TensorRT setting and this build uses TensorRT-RTX "
                         "({backend=}), which times no tactics ahead of time, so no cache would be read or written: "
                         "drop {timing_cache} or install TensorRT and use {backend} tensorrt",
                         timing_cache=timing_cache, backend=backend)
    device, _ = query_device()
    target = choose_target(trt, name, sm, device)
    key_fields = {"onnx_sha256": sha256_onnx(onnx_path), "backend": name, "version": trt.__version__,
                  "trt_major": trt_major(trt), "sm": target, "profile": profile, "opt_level": opt_level,
                  "hw_compat": hw_compat}
    key = _cache_key(key_fields)
    side = sidecar_path(out)
    if not force and out.is_file() and side.is_file():
        old = read_json(side, "engine sidecar")  # a hit needs the plan and every field of its sidecar unchanged
        if isinstance(old, dict) and old.get("cache_key") == key == _cache_key({k: old.get(k) for k in key_fields}) \
                and old.get("plan_sha256") == sha256_file(out):
            return replace(load_plan_meta(out), cache_hit=True)
    logger = _build_logger(trt, device is None)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise QbertError(f"{name} cannot parse {onnx_path}: {errors[:400]}")
    config = builder.create_builder_config()
    config.builder_optimization_level = opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for the inspector
    if name == "tensorrt-rtx":  # choose_target checked that the enum has this target
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{target}"), 0)
    elif hw_compat:  # standard TensorRT: engines that also run on later GPUs (Ampere and newer)
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):  # the parser may leave out an input the graph never reads
        opt.set_shape(network.get_input(i).name, *profile)
    config.add_optimization_profile(opt)
    cache = None
    if timing_cache is not None and hasattr(config, "create_timing_cache"):
        cache = read_timing_cache(config, timing_cache, name)
        config.set_timing_cache(cache, ignore_mismatch=True)
    t0 = time.perf_counter()
    with phase_display(f"{name}: building {out.name}") as display:
        monitor = _monitor(trt, display)
        if hasattr(config, "progress_monitor"):
            config.progress_monitor = monitor
        with _sigint_cancels(monitor):
            plan = builder.build_serialized_network(network, config)
    if monitor.interrupted:
        raise KeyboardInterrupt
    if plan is None:
        raise QbertError(f"{name} failed to build an engine from {onnx_path} (see the TensorRT log above)")
    seconds = time.perf_counter() - t0
    blob = bytes(plan)
    meta = PlanMeta(**{**key_fields, "profile": [list(p) for p in profile]}, cache_key=key,
                    plan_sha256=hashlib.sha256(blob).hexdigest(), plan_bytes=len(blob), onnx=str(onnx_path),
                    build_seconds=round(seconds, 2), target=f"SM{target}", device=str(device) if device else None)
    with staged() as stage:  # plan, sidecar and timing cache appear together or not at all
        write_bytes(out, blob, stage)
        write_json(side, meta.to_json(), stage)
        if cache is not None:
            write_bytes(timing_cache, bytes(cache.serialize()), stage)
    return meta


NO_DRIVER = "CUDA driver version is insufficient"


def _build_logger(trt: Any, no_gpu: bool) -> Any:
    """TensorRT's errors on stderr as TensorRT prints them, except, on a machine without a GPU, its complaints
    that no CUDA driver is there: an ahead-of-time build (TensorRT-RTX for a given `sm`) needs none, and reading a
    timing cache makes TensorRT-RTX probe for one and print two error lines over a build that then succeeds."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) > int(trt.ILogger.Severity.ERROR) or (no_gpu and NO_DRIVER in msg):
                return
            tag = "F" if severity == trt.ILogger.Severity.INTERNAL_ERROR else "E"
            print(f"[TRT] [{tag}] {msg}", file=sys.stderr, flush=True)

    return Logger()


def _cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def read_timing_cache(config: Any, path: Path, name: str) -> Any:
    """The timing cache in `path` (new or empty: an empty cache), refused when the file holds anything else.
    TensorRT quietly drops bytes it cannot read and the build then writes its cache over them, so a data file
    or an ONNX given by mistake would be lost. A file is a cache when it starts as this TensorRT's own empty
    cache does (its format header) or when TensorRT reads it back whole (serialising it again gives as many
    bytes)."""
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not blob:
        return cache
    header = bytes(config.create_timing_cache(b"").serialize())[:8]
    again = bytes(cache.serialize()) if cache is not None else b""
    if cache is None or (blob[:len(header)] != header and len(again) != len(blob)):
        raise ConfigError("timing_cache", path, f"is not a {name} timing cache (it would be overwritten); give a "
                          "new path, or a cache an earlier qbert build wrote")
    return cache


@contextlib.contextmanager
def _sigint_cancels(monitor: Any) -> Iterator[None]:
    """During a build Ctrl-C only flags the monitor, whose next step_complete returns False so TensorRT stops
    cleanly. (A KeyboardInterrupt raised inside a callback is caught by TensorRT, which then just fails.)"""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: setattr(monitor, "interrupted", True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _monitor(trt: Any, display: Phases) -> Any:
    """TensorRT's IProgressMonitor feeding the phase display; step_complete returning False cancels the build."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.interrupted = False

        def _call(self, fn: Any, *args: Any) -> bool:
            try:
                fn(*args)
            except KeyboardInterrupt:
                self.interrupted = True
            except Exception:  # noqa: BLE001 - the display must never break a build
                pass
            return not self.interrupted

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._call(display.start, phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return self._call(display.step, phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            self._call(display.finish, phase_name)

    return Monitor()


def check_plan(plan: Path) -> PlanMeta:
    """Validate a plan file against its sidecar before handing it to TensorRT."""
    if not plan.is_file():
        raise QbertError(f"engine plan {plan} not found")
    if plan.stat().st_size == 0:
        raise QbertError(f"engine plan {plan} is empty; rebuild it with qbert build")
    meta = load_plan_meta(plan)
    if sha256_file(plan) != meta.plan_sha256:
        raise QbertError(f"{plan} does not match its sidecar (corrupt or replaced); rebuild with qbert build")
    trt, name = import_trt(meta.backend)
    if trt.__version__ != meta.version:
        raise QbertError(f"{plan} was built with {name} {meta.version}, this is {trt.__version__}; rebuild it")
    return meta


def gpu_available() -> tuple[bool, str]:
    device, why = query_device()
    return (True, str(device)) if device is not None else (False, why)


class TensorRTEngine(Engine):
    """Runs a plan with execute_async_v3 on device buffers; timing with CUDA events lives in bench."""

    name = "tensorrt"

    def __init__(self, plan: str):
        self.plan = Path(plan)
        self.meta = check_plan(self.plan)
        device, why = query_device()
        if device is None:
            raise QbertError(f"{{engine=}} needs a CUDA GPU: {why}; use {{engine}} ort-cpu on this machine",
                             engine="tensorrt")
        cudart, why = cuda_runtime()
        if cudart is None:
            raise QbertError(f"{{engine=}} needs cuda-python to drive {device}: {why}", engine="tensorrt")
        self.cudart = cudart
        self.trt, self.backend = import_trt(self.meta.backend)
        check_plan_runs_here(self.meta.backend, self.meta.sm, self.meta.hw_compat, self.trt, device)
        self.device = device
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            raise QbertError(f"{self.backend} could not deserialize {self.plan} (wrong GPU or version); rebuild it")
        self.context = self.engine.create_execution_context()
        io = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        # a plan drops inputs its network ignores (DistilBERT's token_type_ids); bind only what it has
        self.inputs = [n for n in INPUT_NAMES if n in io]
        self.output = next(n for n in io if n not in INPUT_NAMES)  # logits, or an embedding model's embeddings
        _, self.stream = cudart.cudaStreamCreate()
        self.buffers: dict[str, tuple[int, int]] = {}

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cudart.cudaFree(ptr)
            _, ptr = self.cudart.cudaMalloc(nbytes)
            self.buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds)
        cudart = self.cudart
        kind = cudart.cudaMemcpyKind
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name], dtype=np.int64)
            self.context.set_input_shape(name, arr.shape)
            ptr = self._buffer(name, arr.nbytes)
            cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, kind.cudaMemcpyHostToDevice, self.stream)
            self.context.set_tensor_address(name, ptr)
        shape = tuple(self.context.get_tensor_shape(self.output))
        out = np.empty(shape, dtype=np.float32)
        optr = self._buffer(self.output, out.nbytes)
        self.context.set_tensor_address(self.output, optr)
        self.context.execute_async_v3(self.stream)
        cudart.cudaMemcpyAsync(out.ctypes.data, optr, out.nbytes, kind.cudaMemcpyDeviceToHost, self.stream)
        cudart.cudaStreamSynchronize(self.stream)
        return out

    def time(self, feeds: dict[str, np.ndarray], warmup: int, iters: int, cuda_graph: bool = False,
             advance: Any = None) -> np.ndarray:
        """Per-iteration milliseconds between CUDA events (inputs stay on the device, as in deployment);
        with `cuda_graph`, one captured enqueue is replayed to cut launch overhead."""
        cudart = self.cudart
        self.run(feeds)  # binds shapes and device buffers
        launch = lambda: self.context.execute_async_v3(self.stream)  # noqa: E731
        graph_exec = None
        if cuda_graph:
            cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal)
            launch()
            _, graph = cudart.cudaStreamEndCapture(self.stream)
            _, graph_exec = cudart.cudaGraphInstantiate(graph, 0)
            launch = lambda: cudart.cudaGraphLaunch(graph_exec, self.stream)  # noqa: E731
        for _ in range(warmup):
            launch()
        _, start = cudart.cudaEventCreate()
        _, stop = cudart.cudaEventCreate()
        times = np.empty(iters)
        for i in range(iters):
            cudart.cudaEventRecord(start, self.stream)
            launch()
            cudart.cudaEventRecord(stop, self.stream)
            cudart.cudaEventSynchronize(stop)
            times[i] = cudart.cudaEventElapsedTime(start, stop)[1]
            if advance is not None:
                advance(1)
        return times

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "backend": self.backend, "version": self.trt.__version__,
                "plan": str(self.plan), "target": self.meta.target, "gpu": str(self.device),
                "high_precision": "fp16",
                "device_memory_bytes": int(getattr(self.engine, "device_memory_size_v2",
                                                   getattr(self.engine, "device_memory_size", 0))),
                "weights_bytes": self.plan.stat().st_size}

    def census(self, batch: int = 1, seq: int | None = None) -> dict[str, Any]:
        """INT8 vs FP16 GEMM layers and their share of multiply-accumulates, from IEngineInspector (needs the
        DETAILED profiling verbosity qbert builds with). Shapes are those bound by the last run."""
        census_shape(batch, seq)
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        info = json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))
        return inspector_census(info.get("Layers", []))

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers.clear()


def inspector_census(layers: list[Any]) -> dict[str, Any]:
    """Precision census of TensorRT layer information (JSON, DETAILED): a GEMM layer counts as INT8 when its
    first input is INT8; its MACs are output elements × the input's last dimension. Fused Myelin/ForeignNode
    layers hide their GEMMs and are counted apart, so an incomplete census says so (never run here: no GPU)."""
    counts, macs = {"int8": 0, "fp16": 0, "fp32": 0}, {"int8": 0, "fp16": 0, "fp32": 0}
    opaque = 0
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        kind = f"{layer.get('LayerType', '')} {layer.get('Name', '')}".lower()
        if "myelin" in kind or "foreignnode" in kind:
            opaque += 1  # a fused subgraph: its GEMMs are not listed one by one
            continue
        if not any(w in kind for w in ("gemm", "matmul", "matrixmultiply", "convolution", "fully")):
            continue
        ins, outs = layer.get("Inputs", []), layer.get("Outputs", [])
        fmt = (json.dumps(ins[:1]) + str(layer.get("TacticName", ""))).lower()
        prec = "int8" if "int8" in fmt or "i8i8" in fmt else "fp16" if "half" in fmt or "fp16" in fmt else "fp32"
        counts[prec] += 1
        try:
            k = int(ins[0]["Dimensions"][-1])
            macs[prec] += int(np.prod(outs[0]["Dimensions"], dtype=np.int64)) * k
        except (IndexError, KeyError, TypeError, ValueError):
            pass
    total = sum(macs.values())
    return {"gemm_layers": counts, "gemm_macs": macs, "integer_mac_share": macs["int8"] / total if total else 0.0,
            "integer_gemms": counts["int8"], "float_gemms": counts["fp16"] + counts["fp32"],
            "layers": len(layers), "opaque_fused_layers": opaque}
