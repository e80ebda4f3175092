"""report.md + report.json for `qbert.reproduce`: tables, plots and the study's claims side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from qbert.atomic import atomic_path, write_json
from qbert.calibration.judge import DELTA, delta_text
from qbert.calibration.targets import TARGETS
from qbert.timing import SETTLE_S


NEAR_FP32_PT = 1.0  # "≈ FP32" in a verdict: within this many accuracy points; printed in the report


def _bound(report: dict[str, Any]) -> str:
    """The last step's drop bound against the budget (reports written before the bound rule have none)."""
    last = report["steps"][-1]
    if "drop_bound_points" not in last:
        return ""
    verdict = "within" if report["within_budget"] else "not within"
    return (f"; {DELTA} {delta_text(0.0 - last['drop_points'])}, the drop's 95 % upper bound "
            f"{last['drop_bound_points']:.2f} pt: {verdict} the {report['budget_points']} pt budget")


def _find(rows: list[dict], prefix: str) -> dict | None:
    return next((r for r in rows if r["name"].startswith(prefix)), None)


def _acc(r: dict) -> float:
    """Accuracy over calibration seeds (INT8 rows), else the one measurement."""
    accs = r.get("seed_accuracies") or [r["accuracy"]]
    return sum(accs) / len(accs)


def _pct(r: dict | None, spread: bool = False) -> str:
    if r is None:
        return "—"
    accs = r.get("seed_accuracies") or [r["accuracy"]]
    text = f"{100 * _acc(r):.2f}%"
    if spread and len(accs) > 1:
        text += f" ({100 * min(accs):.2f}–{100 * max(accs):.2f})"
    return text


def _flip_rate(r: dict, fp: dict) -> float:
    """Share of evaluation rows whose prediction differs from FP32's (seed 0's model)."""
    return sum(a != b for a, b in zip(r["predictions"], fp["predictions"])) / len(r["predictions"])


def paired_se(r: dict, fp: dict) -> float:
    """Points: the SE of seed 0's Δ vs FP32 on these evaluation rows — the paired per-row differences d ∈ {−1, 0, 1}
    have mean(d²) ≤ the flip rate (= it, with two labels), so SE ≤ √((flips − Δ²) / n). A Δ within ≈ 2 SE of 0 is
    not resolved by these rows, whatever the table's second decimal says."""
    n, flips = len(r["predictions"]), _flip_rate(r, fp)
    d0 = (r.get("seed_accuracies") or [r["accuracy"]])[0] - (fp.get("seed_accuracies") or [fp["accuracy"]])[0]
    return 100 * max(flips - d0 * d0, 0.0) ** 0.5 / n ** 0.5


def claims(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(claim, study, measured here, verdict) for each claim of the study."""
    rows, an = report["rows"], report["analysis"]["layers"]
    fp, naive = _find(rows, "FP32"), _find(rows, "W8A8 minmax, placement full")
    mp, k3, k4 = _find(rows, "Mixed precision"), _find(rows, "PEG K=3 permuted"), _find(rows, "PEG K=4 permuted")
    pcts = [r for r in rows if r["name"].startswith("Percentile")]
    out = []
    if fp and naive:
        drop = 100 * (_acc(fp) - _acc(naive))
        out.append(("Naive W8A8 collapses (to ≈ 54 %)", "89.66 → 54.33 %", f"{_pct(fp)} → {_pct(naive)}",
                    "holds" if drop > 15 else f"does not hold (drop {drop:.1f} pt)"))
    hk = max(r["kurtosis"] for r in an["hidden_states"])
    he = max(r["top1pct_element_energy"] for r in an["hidden_states"])
    yk = max(r["kurtosis"] for r in an["y"])
    out.append(("Hidden states are heavy-tailed (kurtosis 271, top-1 % elements hold 55 % of energy)",
                "271 / 55 % (padding counted)", f"max kurtosis {hk:.0f} / {100 * he:.0f} % (padding excluded); "
                f"FFN residual sum y: kurtosis {yk:.0f}",
                "holds" if hk > 50 else "holds for the residual sums y (before LayerNorm), not for the post-LN "
                "hidden states here" if yk > 50 else "does not hold on this model"))
    if fp and mp:
        gap = 100 * (_acc(fp) - _acc(mp))
        out.append(("Mixed precision (x, h, y high precision) ≈ FP32", "89.42 vs 89.66 %", f"{_pct(mp)} vs {_pct(fp)}",
                    "holds" if gap <= NEAR_FP32_PT else f"does not hold: {gap:.2f} pt below FP32"))
    if fp and k3 and k4:  # "<" with the same tolerance as "≈": K=3 must fall short of K=4 by more than it
        gap, lead = 100 * (_acc(fp) - _acc(k4)), 100 * (_acc(k4) - _acc(k3))
        order, near = lead > NEAR_FP32_PT, gap <= NEAR_FP32_PT
        if order:
            verdict = "holds" if near else f"partly: K=3 < K=4, but K=4 is {gap:.2f} pt below FP32"
        elif near:
            verdict = (f"partly: K=4 ≈ FP32, but K=3 is not below K=4 (K=4 − K=3 = {lead:+.2f} pt, within "
                       f"{NEAR_FP32_PT:g} pt): no K=3 shortfall on this model")
        else:
            verdict = f"does not hold: K=3 is not below K=4 ({lead:+.2f} pt) and K=4 is {gap:.2f} pt below FP32"
        out.append(("PEG: K=3 < K=4 ≈ FP32", "66.12 / 86.18 %", f"{_pct(k3)} / {_pct(k4)}", verdict))
    if naive and pcts:
        best = max(pcts, key=_acc)
        gain = 100 * (_acc(best) - _acc(naive))
        out.append(("Percentile calibration does not help", "≈ 50.5 % for every p", ", ".join(
            f"{r['name'].split()[-1]}: {_pct(r)}" for r in pcts),
            "holds" if gain <= 1 else f"does not hold: {best['name']} gains {gain:.1f} pt (the study's percentile "
            "clamped its lower bound to 0, an unsigned quantizer that zeroes every negative value)"))
    if fp:
        int8 = [r for r in rows if r["kind"] == "int8"]
        if int8:
            speed = [fp["latency"]["1"]["p50_ms"] / r["latency"]["1"]["p50_ms"] for r in int8]
            size = [r["model_bytes"] / fp["model_bytes"] for r in int8]
            out.append(("No latency/memory difference between methods", "58.4–59.1 ms, ≈ 418 MiB for all",
                        f"INT8 rows {min(speed):.2f}–{max(speed):.2f}× FP32 speed at batch 1, "
                        f"{min(size):.2f}–{max(size):.2f}× FP32 size",
                        "holds" if max(speed) < 1.1 and min(size) > 0.9 else
                        "does not hold: real integer kernels change both (the study's latency rows timed an FP32 model)"))
    return out


CENSUS_OF = {"ort-cpu": "ORT census", "openvino": "OpenVINO census", "tensorrt": "TensorRT census"}


def _machine(report: dict[str, Any]) -> str:
    m = report.get("machine") or {}
    isa = ", ".join(k for k, v in (m.get("isa") or {}).items() if v) or "unknown"
    engine = report.get("engine", "ort-cpu")
    kernels = (f"ONNX Runtime INT8 kernels: {report.get('kernel_mode', 'unknown')}" if engine == "ort-cpu" else
               f"engine {engine}" + (" (f32 inference precision)" if engine == "openvino" else ""))
    return f"{m.get('cpu', 'unknown CPU')}, {m.get('logical_cores', '?')} logical cores; ISA {isa}; {kernels}"


def write_report(report: dict[str, Any], out: Path, render: Any = None) -> None:
    """report.md (the tables, by `render`: default render_report) and report.json (everything but per-row
    predictions) in `out`, together."""
    rows = report["rows"]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text((render or render_report)(report))
    slim = {**report, "rows": [{k: v for k, v in r.items() if k != "predictions"} for r in rows]}
    write_json(out / "report.json", slim)


def header(report: dict[str, Any], title: str, units: str) -> list[str]:
    """The title, the model and data it ran on (`units`: what the calibration samples are) and the machine."""
    return [title, "", f"Model `{report['model']}` · evaluation `{report['eval_data']}` · calibration "
            f"`{report['calib_data']}` ({report['samples']} {units}) · engine **{report['engine']}**", "",
            f"Machine: {_machine(report)}", ""]


def render_report(report: dict[str, Any], plots: bool = True) -> str:
    """The report as markdown, from report.json's content alone, so a saved report can be rendered again."""
    rows = report["rows"]
    fp = _find(rows, "FP32")
    lines = [*header(report, "# qbert reproduction report", "sequences"),
             "## Accuracy", "",
             f"INT8 rows are calibrated with {report.get('seeds', 1)} seed(s) (different calibration rows each): "
             "accuracy is their mean (lowest–highest); Δ = setting − FP32 in points (negative = worse), of the "
             "means; agreement, census and latency are seed 0's, the deployed model. ± SE: the standard error of seed 0's Δ on these rows (paired per row, from its "
             "flips vs FP32) — a Δ within about 2 SE of zero is not resolved by this evaluation set.", "",
             f"| setting | accuracy | {DELTA} | ± SE | agrees with FP32 | placement | activations / high precision | "
             f"integer GEMMs / float GEMMs ({CENSUS_OF.get(report.get('engine', 'ort-cpu'), 'census')}) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = f"{100 * (1 - _flip_rate(r, fp)):.1f}%" if fp else "—"  # a subset without FP32 (--only) still reports
        delta = delta_text(100 * (_acc(r) - _acc(fp))) if fp else "—"
        se = f"{paired_se(r, fp):.2f}" if fp and r is not fp else "—"
        place = r["flags"].get("placement") or (r["chosen"].split(", ")[1] if r.get("auto_method") else "—")
        act = {"fp32": "FP32", "fp16": "FP16"}.get(r["kind"]) or TARGETS[r["target"]].activation_label
        high = r["high_precision"].upper()
        if r["kind"] == "fp16" and report.get("engine") == "openvino":  # its FP16 weights run at f32 precision
            act, high = "FP16 weights", "f32 inference"
        c = r["census"]
        lines.append(f"| {r['name']} | {_pct(r, spread=True)} | {delta} | {se} | {agree} | {place} | {act} / "
                     f"{high} | {c['integer_gemms']} / {c['float_gemms']} |")
    auto = _find(rows, "Auto mixed")
    if auto and auto.get("auto_fp16"):
        lines += ["", f"Auto mixed precision kept in high precision: {', '.join(auto['fallback']) or 'nothing'} "
                  f"(held-out accuracy {100 * auto['auto_fp16']['steps'][-1]['accuracy']:.2f}% vs FP32 "
                  f"{100 * auto['auto_fp16']['fp32_heldout_accuracy']:.2f}% on "
                  f"{auto['auto_fp16']['heldout_rows']} calibration-split rows{_bound(auto['auto_fp16'])})."]
    chooser = _find(rows, "Method auto")
    if chooser and chooser.get("auto_method"):
        am = chooser["auto_method"]
        seeds = chooser.get("seed_chosen") or []
        per_seed = (f" (seeds 0–{len(seeds) - 1}: " + "; ".join(seeds) + ")") if len(seeds) > 1 else ""
        structured = any("structure" in c for c in am["candidates"])  # reports before one speed per structure: none
        lines += ["", f"Method auto chose **{chooser['chosen']}** for seed 0{per_seed} (candidate `{am['chosen']}`): held-out "
                  f"accuracy of every candidate on {am['heldout_rows']} calibration-split rows (FP32 "
                  f"{100 * am['fp32_heldout_accuracy']:.2f}%), budget {am['budget_points']} pt on the drop's one-sided 95 % upper bound "
                  f"(drop + 1.645 SE), speed = {am['speed']}; rule: {am.get('rule', 'fastest within budget')}. "
                  "Flips = held-out predictions that differ from FP32's (label-free; a drop can never exceed them); "
                  "KL = mean divergence of the class probabilities from FP32's, ×10⁻³:",
                  "", f"| candidate | held-out accuracy | {DELTA} | drop bound pt | flips | KL | speed | "
                  "within budget |" + (" graph structure: speed |" if structured else ""),
                  "|---|---|---|---|---|---|---|---|" + ("---|" if structured else "")]
        for c in am["candidates"]:
            speed = f"{c['p50_ms_b1']:.1f} ms" if "p50_ms_b1" in c else f"{c['int8_gemms']} GEMMs"
            if "p50_spread_ms_b1" in c:
                speed += " ({:.1f}–{:.1f})".format(*c["p50_spread_ms_b1"])
            bound = f"{c['drop_bound_points']:.2f}" if "drop_bound_points" in c else "—"
            flips = f"{100 * c['flips']:.1f}%" if "flips" in c else "—"  # reports written before flips were kept
            kl = f"{1e3 * c['divergence']:.3g}" if "divergence" in c else "—"  # reports before the divergence
            name = f"**{c['name']}** (chosen)" if c["name"] == am["chosen"] else c["name"]
            lines.append(f"| {name} | {100 * c['accuracy']:.2f}% | {delta_text(0.0 - c['drop_points'])} | {bound} | "
                         f"{flips} | {kl} | {speed} | {'yes' if c['within_budget'] else 'no'} |"
                         + (f" S{c['structure']}: {c['speed_ms_b1']:.1f} ms |" if "structure" in c else ""))
    lines += latency_section(report, rows, fp)
    lines += outlier_section(report["analysis"], plots, DELTA)
    lines += ["", "## The study, side by side", "", f"\"≈ FP32\" means within {NEAR_FP32_PT:g} accuracy point of "
              "FP32 on the evaluation rows; a claim outside it does not hold.", "",
              "| claim | study (BERT-base, QNLI) | measured here | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in claims(report)]
    lines += ["", f"Versions: {report.get('versions')}", ""]
    return "\n".join(lines)


def latency_section(report: dict[str, Any], rows: list[dict], fp: dict | None, name: Any = None) -> list[str]:
    """The latency and memory table: every row timed in the same interleaved run (`name`: how a row is named)."""
    lines: list[str] = []
    seq = rows[0]["latency"]["1"]["seq"] if rows else 128
    rounds = rows[0]["latency"]["1"].get("rounds", 1) if rows else 1
    lines += ["", "## Latency and memory", "", f"{report['engine']}, sequence length {seq}, random ids; every row "
              f"timed in the same run, interleaved over {rounds} rounds (each round times every row once, each turn "
              f"after a {SETTLE_S * 1000:.0f} ms pause that lets the previous row's threads stop spinning) so that "
              "machine drift hits all rows alike; p50 over all rounds, spread = lowest–highest per-round p50; model "
              "size on disk. Speed-up vs FP32 = FP32's p50 ÷ the row's (above 1 is faster); size vs FP32 = the row's "
              "bytes ÷ FP32's (below 1 is smaller).", "",
              "| setting | p50 b=1 ms | spread b=1 | p50 b=8 ms | speed-up vs FP32 (b=1) | model MiB | size vs FP32 |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        l1, l8 = r["latency"]["1"]["p50_ms"], r["latency"]["8"]["p50_ms"]
        lo, hi = r["latency"]["1"].get("p50_spread_ms", [l1, l1])
        speed = f"{fp['latency']['1']['p50_ms'] / l1:.2f}×" if fp else "—"
        size = f"{r['model_bytes'] / fp['model_bytes']:.2f}×" if fp else "—"
        lines.append(f"| {name(r) if name else r['name']} | {l1:.1f} | {lo:.1f}–{hi:.1f} | {l8:.1f} | {speed} | "
                     f"{r['model_bytes'] / 2**20:.1f} | {size} |")
    return lines


def outlier_section(an: dict[str, Any], plots: bool, judged: str) -> list[str]:
    """Per layer: the outlier statistics and the change when that layer alone is W8A8 (`judged`: what changes)."""
    lines: list[str] = []
    lines += ["", "## Outliers", "", "| layer | kurtosis hidden | top-1 % element energy | kurtosis y | top-1 % "
              f"channel energy (y) | max/σ (y) | dominant channels (y) | {judged}, layer alone W8A8 |",
              "|---|---|---|---|---|---|---|---|"]
    for i, y in enumerate(an["layers"]["y"]):
        h = an["layers"]["hidden_states"][i + 1]
        lines.append(f"| {i} | {h['kurtosis']:.1f} | {100 * h['top1pct_element_energy']:.0f}% | {y['kurtosis']:.0f} | "
                     f"{100 * y['top1pct_channel_energy']:.0f}% | {y['max_over_std']:.0f} | "
                     f"{', '.join(map(str, y.get('dominant_channels', [])[:3]))} | "
                     f"{delta_text(_layer_delta(an['sensitivity'][f'layer.{i}']), 1)} |")
    lines += [""] + ([f"![{p}]({p})" for p in an["plots"]] if plots else [])
    return lines


def _layer_delta(unit: dict[str, Any]) -> float:
    """Points gained (negative: lost) when the layer alone is W8A8; analyses saved before `delta_points` was
    recorded hold the accuracy drop only."""
    return unit["delta_points"] if "delta_points" in unit else -100 * unit["accuracy_drop"]
