"""Automatic mixed precision: keep the most sensitive tensors in high precision until the quantized model is
within an accuracy budget of FP32 — measured on held-out calibration rows, never on evaluation data.

Sensitivity of a site = logit SQNR when only that site is quantized (cheap, on a small slice); sites are
then returned to high precision greedily, most sensitive first, re-measuring accuracy after each step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qbert.calibration.emit import emit
from qbert.calibration.recipe import Recipe
from qbert.machine import kernel_mode
from qbert.ort_session import logits_of, sqnr_db
from qbert.progress import progress_bar


def rank_sites(model: Any, recipe: Recipe, probe, pad_id: int, exact: bool = False) -> list[tuple[str, float]]:
    """Sites ordered most → least sensitive by the logit SQNR of quantizing each one alone."""
    fp = logits_of(model, probe, 32, pad_id)
    scores = []
    with progress_bar("sensitivity", total=len(recipe.sites)) as advance:
        for key, scale in recipe.sites.items():
            alone = Recipe(**{**recipe.__dict__, "sites": {key: scale}})
            q, _ = emit(model, alone, "ort-cpu")
            scores.append((key, sqnr_db(fp, logits_of(q, probe, 32, pad_id, exact))))
            advance(1)
    return sorted(scores, key=lambda kv: kv[1])


def auto_fallback(model: Any, recipe: Recipe, heldout, labels: np.ndarray, budget: float, pad_id: int,
                  max_steps: int = 32, probe_rows: int = 64, exact: bool = False) -> tuple[Recipe, dict[str, Any]]:
    """Return the recipe with `fallback` extended until accuracy(FP32) − accuracy(quantized) ≤ budget points;
    `exact`: judge with ORT's non-saturating x86 INT8 kernels (ort_session.logits_of)."""
    probe = heldout.subset(range(min(probe_rows, len(heldout))))
    ranking = rank_sites(model, recipe, probe, pad_id, exact)
    fp_acc = float((logits_of(model, heldout, 32, pad_id).argmax(-1) == labels).mean())

    def accuracy(r: Recipe) -> float:
        q, _ = emit(model, r, "ort-cpu")
        return float((logits_of(q, heldout, 32, pad_id, exact).argmax(-1) == labels).mean())

    current = recipe
    steps = [{"fallback": None, "accuracy": accuracy(current)}]
    for key, _ in ranking[:max_steps]:
        if fp_acc - steps[-1]["accuracy"] <= budget / 100.0:
            break
        sites = {k: v for k, v in current.sites.items() if k != key}
        current = Recipe(**{**current.__dict__, "sites": sites, "fallback": [*current.fallback, key]})
        steps.append({"fallback": key, "accuracy": accuracy(current)})
    report = {"budget_points": budget, "fp32_heldout_accuracy": fp_acc, "heldout_rows": len(heldout),
              "ranking": [{"site": k, "sqnr_db": s} for k, s in ranking], "steps": steps,
              "within_budget": fp_acc - steps[-1]["accuracy"] <= budget / 100.0, "int8_kernels": kernel_mode(exact)}
    return current, report
