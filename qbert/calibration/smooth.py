"""SmoothQuant (Xiao et al., 2023) on the `gemm` placement: per-channel factors m move a GEMM input's outlier
range into that GEMM's weight rows, x·W = (x/m)·(m·W), so one per-tensor INT8 scale fits the smoothed input —
no extra GEMMs (PEG's price) and no clipping of the outlier channels (MSE's).

m_c = max|x_c|^α / max|W_c,:|^(1−α), the weight maximum over every GEMM that reads x (Q, K and V share one m).
m·W is folded into the weights before their per-output-channel INT8 quantization. x/m runs as one per-channel Mul
before the Q/DQ: BERT is post-LN, so the LayerNorm output is also the residual branch — folding 1/m into γ/β
would only move that Mul onto the residual path. The per-tensor clip of the smoothed input is max_c(max|x_c| / m_c),
exact from the observed channel maxima (no second observation).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from qbert.calibration import clips as C
from qbert.calibration.peg import Initializers
from qbert.calibration.site_scale import SiteScale
from qbert.exporter.graph import BertGraph

# The paper's default α = 0.5 fails on BERT's FFN2 inputs: the neurons that write the residual outliers have large
# activations *and* large weight rows, so balancing gives them a smoothed range wider than no smoothing, and every
# other channel's noise is multiplied by its m on the way out (fixture, gemm placement, held-out tune rows, 3 seeds:
# 27.7 % flips at 0.5, 3.3 % at 0.6, 1.5 % at 0.75, 1.4 % at 0.85; the unseen model 34.7 / 7.3 / 3.4 / 2.9 %;
# per-tensor minmax 2.5 / 4.4 %). `benchmarks/peg_groups.py --placement gemm` reruns this.
ALPHA = 0.85
LIMIT = 2.0 ** 14  # |log2 m| ≤ 14: m and 1/m stay normal FP16 numbers (TensorRT runs the Mul in FP16)


def weight_rows(graph: BertGraph, sites: list[Any]) -> dict[str, np.ndarray]:
    """Per GEMM-input site: max |W| of each input row over every GEMM that reads it (taken before the observer
    may consume the model's weights)."""
    linears = {l.name: l for l in graph.linears()}
    inits = Initializers(graph.model)
    out = {}
    for site in sites:
        if site.gemm_inputs:
            out[site.key] = np.max([np.abs(inits.get(linears[n].weight)).max(axis=1) for n in site.gemm_inputs],
                                   axis=0).astype(np.float64)
    return out


def unshared(graph: BertGraph, rows: dict[str, np.ndarray], sites: list[Any]) -> dict[str, np.ndarray]:
    """`rows` without the sites whose GEMMs share their weights with other linears (ALBERT: one layer's weights
    across depth). PEG auto smooths a site by rewriting its GEMMs' weights; a per-site m would give every layer
    its own copy of a shared weight, so those sites keep PEG's split (which keeps one copy)."""
    linears = {l.name: l for l in graph.linears()}
    readers = Counter(l.weight for l in linears.values())
    return {s.key: rows[s.key] for s in sites if s.key in rows
            and all(readers[linears[n].weight] == 1 for n in s.gemm_inputs)}


def factors(channel_amax: np.ndarray, row_max: np.ndarray, alpha: float) -> np.ndarray:
    """m per channel; 1 where the channel or its weight row is all zero (nothing to balance)."""
    a, w = np.asarray(channel_amax, np.float64), np.asarray(row_max, np.float64)
    live = (a > 0) & (w > 0)
    m = np.ones_like(a)
    m[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
    return np.clip(m, 1.0 / LIMIT, LIMIT)


def smooth_scales(scales: dict[str, SiteScale], sites: list[Any], stats: dict[str, Any],
                  rows: dict[str, np.ndarray], alpha: float) -> dict[str, SiteScale]:
    """`scales` with every GEMM-input site smoothed: its factors and the smoothed tensor's per-tensor clip."""
    out = dict(scales)
    for site in sites:
        st = stats.get(site.key)
        if site.key not in rows or site.key not in scales or st is None or st.channel_amax is None:
            continue
        m = factors(st.channel_amax, rows[site.key], alpha)
        clip = max(float((np.asarray(st.channel_amax, np.float64) / m).max()), C.TINY)
        out[site.key] = SiteScale(site.tensor, clip, smooth=[float(v) for v in m])
    return out
