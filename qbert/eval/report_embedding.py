"""report.md for `qbert.reproduce` on a sentence-embedding model: the study's rows scored by retrieval and by
agreement with FP32 instead of accuracy, and the study's claims asked again in those terms."""
from __future__ import annotations

from typing import Any

from qbert.calibration.judge import delta_text
from qbert.calibration.targets import TARGETS
from qbert.eval.report import NEAR_FP32_PT, _find, header, latency_section, outlier_section

SEEDS = "seed_recall@1"  # an embedding row's recall@1 per calibration seed (seed 0: the deployed model)


def recall(r: dict | None) -> float | None:
    """recall@1 over calibration seeds (INT8 rows), else the one measurement."""
    if r is None or not r.get("retrieval"):
        return None
    values = r.get(SEEDS) or [r["retrieval"]["recall@1"]]
    return sum(values) / len(values)


def _recall_text(r: dict) -> str:
    values = r.get(SEEDS) or [r["retrieval"]["recall@1"]]
    text = f"{100 * recall(r):.2f}%"
    return text + (f" ({100 * min(values):.2f}–{100 * max(values):.2f})" if len(values) > 1 else "")


def _name(r: dict) -> str:
    """A row's name; the searches' names state the classifier's accuracy budget, so theirs say what judged here."""
    search = r.get("auto_method") or r.get("auto_fp16")
    if not search:
        return r["name"]
    what = "Method auto" if r.get("auto_method") else "Auto mixed precision"
    return f"{what} (FP32 top-10 neighbours kept, budget {search['budget_points']:g} pt)"


def _agreement(r: dict) -> tuple[str, str]:
    a = r.get("agreement")
    if r["kind"] == "fp32":
        return "1", "100%"
    if not a:
        return "—", "—"
    return f"{a['mean_cosine']:.4f} / {a['worst_cosine']:.4f}", f"{100 * a['top10_kept']:.1f}%"


def claims(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(the study's claim, asked of retrieval, measured here, verdict)."""
    fp, naive = _find(rows, "FP32"), _find(rows, "W8A8 minmax, placement full")
    out = []
    if fp and naive and recall(fp) is not None:
        drop = 100 * (recall(naive) - recall(fp))
        kept = _agreement(naive)[1]
        verdict = "collapses" if drop < -NEAR_FP32_PT else "holds up"
        out.append(("Naive W8A8 (every tensor INT8, per-tensor minmax) collapses",
                    f"recall@1 {delta_text(drop)} pt, FP32 top-10 neighbours kept {kept}",
                    f"retrieval {verdict} (≈ FP32 = within {NEAR_FP32_PT:g} pt of recall@1)"))
    for name, label in (("PEG K=4 permuted", "PEG K=4 (permuted) recovers it"),
                        ("Mixed precision", "Keeping x, h, y in high precision recovers it"),
                        ("SmoothQuant", "SmoothQuant (GEMM inputs) recovers it")):
        r = _find(rows, name)
        if fp and r and recall(r) is not None:
            drop = 100 * (recall(r) - recall(fp))
            out.append((label, f"recall@1 {delta_text(drop)} pt, FP32 top-10 neighbours kept {_agreement(r)[1]}",
                        "≈ FP32" if drop >= -NEAR_FP32_PT else "does not reach FP32"))
    return out


def render_embedding_report(report: dict[str, Any], plots: bool = True) -> str:
    """The report as markdown, from report.json's content alone (a saved report renders again)."""
    rows = report["rows"]
    fp = _find(rows, "FP32")
    lines = [*header(report, "# qbert reproduction report (sentence embeddings)", "sentences"),
             "## Retrieval and agreement with FP32", "",
             "Retrieval: the questions of the evaluation data's entailment rows query every distinct passage by "
             "cosine similarity. Agreement: each row's embeddings of every sentence against its FP32 export's — "
             "mean / worst cosine, and the share of FP32's top-10 neighbours kept. INT8 rows are calibrated with "
             f"{report.get('seeds', 1)} seed(s): recall@1 is their mean (lowest–highest); agreement, census and "
             "latency are seed 0's, the deployed model.", "",
             "| setting | recall@1 | Δ recall@1 pt | MRR@10 | nDCG@10 | cosine vs FP32 mean / worst | FP32 top-10 "
             "kept | activations / high precision | integer / float GEMMs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ret = r.get("retrieval") or {}
        delta = delta_text(100 * (recall(r) - recall(fp))) if fp and ret else "—"
        cos, kept = _agreement(r)
        act = {"fp32": "FP32", "fp16": "FP16"}.get(r["kind"]) or TARGETS[r["target"]].activation_label
        c = r["census"]
        lines.append(f"| {_name(r)} | {_recall_text(r) if ret else '—'} | {delta} | "
                     f"{ret.get('mrr@10', float('nan')):.4f} | {ret.get('ndcg@10', float('nan')):.4f} | {cos} | "
                     f"{kept} | {act} / {r['high_precision'].upper()} | {c['integer_gemms']} / {c['float_gemms']} |")
    chooser = _find(rows, "Method auto")
    if chooser and chooser.get("auto_method"):
        am = chooser["auto_method"]
        lines += ["", f"Method auto chose **{chooser['chosen']}** for seed 0, judged on {am['heldout_rows']} "
                  f"held-out calibration sentences by {am.get('criterion', 'FP32 top-10 neighbours kept')} (budget "
                  f"{am['budget_points']} pt on the drop's one-sided 95 % upper bound"
                  + ("" if am["within_budget"] else "; no candidate was within it, so "
                     + ("the most FP32 neighbours kept" if "neighbours kept" in am.get("rule", "") else
                        "the fewest changed nearest neighbours")  # the rule the run recorded
                     + " decided") + ")."]
    lines += latency_section(report, rows, fp, _name)
    lines += outlier_section(report["analysis"], plots, "Δ FP32 top-10 neighbours kept pt")
    lines += ["", "## The study's claims, asked of retrieval", "",
              "| claim | measured here | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in claims(rows)]
    lines += ["", f"Versions: {report.get('versions')}", ""]
    return "\n".join(lines)
