"""mse: the clip value minimising the expected squared error of each tensor — rounding noise below it, clipping
above it (clips.mse_clip)."""
from __future__ import annotations

from typing import Any

from qbert.calibration import clips as C
from qbert.calibration.methods.base import PerTensor, Settings


class Mse(PerTensor):
    name = "mse"
    histograms = True

    def clip(self, stats: Any, settings: Settings) -> float | None:
        return C.mse_amax(stats.hist) if stats.hist is not None else None
