"""Outlier statistics of activations (definitions as in the study's notes, §5), from streamed TensorStats.

- Pearson kurtosis E[(x−μ)⁴]/Var(x)² (Gaussian = 3), population variance, over all (unpadded) elements.
- Top-1 % element energy: share of Σx² held by the largest 1 % of |x| (from the |x| histogram's energy).
- Top-1 % channel energy: share of Σ_c E_c held by the ⌈0.01·d⌉ channels with most energy E_c = Σ_tokens x².
- max/σ and the dominant channels (largest energy, in descending order).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from qbert.calibration.observe import TensorStats


def pearson_kurtosis(moments: np.ndarray, n: int) -> float:
    """From raw sums Σx, Σx², Σx³, Σx⁴ over n elements."""
    if n == 0:
        return float("nan")
    m1, m2, m3, m4 = (moments / n).tolist()
    var = m2 - m1 * m1
    if var <= 0:
        return float("nan")
    central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1 ** 4
    return central4 / (var * var)


def top_element_energy(st: TensorStats, share: float = 0.01) -> float:
    h = st.hist
    if h is None or h.energy is None or h.counts.sum() == 0:
        return float("nan")
    total_n, total_e = h.counts.sum(), h.energy.sum()
    from_top_n = np.cumsum(h.counts[::-1])
    k = int(np.searchsorted(from_top_n, share * total_n))  # bins (from the top) holding the top `share`
    return float(h.energy[::-1][: k + 1].sum() / total_e) if total_e else float("nan")


def top_channel_energy(st: TensorStats, share: float = 0.01) -> float:
    e = st.channel_energy
    if e is None or e.sum() == 0:
        return float("nan")
    k = max(1, math.ceil(share * len(e)))
    return float(np.sort(e)[::-1][:k].sum() / e.sum())


def summarize(st: TensorStats, top_channels: int = 5) -> dict[str, Any]:
    n = st.count
    mean = st.moments[0] / n if n else float("nan")
    std = math.sqrt(max(st.moments[1] / n - mean * mean, 0.0)) if n else float("nan")
    out = {"kurtosis": pearson_kurtosis(st.moments, n), "top1pct_element_energy": top_element_energy(st),
           "top1pct_channel_energy": top_channel_energy(st), "max_over_std": st.amax / std if std else float("nan"),
           "amax": st.amax, "std": std, "elements": n}
    if st.channel_energy is not None:
        out["dominant_channels"] = [int(c) for c in np.argsort(st.channel_energy)[::-1][:top_channels]]
    return out
