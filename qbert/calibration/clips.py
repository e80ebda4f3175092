"""Clip values from streamed statistics (pure numpy): the percentile, MSE and entropy rules the per-tensor
methods apply (methods/), the INT8 scale of a clip value, and the one weight rule (PEG's channel groups:
groups.py).

All methods are symmetric: they return an amax (clip value) and the INT8 scale is amax / 127. Nothing here
can produce an unsigned range — the study's percentile code clamped the lower bound to 0 and zeroed every
negative value; |x| histograms make that impossible by construction.
"""
from __future__ import annotations

import numpy as np

from qbert.calibration.observe import AbsHistogram
from qbert.errors import ConfigError

QMAX = 127.0
TINY = 1e-8  # floor for all-zero tensors: scale must never be 0 or NaN


def scale_of(amax: float) -> float:
    return max(float(amax), TINY) / QMAX


def int8_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A [in, out] weight as symmetric INT8 per output channel: (int8 values, scales) — the one weight rule."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-8) / QMAX
    return np.clip(np.rint(w / scale), -QMAX, QMAX).astype(np.int8), scale


def percentile_amax(hist: AbsHistogram, percentile: float) -> float:
    return percentile_clip(hist.edges, hist.counts, percentile)


def percentile_clip(edges: np.ndarray, counts: np.ndarray, percentile: float) -> float:
    """Upper edge of the bin holding the `percentile`-th |x| (any bin edges: linear or log-spaced)."""
    if not 0.0 < percentile <= 100.0:
        raise ConfigError("percentile", percentile, "must be in (0, 100]")
    total = counts.sum()
    if total == 0:
        return 0.0
    cdf = np.cumsum(counts)
    i = int(np.searchsorted(cdf, percentile / 100.0 * total, side="left"))
    return float(edges[min(i, len(counts) - 1) + 1])


def mse_amax(hist: AbsHistogram, candidates: int = 512) -> float:
    return mse_clip(hist.edges, hist.counts, candidates)


def mse_clip(edges: np.ndarray, counts: np.ndarray, candidates: int = 512) -> float:
    """Clip value minimising the expected squared error: rounding noise (s²/12) below it, clipping above."""
    counts = counts.astype(np.float64)
    if counts.sum() == 0:
        return 0.0
    centers = (edges[:-1] + edges[1:]) / 2
    last = int(np.nonzero(counts)[0][-1]) + 1
    clips = edges[1:last + 1][np.unique(np.linspace(0, last - 1, min(candidates, last)).astype(int))]
    c_n, c_m, c_m2 = (np.cumsum(counts), np.cumsum(counts * centers), np.cumsum(counts * centers ** 2))
    tot_n, tot_m, tot_m2 = c_n[-1], c_m[-1], c_m2[-1]
    idx = np.searchsorted(centers, clips, side="left")  # bins with center < clip are inside
    inside = np.where(idx > 0, c_n[np.maximum(idx - 1, 0)], 0.0)
    in_m = np.where(idx > 0, c_m[np.maximum(idx - 1, 0)], 0.0)
    in_m2 = np.where(idx > 0, c_m2[np.maximum(idx - 1, 0)], 0.0)
    out_n, out_m, out_m2 = tot_n - inside, tot_m - in_m, tot_m2 - in_m2
    err = inside * (clips / QMAX) ** 2 / 12.0 + (out_m2 - 2 * clips * out_m + clips ** 2 * out_n)
    return float(clips[int(np.argmin(err))])


def entropy_amax(hist: AbsHistogram, target_bins: int = 128, max_bins: int = 2048) -> float:
    """TensorRT's KL-divergence calibration on the |x| histogram (reduced to ≤ 2048 bins)."""
    counts = hist.counts.astype(np.float64)
    factor = max(1, hist.bins // max_bins)
    counts = counts.reshape(-1, factor).sum(1)
    width = hist.range / len(counts)
    if counts.sum() == 0:
        return 0.0
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= target_bins:
        return float(last * width)
    best_i, best_kl = last, np.inf
    for i in range(target_bins, last + 1, max(1, (last - target_bins) // 512)):
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()
        src = counts[:i]
        starts = (np.arange(target_bins) * i) // target_bins
        chunk = np.repeat(np.arange(target_bins), np.diff(np.append(starts, i)))
        nz = src > 0
        sums, nzc = np.add.reduceat(src, starts), np.add.reduceat(nz.astype(np.float64), starts)
        q = np.where(nz, sums[chunk] / np.maximum(nzc[chunk], 1), 0.0)
        valid = p > 0
        if (q[valid] == 0).any():
            continue
        pn, qn = p[valid] / p.sum(), q[valid] / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(best_i * width)
