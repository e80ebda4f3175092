"""Scoring a model against the FP32 export it was quantized from — also a model qbert did not write (a peer's
INT8: NNCF's OpenVINO IR, another tool's ONNX), which then borrows that export's sidecar: the same tokenizer, length
and labels, so the peer is scored on the same rows the same way."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qbert.artifacts import ModelMeta, load_meta
from qbert.atomic import sidecar_path
from qbert.errors import ConfigError


def fp32_export(fp32: str | Path, model: str | Path) -> ModelMeta:
    """The sidecar of `fp32`, refused in one line unless it is a qbert FP32 export — and, where `model` has a sidecar
    of its own, the export `model` was quantized from."""
    ref = load_meta(fp32)
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


def outputs_of(model: str | Path) -> dict[str, int | None]:
    """Each output's name and last dimension (None where dynamic), from the file: an ONNX or an OpenVINO IR."""
    if str(model).endswith(".xml"):
        from qbert.ov_session import read_model

        out = {}
        for o in read_model(model).outputs:
            last = o.get_partial_shape()[-1] if o.get_partial_shape().rank.is_static else None
            out[o.get_any_name()] = last.get_length() if last is not None and last.is_static else None
        return out
    from qbert.artifacts import load_onnx

    out = {}
    for o in load_onnx(model).graph.output:
        dims = o.type.tensor_type.shape.dim
        out[o.name] = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    return out


def check_borrowed(model: str | Path, fp32: str | Path, ref: ModelMeta) -> None:
    """A model without a sidecar scored as `fp32`'s quantization must compute what that export computes: its
    output by name and width (logits over the export's labels, or embeddings of its width) — else it is another
    model, and its argmax or neighbours would be scored as nonsense."""
    name, width = ("embeddings", ref.dim) if ref.task == "embedding" else ("logits", len(ref.label2id))
    outs = outputs_of(model)
    if name not in outs or (outs[name] is not None and width is not None and outs[name] != width):
        got = ", ".join(f"{k} [{v if v is not None else '?'}]" for k, v in outs.items())
        raise ConfigError("fp32", str(fp32), f"computes {name} [{width}], {model} computes {got}: not a quantization "
                          "of that export")


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
