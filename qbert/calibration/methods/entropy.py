"""entropy: TensorRT's KL-divergence calibration on each tensor's |x| histogram (clips.entropy_amax)."""
from __future__ import annotations

from typing import Any

from qbert.calibration import clips as C
from qbert.calibration.methods.base import PerTensor, Settings


class Entropy(PerTensor):
    name = "entropy"
    histograms = True

    def clip(self, stats: Any, settings: Settings) -> float | None:
        return C.entropy_amax(stats.hist) if stats.hist is not None else None
