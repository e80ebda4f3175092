"""minmax: each tensor's observed max |x| — every outlier fits, at the price of resolution for everything else
(the study's naive W8A8 under the `full` placement)."""
from __future__ import annotations

from qbert.calibration.methods.base import PerTensor


class MinMax(PerTensor):
    name = "minmax"
