"""Bias correction (Nagel et al., 2019): INT8 weights shift each GEMM's expected output by E[x]·(W_q − W);
subtracting that from the bias restores the mean. Computed in the FP32 graph's own channel order from the
observed per-channel mean of each quantized GEMM input (Observer(channel_sums=True)), before emission (which quantizes the weights by the same
rule, methods.int8_per_channel), so any later permutation moves the corrected bias with its columns.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qbert.calibration.clips import int8_per_channel
from qbert.calibration.peg import Initializers
from qbert.exporter.graph import parse


def bias_shifts(model: Any, stats: dict[str, Any], sites: list[Any]) -> dict[str, list[float]]:
    """Per quantized linear (by name): the amount to subtract from its bias, −E[x]·(W_q − W) negated."""
    graph = parse(model)
    inits = Initializers(model)
    linears = {l.name: l for l in graph.linears()}
    out: dict[str, list[float]] = {}
    for site in sites:
        st = stats.get(site.key)
        if st is None or st.channel_sum is None or not st.tokens:
            continue
        mean = st.channel_sum / st.tokens
        for name in site.gemm_inputs or []:
            w = inits.get(linears[name].weight).astype(np.float64)
            q, scale = int8_per_channel(w.astype(np.float32))
            out[name] = (mean @ (q.astype(np.float64) * scale - w)).tolist()
    return out


def apply_bias_shifts(model: Any, shifts: dict[str, list[float]]) -> None:
    """Subtract each linear's shift from its bias, in place (copy-on-write for shared biases)."""
    graph = parse(model)
    inits = Initializers(model)
    for lin in graph.linears():
        if lin.name not in shifts:
            continue
        idx = list(lin.bias_node.input).index(lin.bias)
        delta = np.asarray(shifts[lin.name], dtype=np.float64)
        inits.replace_input(lin.bias_node, idx, lambda b, d=delta: (b.astype(np.float64) - d).astype(b.dtype),
                            f".biascorr.{lin.name}")
