"""Running a TensorRT plan: the plan checked against its sidecar (hash, TensorRT version, GPU), then bound to
device buffers and executed on a CUDA stream (never run here: no GPU; the GPU path is right by construction and
tested in its logic)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qbert.artifacts import PlanMeta, load_plan_meta
from qbert.atomic import sha256_file
from qbert.data import INPUT_NAMES
from qbert.engines.base import Engine, check_feeds, census_shape
from qbert.engines.gpu import check_plan_runs_here, cuda_runtime, query_device
from qbert.engines.tensorrt import import_trt
from qbert.engines.tensorrt_census import inspector_census
from qbert.errors import QbertError


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
        self.buffers: dict[str, tuple[int, int]] = {}

    def activate(self) -> None:
        cudart = self.cudart
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
        self.active()
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
        self.active()
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        info = json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))
        return inspector_census(info.get("Layers", []))

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers.clear()
        self._active = False
