"""Scoring a model against the FP32 export it was quantized from — also a model qbert did not write (a peer's
INT8: NNCF's OpenVINO IR, another tool's ONNX), which then borrows that export's sidecar: the same tokenizer, length
and labels, so the peer is scored on the same rows the same way.

What is checked of such a model is what it computes, not where it came from: the inputs qbert feeds, and as its
first output (the one every engine reads) the export's — `logits` over its labels, or `embeddings` of its width —
read from the file and, since a file may leave the width to run time, from one small batch run through the engine.
A different model with the same inputs and outputs passes: naming the right export is the caller's part."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qbert.artifacts import ModelMeta, load_meta, load_onnx
from qbert.atomic import sidecar_path
from qbert.data import INPUT_NAMES
from qbert.errors import ConfigError, QbertError


def fp32_export(fp32: str | Path, model: str | Path) -> ModelMeta:
    """The sidecar of `fp32`, refused in one line naming `fp32` unless it is a readable qbert FP32 export that is
    not `model` itself — and, where `model` has a sidecar of its own, the export `model` was quantized from."""
    suffix = Path(fp32).suffix
    if suffix == ".json":
        raise ConfigError("fp32", str(fp32), "is a JSON file (a sidecar?); give the FP32 .onnx it belongs to")
    if suffix in (".xml", ".bin"):
        raise ConfigError("fp32", str(fp32), "is an OpenVINO IR; give the qbert FP32 ONNX export (qbert export)")
    if Path(model).exists() and Path(fp32).exists() and Path(model).resolve() == Path(fp32).resolve():
        raise ConfigError("fp32", str(fp32), "is the model being scored; give the FP32 export it was quantized from")
    try:
        ref = load_meta(fp32)
        if ref.kind == "fp32":
            load_onnx(fp32, expect="fp32")  # readable, before any of the model's rows are run
    except ConfigError:
        raise
    except QbertError as e:
        raise ConfigError("fp32", str(fp32), str(e)) from None
    if ref.kind != "fp32":
        raise ConfigError("fp32", str(fp32), "is a quantized model; give the FP32 export (qbert export) it came from")
    if sidecar_path(model).is_file():
        own = load_meta(model)
        if own.source_fingerprint != ref.source_fingerprint:
            raise ConfigError("fp32", str(fp32), f"is not the FP32 export {model} was quantized from (another source "
                              "model)")
    else:
        check_borrowed(model, fp32, ref)
    return ref


def expected_output(ref: ModelMeta) -> tuple[str, int]:
    """The output an export of `ref` computes: its name and width."""
    return ("embeddings", int(ref.dim)) if ref.task == "embedding" else ("logits", len(ref.label2id))


def signature_of(model: str | Path) -> tuple[set[str], list[tuple[str, int | None, int | None]]]:
    """The file's input names, and each output's (name, rank, last dimension), None where not fixed in the file:
    an ONNX or an OpenVINO IR (checked whole first: an IR without its weights is named as such)."""
    if str(model).endswith(".xml"):
        from qbert.engines.openvino import check_model

        m = check_model(str(model))  # the IR whole (its weights, qbert's inputs), read once
        outs = []
        for o in m.outputs:
            shape = o.get_partial_shape()
            rank = shape.rank.get_length() if shape.rank.is_static else None
            last = shape[rank - 1] if rank else None
            outs.append((o.get_any_name(), rank, last.get_length() if last is not None and last.is_static else None))
        return {n for i in m.inputs for n in i.get_names()}, outs
    import onnx

    from qbert.atomic import require_file

    path = require_file(model, "ONNX file")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # protobuf DecodeError and friends
        raise QbertError(f"{model} is not a readable ONNX model ({e.__class__.__name__})") from None
    outs = []
    for o in graph.output:
        dims = o.type.tensor_type.shape.dim if o.type.tensor_type.HasField("shape") else None
        last = dims[-1] if dims else None
        outs.append((o.name, len(dims) if dims is not None else None,
                     last.dim_value if last is not None and last.HasField("dim_value") else None))
    return {i.name for i in graph.input}, outs


def check_borrowed(model: str | Path, fp32: str | Path, ref: ModelMeta) -> None:
    """A model without a sidecar scored as `fp32`'s quantization must take qbert's inputs and compute, as its first
    output, what that export computes (as far as the file says; `check_run` sees the rest)."""
    inputs, outs = signature_of(model)
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing:
        raise QbertError(f"{model} lacks inputs {missing}: qbert feeds {', '.join(INPUT_NAMES)}, as its exports "
                         "take them")
    name, width = expected_output(ref)
    first = outs[0] if outs else ("(none)", None, None)
    if first[0] != name or first[1] not in (None, 2) or first[2] not in (None, width):
        got = ", ".join(f"{n} [{'rank ' + str(r) if r not in (None, 2) else (w if w is not None else '?')}]"
                        for n, r, w in outs)
        raise ConfigError("fp32", str(fp32), f"computes {name} [{width}] (as its first output); {model} computes "
                          f"{got}: not a quantization of that export")


def check_run(engine: Any, model: str | Path, fp32: str | Path, ref: ModelMeta) -> None:
    """One small batch through `engine`: the output every row will be scored by must be [batch, width] — a file
    may leave the width, or even the rank, to run time."""
    from qbert.encoding import random_feeds

    name, width = expected_output(ref)
    out = np.asarray(engine.run(random_feeds(2, 8, ref.vocab_size)))
    if out.shape != (2, width):
        raise ConfigError("fp32", str(fp32), f"computes {name} [batch, {width}]; {model} returned "
                          f"[{', '.join(map(str, out.shape))}] for a batch of 2: not a quantization of that export")


def flips_against(fp32: str | Path, result: dict[str, Any], dataset: Any, tokenizer: Any, batch_size: int,
                  max_length: int, threads: int | None) -> dict[str, Any]:
    """The FP32 export's accuracy on the same rows (ONNX Runtime) and the share of its predictions `result` changed."""
    from qbert.engines import open_engine as open_kind
    from qbert.eval.accuracy import evaluate as run

    with open_kind("ort-cpu", str(fp32), threads=threads) as ref:
        fp = run(ref, dataset, tokenizer, batch_size=batch_size, max_length=max_length,
                 description="eval [FP32 reference]")
    pred, fp_pred = np.asarray(result["predictions"]), np.asarray(fp["predictions"])
    return {"onnx": str(fp32), "engine": "ort-cpu", "accuracy": fp["accuracy"],
            "flips": float((pred != fp_pred).mean()) if len(pred) else 0.0}
