"""docs/bad-input.md, generated from the tests' own case tables: `python -m tests.bad_input_page docs/bad-input.md`.

The first table runs every case of tests/test_bad_input.py and prints the one line each command answers; the
others list the cases of the other table-driven tests with the words their one line must hold, so the page is
exactly what the suite checks and a new case appears in it by regenerating, never by hand.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

INTRO = """# Bad input: every refusal the tests check

Every command answers bad input with exactly one line on stderr naming the problem and the fix, exit code 2, no
traceback, nothing left in the output folder (no partial file, no new empty folder), and every input file
byte-for-byte as it was. The library raises `qbert.ConfigError` (naming the argument) or `qbert.QbertError` for
the same cases. Regenerate this page with `python -m tests.bad_input_page docs/bad-input.md`.

The classes: unreadable or mismatched inputs; artefacts checked against each other (a recipe carries the sha256,
hidden size and sites of the model it was computed on; an ONNX must still match its sidecar's sha256; `reproduce`
refuses an `--out` folder that holds another model); recipes validated field against field; outputs that would
overwrite an input or anything it leads to (its sidecar, tokenizer, source-model folder, recipe, the FP32 ONNX a
quantized model names); numeric flags out of range; flags that would do nothing with the others given; and steps
that would give a quiet wrong answer (sensitivity or auto mixed precision on unlabelled rows, fractional labels,
a regression head). Typer's own usage errors are one line too (`error: No such option: --grups (Possible
options: --groups) (see qbert calibrate --help)`).
"""


def _words(value: Any) -> str:
    items = [value] if isinstance(value, str) else [v for v in (value or []) if isinstance(v, str)]
    return ", ".join(f"`{w}`" for w in items if w)


# (test module, table, heading, the case's name and the words its one line must hold)
TABLES: list[tuple[str, str, str, Callable[[tuple], tuple[str, str]]]] = [
    ("test_env_faults", "WRITE_CASES", "A full disk, a read-only folder", lambda c: (f"{c[0]}: {c[1].split()[0]}",
                                                                                   "the output it hit")),
    ("test_env_faults", "MODEL_CASES", "Broken model files", lambda c: (f"{c[1]} {c[0]} ({c[2]})", _words(c[3]))),
    ("test_env_faults", "DATA_CASES", "Data that is not a readable file", lambda c: (c[0], _words(c[3]))),
    ("test_env_faults", "FOLDER_CASES", "A failed command leaves no new folder", lambda c: (c[0], "(no new folder)")),
    ("test_indirect_outputs", "CASES", "Outputs on files a command reads indirectly", lambda c: (c[0], _words(c[2]))),
    ("test_recipe_validation", "CASES", "Hand-edited recipes", lambda c: (f"{c[0]} ({c[1]} recipe)", _words(c[3]))),
    ("test_recipe_validation", "MISFITS", "Recipes that do not fit the model", lambda c: (c[0], _words(c[3]))),
    ("test_flag_rules", "REFUSED", "Flags that would do nothing", lambda c: (c[0], _words(c[2]))),
    ("test_flag_rules", "FALLBACK_REFUSED", "`--fp16-fallback` that names nothing usable",
     lambda c: (f"{c[0]}: {' '.join(c[1])!r}", _words(c[2]))),
    ("test_data_ambiguity", "AMBIGUOUS", "Ambiguous data", lambda c: (c[0], _words(c[3]))),
    ("test_provenance", "CASES", "A source model that changed since export (`eval --engine torch`)",
     lambda c: (c[0], _words(c[2]))),
    ("test_api_validation", "CASES", "Library arguments (`qbert.<function>(…)` raises ConfigError naming it)",
     lambda c: (f"`qbert.{c[0]}({', '.join(f'{k}={v!r}' for k, v in c[1].items())})`", f"`{c[2]}`")),
]


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def listed_tables() -> Iterable[tuple[str, list[tuple[str, str]]]]:
    for module, table, heading, row in TABLES:
        cases = getattr(importlib.import_module(f"tests.{module}"), table)
        yield f"{heading} — `tests/{module}.py`", [row(getattr(c, "values", c)) for c in cases]  # pytest.param


def main_table(tmp: Path) -> list[str]:
    """Runs every tests/test_bad_input.py case and returns its table rows."""
    from qbert.exporter.export import export
    from tests.conftest import build_tiny_bert, write_tsv
    from tests.test_bad_input import CASES, build_env, run_case

    model = build_tiny_bert(tmp / "model")
    export(str(model), tmp / "tiny.onnx")
    (tmp / "env").mkdir()
    env = build_env(tmp / "env", model, tmp / "tiny.onnx", write_tsv(tmp / "tiny.tsv", 96))
    rows = []
    for case, argv, _ in CASES:
        out = tmp / "out" / case.replace(" ", "_").replace("/", "_")
        out.mkdir(parents=True)
        _, lines = run_case(env, out, argv)
        rows.append(f"| {escape(case)} | {escape(lines[0].replace(str(tmp), '…')) if lines else ''} |")
    return rows


def page() -> str:
    os.environ.setdefault("QBERT_QUIET", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lines = [INTRO, "## Commands (`tests/test_bad_input.py`)", "",
             "| case | the one line (exit code 2, no output file) |", "|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        lines += main_table(Path(tmp))
    for heading, rows in listed_tables():
        lines += ["", f"## {heading}", "", "| case | the one line holds |", "|---|---|"]
        lines += [f"| {escape(case)} | {escape(words)} |" for case, words in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.bad_input_page docs/bad-input.md")
    Path(sys.argv[1]).write_text(page())
    print(f"wrote {sys.argv[1]}")
