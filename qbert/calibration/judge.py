"""How qbert judges a quantized model against FP32 on held-out calibration rows — shared by method `auto` and
`auto_fp16`, so "within budget" means the same thing in both.

A point estimate of the accuracy drop on a few hundred rows is mostly noise: with 3 % of predictions flipped the
standard error of the paired difference on 1,000 rows is ≈ 0.5 pt, on 256 rows ≈ 1.1 pt. So a setting is within
a budget only if the drop's one-sided 95 % upper confidence bound is: drop + 1.645 · SE ≤ budget.

A classifier is judged by accuracy on labelled rows (`judged`). A sentence-embedding model needs no labels: it is
judged by how many of FP32's ten nearest neighbours each held-out sentence keeps among the held-out sentences
(`judged_embeddings`; the drop is the share lost, in points, under the same 95 % rule), and its "flips" are the
sentences whose nearest neighbour changed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CONFIDENCE_Z = 1.645  # one-sided 95 % bound on an accuracy drop
NEIGHBOURS = 10  # an embedding model keeps FP32's top-10 neighbours: the criterion's k
AUTO_BUDGET = 0.3  # method auto: accuracy points below FP32 on the held-out rows (bound)
FP16_BUDGET = 0.5  # auto mixed precision: the same
EMBEDDING_BUDGET = 2.0  # points of FP32's top-10 neighbours an embedding model may lose (bound): ≥ 98 % kept

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


def judged_embeddings(emb: np.ndarray, fp_emb: np.ndarray, budget: float) -> dict[str, Any]:
    """FP32's top-10 neighbours kept (the score), sentences whose nearest neighbour changed (the flips), cosine to
    FP32, and the share of neighbours lost with its bound; `within_budget` by the bound."""
    from qbert.similarity import cosines, kept_each

    kept = kept_each(emb, emb, fp_emb, fp_emb, NEIGHBOURS, exclude_self=True)
    first = kept_each(emb, emb, fp_emb, fp_emb, 1, exclude_self=True)
    cos = cosines(emb, fp_emb)
    row: dict[str, Any] = {"top10_kept": float(kept.mean()), "flips": float(1.0 - first.mean()),
                           "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    row["drop_points"], row["se_points"], row["drop_bound_points"] = drop_bound(np.ones_like(kept), kept)
    row["delta_points"] = 0.0 - row["drop_points"]
    row["within_budget"] = row["drop_bound_points"] <= budget + 1e-9
    return row


def divergence(out: np.ndarray, fp_out: np.ndarray) -> float:
    """Mean KL divergence (nats per row) of a classifier's class probabilities from FP32's, KL(FP32 ‖ quantized):
    how far quantization moved every row's prediction, flipped or not (unfaithfulness says why it ranks)."""
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        lp, lq = log_softmax(fp_out), log_softmax(out)
        p = np.exp(lp)
        kl = np.maximum(np.where(p > 0, p * (lp - lq), 0.0).sum(-1), 0.0).mean()
    # a NaN or infinite output is as unfaithful as it gets: ranked last, never first by a comparison that is false
    return float(kl) if np.isfinite(kl) else float("inf")


def unfaithfulness(row: dict[str, Any]) -> float:
    """What method auto ranks equally fast candidates by, and all of them when none is within the budget
    (select.pick). Label-free, so it carries over to other data better than a held-out accuracy difference.
    A classifier: the divergence of its class probabilities from FP32's (`divergence`), not the count of flipped
    predictions it stands for: good candidates flip a few rows in a thousand, so between two of them the flip
    count differs by a row or two — a coin toss — while the divergence moves with every row's shift towards the
    decision boundary, flipped or not, and ranks them by the flips they will make on other rows. An embedding
    model: the FP32 neighbours lost, its criterion itself, which needs no labels either and is the steadier count:
    ten neighbours per sentence against one nearest (all-MiniLM-L6-v2, 1,000 held-out sentences: standard error
    ≈ 0.15 pt for neighbours kept, ≈ 0.7 pt for nearest neighbours changed at a 5 % rate)."""
    return row["drop_points"] if "top10_kept" in row else row["divergence"]


def criterion(labels: Any) -> str:
    """What a search judges by: accuracy where there are labels, FP32-neighbour agreement where there are none
    (an embedding model)."""
    return "accuracy" if labels is not None else f"FP32 top-{NEIGHBOURS} neighbours kept"


def judge_against(out: np.ndarray, fp_out: np.ndarray, labels: Any, budget: float) -> dict[str, Any]:
    """A candidate's outputs on the held-out rows, judged by the criterion: logits with labels, else embeddings."""
    if labels is None:
        return judged_embeddings(out, fp_out, budget)
    return {**judged(out.argmax(-1), fp_out.argmax(-1), np.asarray(labels), budget),
            "divergence": divergence(out, fp_out)}


def score_of(row: dict[str, Any]) -> float:
    """The criterion's score of a judged row (accuracy, or top-10 neighbours kept)."""
    return row["accuracy"] if "accuracy" in row else row["top10_kept"]
