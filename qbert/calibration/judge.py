"""How qbert judges a quantized model against FP32 on held-out labelled rows — shared by method `auto` and
`auto_fp16`, so "within budget" means the same thing in both.

A point estimate of the accuracy drop on a few hundred rows is mostly noise: with 3 % of predictions flipped the
standard error of the paired difference on 1,000 rows is ≈ 0.5 pt, on 256 rows ≈ 1.1 pt. So a setting is within
a budget only if the drop's one-sided 95 % upper confidence bound is: drop + 1.645 · SE ≤ budget.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CONFIDENCE_Z = 1.645  # one-sided 95 % bound on an accuracy drop

# One sign for every accuracy change qbert prints or saves: Δ = quantized − FP32, in accuracy points, so a loss is
# negative (−1.20 reads as "1.2 points worse"). Tables label it DELTA; JSON keys holding it end in `delta_points`.
# The budget rule is about the drop (FP32 − quantized, positive = worse): its bound keeps the name "drop bound".
DELTA = "Δ vs FP32 pt"


def delta_text(points: float, digits: int = 2) -> str:
    """Δ (quantized − FP32, points) with its sign: +0.30 better, −1.20 worse."""
    return f"{round(points, digits) + 0.0:+.{digits}f}"  # + 0.0: never "-0.00"


def drop_bound(fp_right: np.ndarray, q_right: np.ndarray, z: float = CONFIDENCE_Z) -> tuple[float, float, float]:
    """(drop, standard error, upper bound), in accuracy points, of a paired comparison on the same rows."""
    d = fp_right.astype(np.float64) - q_right.astype(np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return 100 * float(d.mean()), 100 * se, 100 * (float(d.mean()) + z * se)


def judged(pred: np.ndarray, fp_pred: np.ndarray, labels: np.ndarray, budget: float) -> dict[str, Any]:
    """Held-out accuracy, flips vs FP32 and the drop with its bound; `within_budget` by the bound."""
    row: dict[str, Any] = {"accuracy": float((pred == labels).mean()), "flips": float((pred != fp_pred).mean())}
    row["drop_points"], row["se_points"], row["drop_bound_points"] = drop_bound(fp_pred == labels, pred == labels)
    row["delta_points"] = 0.0 - row["drop_points"]
    row["within_budget"] = row["drop_bound_points"] <= budget + 1e-9
    return row
