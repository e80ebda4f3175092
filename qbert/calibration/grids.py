"""Asymmetric activation grids: each per-tensor site quantized over [lo, hi], the part of its clip range
[-amax, amax] that the calibration data reached, instead of over the whole symmetric range.

Why: many quantized tensors are one-sided. A GELU output lies in [-0.17, amax], a softmax output in [0, 1]; on a
symmetric grid half of the 255 levels (everything below -0.17) are never used, so the step is twice what the
tensor needs. UINT8 with a zero point takes any [lo, hi] at the same kernel cost on ONNX Runtime's U8S8 path and on
OpenVINO's FullyConnected, so the grid costs no speed; TensorRT runs symmetric INT8 only (targets.py says which
target takes grids on which sites). The clip value each method chose stays the bound: a grid never reaches further
than [-amax, amax], so percentile, MSE and entropy keep their clipping, and only the unreached side is dropped.

A smoothed site (SmoothQuant, PEG groups `auto` GEMM inputs) is quantized as x/m: its ends are the extremes over
channels of each channel's observed min and max divided by that channel's m. PEG group sites (K slices, each with
its own scale) keep symmetric grids.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from qbert.calibration.clips import TINY
from qbert.calibration.site_scale import SiteScale


# How to get a recipe TensorRT can run from one with grids (emission and the TensorRT build both refuse them):
# the message's mentions, named as QbertError takes them.
FOR_TENSORRT = "calibrate anew for TensorRT ({method=} {target=}, or a fixed method without {asymmetric})"
FOR_TENSORRT_MENTIONS = {"method": "auto", "target": "trt", "asymmetric": True}


def grid_of(scale: SiteScale, stats: Any) -> list[float] | None:
    """[lo, hi] for one site, or None where it keeps the symmetric grid (PEG groups; nothing observed)."""
    if scale.bounds is not None and scale.smooth is None:
        return None
    if scale.smooth is not None:
        if stats.channel_min is None or stats.channel_max is None:
            return None
        m = np.asarray(scale.smooth, dtype=np.float64)
        lo, hi = float((stats.channel_min / m).min()), float((stats.channel_max / m).max())
    else:
        lo, hi = float(stats.vmin), float(stats.vmax)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    amax = float(scale.amax)
    lo, hi = min(max(lo, -amax), 0.0), max(min(hi, amax), 0.0)  # zero stays exact on the grid (padding, ReLU)
    if (hi - lo) / 255.0 < TINY:  # a (near-)constant tensor: the symmetric grid's floor scale is the safe one
        return None
    return [lo, hi]


def with_grids(sites: Mapping[str, SiteScale], stats: Mapping[str, Any]) -> dict[str, SiteScale]:
    """The sites with an asymmetric grid on each that takes one (see the module docstring)."""
    return {k: replace(s, grid=grid_of(s, stats[k]) if k in stats else None) for k, s in sites.items()}


def qparams(grid: list[float]) -> tuple[float, int]:
    """(scale, UINT8 zero point) of a grid: 255 steps over [lo, hi], zero exactly on a level."""
    lo, hi = grid
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(round(-lo / scale), 0, 255))
