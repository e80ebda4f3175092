"""One quantized tensor's scales in a recipe: what every method produces and emission reads (its own module so
the methods and the recipe both read it without importing each other)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SiteScale:
    tensor: str
    amax: float  # per-tensor clip value (for PEG sites: the largest group amax)
    group_amax: list[float] | None = None  # PEG: one clip value per contiguous group (in permuted order)
    bounds: list[list[int]] | None = None  # PEG: [start, end) of each group along the channel axis
    smooth: list[float] | None = None  # per-channel divisor m the GEMMs read x/m with (m·W in the weights):
    # SmoothQuant, or a PEG groups `auto` GEMM input (its non-GEMM readers, if any, keep group_amax/bounds)
    grid: list[float] | None = None  # asymmetric activations: [lo, hi] of the quantized tensor (x/m where
    # smoothed), lo ≤ 0 ≤ hi, within [-amax, amax]; 255 steps over it instead of 254 over [-amax, amax] (grids.py)
    outliers: list[int] | None = None  # channels (ascending) its GEMMs read in high precision, beside the INT8
    # GEMM over the rest: their weight rows are zero in INT8 and the clip leaves them out (outliers.py)
