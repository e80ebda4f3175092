"""OpenVINO on the CPU: runs a qbert ONNX (FP32 or Q/DQ) on oneDNN kernels, and counts from OpenVINO's own
compiled model which GEMMs ran in INT8.

OpenVINO's low-precision transformations turn a DequantizeLinear → MatMul pattern into an INT8 FullyConnected or
fold a whole attention block (Q·Kᵀ, softmax, P·V) into one fused INT8 subgraph; what they cannot absorb stays a
FakeQuantize in float. Only the compiled model says which happened, so the census reads it
(`get_runtime_model()`: each executed layer's `layerType`, `runtimePrecision` and the original ONNX nodes it
holds) rather than inferring it from the graph. The inference precision is always set explicitly: on a CPU with
AVX-512 BF16 or AMX, OpenVINO's default is bf16, which changes both accuracy and speed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from qbert.engines.base import Engine, check_feeds, census_shape, longest_sequence
from qbert.errors import QbertError
from qbert.machine import machine
from qbert.progress import warn
from qbert.ov_session import PRECISIONS, compile_path, compile_read, core, openvino, read_model, reason, runner

INTEGER = ("i8", "u8")
GEMM_LAYERS = ("FullyConnected", "FullyConnectedQuantizedLegacy", "MatMul", "Gemm")


def check_precision(precision: str) -> None:
    """f32, or bf16 where this CPU has it (OpenVINO would otherwise silently run f32 and record bf16)."""
    if precision not in PRECISIONS:
        raise QbertError(f"inference precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        caps = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in caps:
            raise QbertError(f"bf16 inference needs a CPU with AVX-512 BF16 or AMX; this one ({machine()['cpu']}) "
                             "has neither: use f32")


def check_model(path: str) -> Any:
    """A qbert ONNX, or an OpenVINO IR (`.xml` with its `.bin`, such as NNCF writes) with the encoder's inputs:
    the peer's artefact can be timed and censused beside qbert's. Readable one-line errors either way. Returns
    OpenVINO's model of an IR (read once, for a caller that also wants its outputs), None for an ONNX."""
    from qbert.artifacts import load_onnx
    from qbert.data import INPUT_NAMES
    from qbert.atomic import require_file

    if not str(path).endswith(".xml"):
        load_onnx(path)
        return None
    require_file(path, "OpenVINO IR")
    require_file(Path(path).with_suffix(".bin"), "OpenVINO IR weights")
    model = read_model(path)
    names = {n for i in model.inputs for n in i.get_names()}
    missing = [n for n in INPUT_NAMES if n not in names]
    if missing:
        raise QbertError(f"{path} lacks inputs {missing}: an encoder exported by qbert export (then converted) "
                         "has them")
    return model


class OpenVinoEngine(Engine):
    name = "openvino"

    def __init__(self, path: str, threads: int | None = None, precision: str = "f32"):
        check_precision(precision)
        check_model(path)
        self.path, self.threads, self.precision = str(path), threads, precision

    def activate(self) -> None:
        threads = self.threads
        self.compiled = compile_path(self.path, threads, self.precision)
        self._run = runner(self.compiled)
        ran = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        if threads and ran and ran < threads:  # OpenVINO caps threads at the cores it finds; results record `ran`
            warn(f"OpenVINO runs {ran} threads, not the {threads} asked: it uses at most the {ran} cores it finds")

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds)
        self.active()
        try:
            return self._run(feeds)
        except Exception as e:  # noqa: BLE001 - OpenVINO's errors carry C++ traces: one line
            shape = "x".join(map(str, feeds["input_ids"].shape))
            raise QbertError(f"OpenVINO failed running {self.path} on a {shape} batch: {reason(e)}") from None

    def describe(self) -> dict[str, Any]:
        self.active()  # the threads it runs are the compiled model's
        return {"engine": self.name, "openvino": openvino().get_version(), "model": self.path,
                "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or self.threads or os.cpu_count(),
                "inference_precision": self.precision,
                "high_precision": "fp32" if self.precision == "f32" else "bf16", "machine": machine()}

    def census(self, batch: int = 1, seq: int | None = None) -> dict[str, Any]:
        return openvino_census(self.path, self.threads, batch, seq, self.precision)

    def close(self) -> None:
        self._run = self.compiled = None
        self._active = False


def openvino_census(path: str, threads: int | None = None, batch: int = 1, seq: int | None = None,
                    precision: str = "f32") -> dict[str, Any]:
    """Read back what runs: the model compiled as the engine compiles it (dynamic batch and sequence), every
    MatMul of the imported graph (weights and attention alike) found in the executed layer that holds it, with
    that layer's runtime precision; multiply-accumulates counted on a static batch × seq copy, so the INT8 share
    counts attention too. Also: executed GEMM-like layers by type and precision, fused attention blocks (a softmax
    and its MatMuls in one INT8 subgraph) and FakeQuantize layers left in float. (A static copy is not what runs:
    with fixed shapes OpenVINO also fuses the elementwise ops around a quantize step into one subgraph, so a
    static compile would report no FakeQuantize where the deployed model runs them on their own.)"""
    model = read_model(path)  # ONNX or OpenVINO IR
    deployed = model.clone()  # compiled as OpenVinoEngine compiles it: dynamic shapes
    rows = next((int(op.get_output_shape(0)[0]) for op in model.get_ordered_ops() if op.get_type_name() == "Constant"
                 and "position_embeddings" in op.get_friendly_name() and len(op.get_output_shape(0)) == 2), None)
    batch, seq = census_shape(batch, seq, longest_sequence(rows, path))
    model.reshape({i.get_any_name(): [batch, seq] for i in model.inputs})
    matmuls = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    gemms = {op.get_friendly_name(): _macs(op) for op in matmuls}
    # a GEMM whose scale and bias ops write a graph output (the classifier's `logits`) runs under that name
    readers = {op.get_friendly_name(): _downstream(op) for op in matmuls}
    compiled = compile_read(deployed, path, threads, precision)
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = [n for n in info["originalLayersNames"].astype(str).split(",") if n]
        for i in range(op.get_input_size()):  # a GEMM's weight path (`…/MatMul/transpose_b`) names its MatMul
            src = op.input(i).get_source_output().get_node().get_rt_info()
            if src["layerType"].astype(str) in ("Transpose", "Const", "Reorder"):
                names += [n.rsplit("/", 1)[0] for n in src["originalLayersNames"].astype(str).split(",")
                          if n.endswith("/transpose_b")]
        layers.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str), names))
    locate = _locator(layers)
    macs = {"integer": 0, "float": 0}
    per_gemm = {}
    for name, count in gemms.items():
        kind, prec = locate(name)
        for alias in readers[name] if kind == "not found" else []:
            kind, prec = locate(alias)
            if kind != "not found":
                break
        per_gemm[name] = {"layer": kind, "precision": prec, "macs": count}
        macs["integer" if prec in INTEGER else "float"] += count
    executed = {}
    for kind, prec, _ in layers:
        if kind in GEMM_LAYERS or kind == "Subgraph":
            executed[f"{kind} {prec}"] = executed.get(f"{kind} {prec}", 0) + 1
    fused = sum(1 for kind, prec, names in layers if kind == "Subgraph" and prec in INTEGER
                and any("Softmax" in n for n in names))
    total = sum(macs.values())
    integer = sum(1 for g in per_gemm.values() if g["precision"] in INTEGER)
    return {
        "integer_gemms": integer,
        "float_gemms": len(per_gemm) - integer,
        "executed_layers": executed,
        "fused_attention_blocks": fused,
        "fakequantize_left": sum(1 for kind, _, _ in layers if kind == "FakeQuantize"),
        "fakequantize_layers": [",".join(names) for kind, _, names in layers if kind == "FakeQuantize"],
        "gemms": per_gemm,
        "gemm_macs": {**macs, "shape": [batch, seq]},
        "integer_mac_share": macs["integer"] / total if total else 0.0,
        "inference_precision": precision,
    }


def _locator(layers: list[tuple[str, str, list[str]]]) -> Any:
    """name of an imported MatMul → (layer type, runtime precision) of the executed layer holding it. OpenVINO
    renames what it fuses (`…/query/MatMul/DequantizationMultiply`, the bias `…/query/Add` carrying its MatMul,
    an attention block's Q·Kᵀ inside its fused subgraph), so after the exact name come a name under it, the
    name's parent, a GEMM layer of the same module scope, then a fused subgraph of that scope."""
    exact: dict[str, tuple[str, str]] = {}
    under: dict[str, tuple[str, str]] = {}
    scope_gemm: dict[str, tuple[str, str]] = {}
    scope_fused: dict[str, tuple[str, str]] = {}
    for kind, prec, names in layers:
        gemm = kind in GEMM_LAYERS
        if not gemm and kind != "Subgraph":
            continue
        for n in names:
            exact.setdefault(n, (kind, prec))
            parts = n.split("/")
            for i in range(2, len(parts)):
                if gemm or "/".join(parts[:i]) not in under:
                    under["/".join(parts[:i])] = (kind, prec)
            (scope_gemm if gemm else scope_fused).setdefault(n.rsplit("/", 1)[0], (kind, prec))

    def locate(name: str) -> tuple[str, str]:
        scope = name.rsplit("/", 1)[0]  # (the head's `/pooler/dense/Gemm/WithoutBiases` runs as `…/Gemm`)
        for table, key in ((exact, name), (under, name), (exact, scope), (scope_gemm, scope), (scope_fused, scope)):
            if key in table:
                return table[key]
        return ("not found", "unknown")

    return locate


def _downstream(op: Any, depth: int = 3) -> list[str]:
    """Friendly names of the ops after `op`, nearest first, following single readers for `depth` steps."""
    names = []
    for _ in range(depth):
        readers = [t.get_node() for t in op.output(0).get_target_inputs()] if op.get_output_size() else []
        if len(readers) != 1:
            break
        op = readers[0]
        names.append(op.get_friendly_name())
    return names


def _macs(op: Any) -> int:
    """Output elements × the inner dimension of the first operand."""
    a = list(op.input(0).get_shape())
    transpose_a = bool(op.get_attributes().get("transpose_a", False))
    inner = a[-2] if transpose_a else a[-1]
    return int(np.prod(list(op.get_output_shape(0)), dtype=np.int64)) * int(inner)
