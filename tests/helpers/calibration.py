"""Tests state calibration settings inline: this builds the CalibrationConfig the library's calibrate takes."""
from __future__ import annotations

from typing import Any

from qbert.calibration.calibrate import calibrate as run
from qbert.calibration.config import CalibrationConfig


def calibrate(onnx_path: Any, meta: Any, model: Any, data: Any, gemm_split: str | None = None,
              heldout_rows: int | None = None, **fields: Any):
    return run(onnx_path, meta, model, CalibrationConfig(data=data, heldout=heldout_rows, **fields),
               gemm_split=gemm_split)
