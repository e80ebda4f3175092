"""What the CLI prints: one-line errors (and their exit codes), result tables, shared help texts."""
from __future__ import annotations

import functools
import re
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qbert._version import __version__
from qbert.arguments import MAX_BENCH_BATCH  # noqa: F401 — the library's limit, for the CLI's --batch
from qbert.calibration.judge import DELTA, delta_text, score_of
from qbert.cli_rules import folder_notes
from qbert.errors import InternalError, QbertError

out = Console()
err = Console(stderr=True)

# The library's argument names whose flag is spelt differently; any other argument `name` is the flag `--name`.
FLAGS = {"json_out": "--json", "out_dir": "--out", "model_spec": "--model", "recipe_in": "--recipe",
         "fallback": "--fp16-fallback"}


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one line on stderr and exit code 2 (1 for Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
            for note in folder_notes(kwargs):
                err.print(escape(note), highlight=False, soft_wrap=True)
            return result
        except QbertError as e:  # a ConfigError's argument, and those any message mentions, as their flags
            err.print(f"[bold red]error:[/] {escape(e.as_flag(FLAGS))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except InternalError as e:
            err.print(f"[bold red]internal error:[/] {escape(str(e))} — a bug in qbert {__version__}; please "
                      "report it with the command you ran", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except PermissionError as e:
            err.print(f"[bold red]error:[/] permission denied: {escape(str(e.filename))}", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; no partial output was written")
            raise typer.Exit(130) from None

    return wrapper


def print_version(value: bool) -> None:
    """`qbert --version`: the version on stdout, exit 0 (eager: before any command is parsed)."""
    if value:
        out.print(f"qbert {__version__}", highlight=False)
        raise typer.Exit(0)


LABELS_HELP = ("The data's label names in the model's id order, e.g. entailment,not_entailment — for checkpoints "
               "saved with HF's default LABEL_0/LABEL_1 (default: the model's own label2id).")


def show(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=escape(title), show_header=False, title_justify="left")
    for key, value in rows.items():
        table.add_row(escape(key), escape(f"{value:.4g}" if isinstance(value, float) else str(value)))
    out.print(table)




def show_embedding_result(result: dict[str, Any], data: str) -> None:
    """`qbert eval` on a sentence-embedding model: retrieval where the data labels answers, agreement with FP32
    where there is an FP32 model to agree with; one line for each that was not measured, saying why."""
    rows: dict[str, Any] = {**({"ran": result["ran"]} if "ran" in result else {}), "data": data,
                            "examples": result["examples"], "sentences embedded": result["sentences"]}
    r = result["retrieval"]
    if r is not None:
        rows.update({"queries / corpus": f"{r['queries']} / {r['corpus']}", "recall@1": f"{r['recall@1']:.2%}",
                     "recall@10": f"{r['recall@10']:.2%}", "MRR@10": f"{r['mrr@10']:.4f}",
                     "nDCG@10": f"{r['ndcg@10']:.4f}"})
    a = result["agreement"]
    if a is not None:
        rows.update({"cosine vs FP32 (mean / worst)": f"{a['mean_cosine']:.4f} / {a['worst_cosine']:.4f}",
                     "FP32 top-10 neighbours kept": f"{a['top10_kept']:.2%}"})
    rows["sentences/s"] = result["sentences_per_second"]
    show(f"eval [{result['engine']}] (sentence embeddings)", rows)
    for note in (result["retrieval_note"], result["agreement_note"]):
        if note:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


OPENVINO_CENSUS = (("fused_attention_blocks", "attention blocks fused in INT8"),
                   ("fakequantize_left", "FakeQuantize layers left in float"),
                   ("inference_precision", "inference precision"))


def _judged_on(report: dict[str, Any]) -> str:
    """The held-out rows and what FP32 scores there: accuracy, or (an embedding model) its own neighbours."""
    if "fp32_heldout_score" in report:
        return "sentences, judged by FP32's top-10 neighbours kept"
    return f"rows, FP32 {100 * report['fp32_heldout_accuracy']:.2f} %"


def _score_column(report: dict[str, Any]) -> str:
    return "top-10 kept %" if "fp32_heldout_score" in report else "acc %"


def show_candidates(report: dict[str, Any]) -> None:
    """--method auto: every candidate, the chosen one marked."""
    kl = any("divergence" in r for r in report["candidates"])  # a classifier's ranking (older reports: none)
    table = Table(title=escape(f"--method auto: {report['heldout_rows']} held-out {_judged_on(report)}, budget "
                               f"{report['budget_points']} pt on the drop's 95 % upper bound; "
                               f"speed = {report['speed']} (per-round range; S·: graph structure, each timed once)"
                               + ("; KL: divergence from FP32, ×10⁻³" if kl else "")), title_justify="left",
                  box=None, padding=(0, 1, 0, 0), header_style="bold underline")  # fits 80 columns
    table.add_column("candidate", overflow="fold", min_width=13)  # names wrap whole ("smoothquant"), never "…"
    for col in (_score_column(report), DELTA, "bound pt", "flips %", *(("KL",) if kl else ()), "speed", ""):
        table.add_column(col, no_wrap=col != "speed")
    for r in report["candidates"]:
        digits = 2 if r.get("p50_ms_b1", 99) < 10 else 1  # sub-10 ms models: 0.1 ms would tie them all
        speed = f"{r['p50_ms_b1']:.{digits}f}" if "p50_ms_b1" in r else f"{r['int8_gemms']} GEMMs, {r['qdq_pairs']} Q/DQ"
        if "p50_spread_ms_b1" in r:  # per-round p50s: overlapping ranges mean "fastest" is within the noise
            speed += " ({:.{d}f}–{:.{d}f})".format(*r["p50_spread_ms_b1"], d=digits)
        if "structure" in r:
            speed += f" S{r['structure']}"
        mark = "chosen" if r["name"] == report["chosen"] else ("" if r["within_budget"] else "over")
        table.add_row(escape(r["name"]), f"{100 * score_of(r):.2f}", delta_text(0.0 - r["drop_points"]),
                      f"{r['drop_bound_points']:.2f}" if "drop_bound_points" in r else "—",  # older recipes
                      f"{100 * r['flips']:.2f}",
                      *((f"{1e3 * r['divergence']:.3g}" if "divergence" in r else "—",) if kl else ()), speed, mark)
    out.print(table)
    for skipped in report.get("skipped", []):
        err.print(f"[yellow]warning:[/] skipped {escape(skipped['name'])}: {escape(skipped['reason'])}", highlight=False)
    if not report["within_budget"]:
        err.print(f"[yellow]warning:[/] no candidate is within {report['budget_points']} pt of FP32 on the held-out "
                  + ("sentences with 95 % confidence; kept the one that keeps the most FP32 neighbours there"
                     if "fp32_heldout_score" in report else "rows with 95 % confidence; kept the one whose predictions "
                     "diverge least from FP32's there"), highlight=False)


def show_fallback_steps(report: dict[str, Any]) -> None:
    """--auto-fp16: each greedy step (the site returned to high precision) and how it was judged."""
    table = Table(title=escape(f"--auto-fp16: {report['heldout_rows']} held-out {_judged_on(report)}, budget "
                               f"{report['budget_points']} pt on the drop's 95 % upper bound"), title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("kept in high precision", overflow="fold", min_width=15)  # the one column that may wrap
    for col in (_score_column(report), DELTA, "drop bound pt", "flips %"):
        table.add_column(col, no_wrap=True)
    for i, st in enumerate(report["steps"]):
        table.add_row(str(i), escape(st["fallback"] or "(all quantized)"), f"{100 * score_of(st):.2f}",
                      delta_text(0.0 - st["drop_points"]), f"{st['drop_bound_points']:.2f}", f"{100 * st['flips']:.2f}")
    out.print(table)
    if not report["within_budget"]:
        err.print(f"[yellow]warning:[/] still not within {report['budget_points']} pt of FP32 with 95 % confidence "
                  f"after {len(report['steps']) - 1} fallbacks; kept them all (more --heldout rows resolve a "
                  "smaller budget)", highlight=False)


def integer(flag: str, text: str) -> int:
    """ASCII digits only: Python's int() also takes '４' or '1_000', which no user means on a command line."""
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
        raise QbertError(f"{flag} {text!r}: expected an integer")
    return int(text)


def outlier_row(recipe: Any, summary: dict[str, Any]) -> dict[str, str]:
    """The calibrate table's row for outlier channels kept in high precision (none: no row)."""
    split = {k: len(s.outliers) for k, s in recipe.sites.items() if s.outliers}
    if not split:
        return {}
    counts = sorted(set(split.values()))
    return {"outlier channels": f"{'/'.join(map(str, counts))} per tensor on {len(split)} "
                                f"tensor{'s' if len(split) > 1 else ''} "
                                f"({', '.join(list(split)[:3])}{', …' if len(split) > 3 else ''}), in "
                                f"{summary.get('outlier_gemms', 0)} {summary['high_precision']} GEMMs"}


def fallback_patterns(text: str | None) -> list[str]:
    """--fp16-fallback's comma-separated patterns (None: the flag was not given). A list that names nothing
    (`''`, `,,`) or has an empty item is refused: it would otherwise keep nothing in high precision without a word,
    or lose a name to a typo."""
    if text is None:
        return []
    items = [p.strip() for p in text.split(",")]
    if not all(items):
        problem = "names no tensor" if not any(items) else "has an empty item"
        raise QbertError(f"--fp16-fallback {text!r} {problem}; give site keys, globs or roles separated by commas "
                         "(like layer.*.h or x,a), or leave the flag out")
    return items
