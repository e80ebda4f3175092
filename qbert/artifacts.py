"""Opening qbert artefacts (ONNX + sidecar) with checks that turn bad files into one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from qbert.atomic import read_json, sha256_onnx, sidecar_path
from qbert.errors import QbertError
from qbert.data import INPUT_NAMES


def load_onnx(path: Path | str, expect: str | None = None) -> Any:
    """Load and sanity-check an ONNX model; `expect` = "fp32" or "qdq" rejects the other kind."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise QbertError(f"ONNX file {path} not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise QbertError(f"{path} is not a readable ONNX model ({e.__class__.__name__}); "
                         "re-run qbert export") from None
    if not model.graph.node:
        raise QbertError(f"{path} is not a readable ONNX model (no graph nodes); re-run qbert export")
    inputs = {i.name for i in model.graph.input}
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing:
        raise QbertError(f"{path} lacks inputs {missing}; export it with `qbert export`")
    is_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if expect == "fp32" and is_qdq:
        raise QbertError(f"{path} is already quantized (has QuantizeLinear); pass the FP32 ONNX from qbert export")
    if expect == "qdq" and not is_qdq:
        raise QbertError(f"{path} has no Q/DQ nodes; run qbert calibrate first")
    return model


def load_meta(onnx_path: Path | str, verify: bool = True) -> dict[str, Any]:
    """The sidecar JSON written next to every ONNX qbert produces; with `verify`, the ONNX (and its external
    data) must still be the file the sidecar describes."""
    if not Path(onnx_path).is_file():
        raise QbertError(f"ONNX file {onnx_path} not found")
    side = sidecar_path(onnx_path)
    if not side.is_file():
        raise QbertError(f"no sidecar {side} next to the ONNX; produce the ONNX with `qbert export`")
    meta = read_json(side, "sidecar")
    if not isinstance(meta, dict) or meta.get("format") != "qbert-onnx":
        raise QbertError(f"{side} is not a qbert sidecar")
    if verify and meta.get("sha256") and sha256_onnx(onnx_path) != meta["sha256"]:
        raise QbertError(f"{onnx_path} does not match its sidecar {side.name} (sha256 differs): it was changed "
                         "after qbert wrote it; re-run the command that made it")
    return meta
