"""ONNX Runtime CPU sessions for in-memory models, and the logits they produce: what calibration, automatic
mixed precision, analysis and the ORT engine all run on (kept below them all, so none imports another)."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qbert.encoding import batches


QUIET = 4  # ORT logs fatal errors only: qbert reports a failed run itself, in one line


def session_options(threads: int | None = None, optimized_path: str | None = None, exact: bool = False) -> Any:
    """ORT's x86 U8S8/S8S8 kernels use VPMADDUBSW, whose 16-bit pair sums can saturate; `exact` selects the
    slower non-saturating path (measured on the tiny test BERT: 20,000× closer to exact fake-quant)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if exact:
        so.add_session_config_entry("session.x64quantprecision", "1")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = QUIET
    if threads:
        so.intra_op_num_threads = threads
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return so


def session_for(model: Any, so: Any) -> Any:
    """An ORT CPU session for an in-memory model; models past protobuf's 2 GB go through external data."""
    import onnxruntime as ort

    from qbert.atomic import proto_size, external_data_threshold, save_onnx

    if proto_size(model) <= external_data_threshold():
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="qbert-ort-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(model, path)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def session_from_path(path: str | Path, so: Any, exact: bool = False) -> Any:
    """An ORT CPU session for a file. In `exact` mode, INT8 weights read by several DequantizeLinear nodes
    (ALBERT's layers share one set) are first given one copy per reader, in memory only: ORT's x64 precision
    path rewrites each weight under a name derived from the original and fails on a shared one ("Attempt to
    replace the existing tensor"; onnxruntime 1.32)."""
    import onnxruntime as ort

    if exact:
        import onnx

        model = onnx.load(str(path))
        if unshare_weights(model):
            return session_for(model, so)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def unshare_weights(model: Any) -> int:
    """One DequantizeLinear, with its own INT8 weight, scale and zero point, per reading GEMM; returns the copies
    made (0: nothing was shared)."""
    from onnx import helper

    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for x in node.input:
            readers.setdefault(x, []).append(node)
    used: set[str] = set()
    copies = 0

    def own(name: str) -> str:
        nonlocal copies
        if name not in used:
            used.add(name)
            return name
        copy = type(inits[name])()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}.copy{copies}"
        copies += 1
        model.graph.initializer.append(copy)
        return copy.name

    before: dict[int, list[Any]] = {}  # id(reader) → its new DequantizeLinear, placed just before it
    nodes = list(model.graph.node)
    for node in nodes:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        for k, reader in enumerate(readers.get(node.output[0], [])):
            inputs = [own(x) if x in inits else x for x in node.input]
            if k == 0:
                node.input[:] = inputs
                continue
            out = f"{node.output[0]}.copy{k}"
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            before.setdefault(id(reader), []).append(
                helper.make_node("DequantizeLinear", inputs, [out], name=f"{node.name}.copy{k}", axis=axis))
            reader.input[:] = [out if x == node.output[0] else x for x in reader.input]
    del model.graph.node[:]
    for node in nodes:
        model.graph.node.extend(before.get(id(node), []) + [node])
    return copies


def logits_of(model: Any, encoded, batch_size: int, pad_id: int, exact: bool = False) -> np.ndarray:
    """Logits of an in-memory model. `exact`: ORT's non-saturating x86 INT8 path (what a VNNI CPU computes); a
    weight shared by several readers then gets one copy per reader, in `model` itself (see session_from_path)."""
    if exact:
        unshare_weights(model)
    sess = session_for(model, session_options(exact=exact))
    return logits_with(lambda feeds: sess.run(None, feeds)[0], encoded, batch_size, pad_id)


def logits_with(run: Callable[[dict[str, np.ndarray]], np.ndarray], encoded, batch_size: int,
                pad_id: int) -> np.ndarray:
    """Logits of every encoded row, in row order, from `run` (padded feeds → logits) over length-sorted batches."""
    out = np.zeros((len(encoded), 0), dtype=np.float32)
    for idx, feeds in batches(encoded, batch_size, pad_id=pad_id):
        got = run(feeds)
        if out.shape[1] == 0:
            out = np.zeros((len(encoded), got.shape[1]), dtype=np.float32)
        out[idx] = got
    return out


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(((reference - test) ** 2).sum())
    return float("inf") if noise == 0 else 10 * math.log10(float((reference ** 2).sum()) / noise)
