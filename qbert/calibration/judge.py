"""How qbert judges a quantized model against FP32 on held-out labelled rows — shared by `--method auto` and
`--auto-fp16`, so "within budget" means the same thing in both.

A point estimate of the accuracy drop on a few hundred rows is mostly noise: with 3 % of predictions flipped the
standard error of the paired difference on 1,000 rows is ≈ 0.5 pt, on 256 rows ≈ 1.1 pt. So a setting is within
a budget only if the drop's one-sided 95 % upper confidence bound is: drop + 1.645 · SE ≤ budget.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CONFIDENCE_Z = 1.645  # one-sided 95 % bound on an accuracy drop


def drop_bound(fp_right: np.ndarray, q_right: np.ndarray, z: float = CONFIDENCE_Z) -> tuple[float, float, float]:
    """(drop, standard error, upper bound), in accuracy points, of a paired comparison on the same rows."""
    d = fp_right.astype(np.float64) - q_right.astype(np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return 100 * float(d.mean()), 100 * se, 100 * (float(d.mean()) + z * se)


def judged(pred: np.ndarray, fp_pred: np.ndarray, labels: np.ndarray, budget: float) -> dict[str, Any]:
    """Held-out accuracy, flips vs FP32 and the drop with its bound; `within_budget` by the bound."""
    row: dict[str, Any] = {"accuracy": float((pred == labels).mean()), "flips": float((pred != fp_pred).mean())}
    row["drop_points"], row["se_points"], row["drop_bound_points"] = drop_bound(fp_pred == labels, pred == labels)
    row["within_budget"] = row["drop_bound_points"] <= budget + 1e-9
    return row
