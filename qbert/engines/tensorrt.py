"""Building TensorRT and TensorRT-RTX plans behind one code path: the module is chosen at run time and imported
lazily (running a plan: tensorrt_runner.py; its census: tensorrt_census.py).

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

from qbert.atomic import read_json, sha256_file, sha256_onnx, sidecar_path, staged, write_bytes, write_json
from qbert.output_checks import check_outputs
from qbert.artifacts import PlanMeta, load_meta, load_onnx, load_plan_meta
from qbert.calibration.targets import TARGETS
from qbert.engines.gpu import _parse_sm, choose_target, network_flags, query_device, trt_major
from qbert.errors import ConfigError, QbertError
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
        if (meta.quantization or {}).get("asymmetric_sites"):  # re-emitting its recipe for trt would be refused too
            from qbert.calibration.grids import FOR_TENSORRT, FOR_TENSORRT_MENTIONS

            raise QbertError(f"{onnx_path} has activations on asymmetric grids, which TensorRT cannot run: "
                             + FOR_TENSORRT, **FOR_TENSORRT_MENTIONS)
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
