"""What a TensorRT plan runs in INT8: the census read from its engine inspector's layer information."""
from __future__ import annotations

import json
from typing import Any

import numpy as np


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
