"""A `qbert reproduce` folder → a docs/results page: the machine, the command that regenerates it, the versions,
then the report's own tables, rendered by the same code that writes report.md.

    python benchmarks/results_page.py runs/reproduce docs/results/reproduce-amd-epyc-2core.md

The page is regenerated, never edited: rerun `qbert reproduce` on a machine of that kind, then this script.
report.json keeps no per-row predictions (agreement and SE need them), so they are read back from the folder's
row cache.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from qbert.eval.report import render_report
from qbert.eval.report_embedding import render_embedding_report
from qbert.reproduction_rows import ROWS


def load(folder: Path) -> dict:
    report = json.loads((folder / "report.json").read_text())
    if report.get("task") == "embedding":  # scored by retrieval and FP32 agreement, kept in report.json itself
        return report
    cached = {}
    for f in sorted((folder / "rows").glob("*.json")):
        row = json.loads(f.read_text())
        if isinstance(row, dict) and "name" in row and "predictions" in row:
            cached[row["name"]] = row["predictions"]
    for row in report["rows"]:
        if "predictions" not in row:
            if row["name"] not in cached:
                sys.exit(f"error: {folder}/rows holds no predictions for row {row['name']!r}; rerun qbert reproduce")
            row["predictions"] = cached[row["name"]]
    return report


ROOT = Path(__file__).resolve().parents[1]
FIXTURE = "fixtures/minilm-l6-qnli"  # the shared fixture: the reproduction the title need not name


def shown(path: str) -> str:
    """A path as the page's reader types it from the repo root: a run given absolute paths (a benchmark script
    passes them) must not print this machine's folders."""
    p = Path(path)
    if not p.is_absolute():
        return path
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if p.is_relative_to(base):
            return prefix + str(p.relative_to(base))
    return path


def page(report: dict, model_as: str | None = None, model_line: str | None = None, out: str = "runs/reproduce") -> str:
    """`model_as`: how the page's command names the model (a shell variable the page defines, say) instead of the
    path the run used. `out`: the run's folder, as the page's commands name it — each model's reproduction keeps its
    own (reproduce refuses a folder that holds another model's)."""
    report = {**report, **{k: shown(report[k]) for k in ("model", "eval_data", "calib_data") if report.get(k)}}
    run_model = report["model"]
    if model_as:  # the page names the model the way its command does
        report["model"] = model_as
    command = ["qbert", "reproduce", "--model", report["model"], "--eval-data", report["eval_data"],
               "--calib-data", report["calib_data"], "--out", out]
    if report.get("engine", "ort-cpu") != "ort-cpu":
        command += ["--engine", report["engine"]]
    ids = [r.get("id") for r in report["rows"]]
    if None not in ids and ids != [r.id for r in ROWS]:  # a subset: the page's command runs the same rows
        command += ["--only", ",".join(ids)]
    embedding = report.get("task") == "embedding"
    render = render_embedding_report if embedding else render_report
    body = render(report, plots=False).split("\n", 1)[1]  # its own title replaced by the page's
    m = report.get("machine") or {}
    line = shlex.join(command)
    again = ["python", "benchmarks/results_page.py", out, "<this page>"]
    if model_as:  # a variable the model_line sets: unquoted, so the shell expands it
        line = line.replace(shlex.quote(model_as), model_as)
        again += ["--model-as", model_as]
    if model_line:  # what makes the model first (or names it)
        again += ["--model-line", model_line]
    return "\n".join([
        f"# The reproduction{' (sentence embeddings)' if embedding else ''}"
        f"{'' if FIXTURE in run_model or embedding else f' of {run_model}'} on {m.get('cpu', 'an unknown CPU')}, "
        f"{m.get('logical_cores', '?')} cores ({report.get('engine', 'ort-cpu')})", "",
        "Regenerate on a machine of this kind:", "", "```bash", *([model_line] if model_line else []), line,
        shlex.join(again).replace("'<this page>'", "<this page>"), "```", "",
        "The plots (`kurtosis.png`, `channel_range.png`, …) are written beside report.md in the `--out` folder.",
        body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a qbert reproduce --out folder")
    ap.add_argument("out", type=Path, help="the markdown page to write")
    ap.add_argument("--model-as", help="name the model this way in the page's command (e.g. '$M')")
    ap.add_argument("--model-line", help="a shell line the page's command needs first (e.g. one that sets M)")
    args = ap.parse_args()
    if not (args.folder / "report.json").is_file():
        sys.exit(f"error: {args.folder} holds no report.json; run qbert reproduce --out {args.folder} first")
    args.out.write_text(page(load(args.folder), args.model_as, args.model_line, shown(str(args.folder.resolve()))))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
