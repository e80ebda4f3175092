"""The library speaks its own names: an error raised below the CLI names the function's arguments (`max_length`),
never a flag (`--max-length`), so a script calling `qbert.export(..., max_length=10000)` reads the argument it
passed. The CLI prints the same errors with its flags (ConfigError.as_flag and the mentions of any QbertError)."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

import qbert
from qbert.cli import app
from qbert.cli_output import FLAGS
from qbert.errors import ConfigError, QbertError

PKG = Path(__file__).resolve().parents[1] / "qbert"
CLI_MODULES = {"cli.py", "cli_rules.py", "cli_output.py", "cli_measure.py"}  # the command line: flags are its own words
FLAG = re.compile(r"--[a-z]")
ALLOWED = {  # other tools' flags, named where qbert cannot do the job itself: text the library may hold
    "trtexec --dumpProfile": "TensorRT's per-layer profile: bench's profile covers ONNX Runtime and OpenVINO",
}

runner = CliRunner()


def flag_strings(package: Path) -> list[str]:
    """`file:line: text` for every string constant (f-string parts and docstrings included) in the library's
    modules — every module but the CLI's — that holds a flag not on the allow-list."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.parent == package and path.name in CLI_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                for allowed in ALLOWED:
                    text = text.replace(allowed, "")
                if FLAG.search(text):
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {node.value[:80]!r}")
    return found


def test_the_library_names_no_flag():
    assert flag_strings(PKG) == []


def test_every_allowed_flag_is_still_named():
    """An allow-list entry nothing holds any more is dropped, so the list stays the exceptions there are."""
    text = "\n".join(p.read_text() for p in PKG.rglob("*.py") if p.name not in CLI_MODULES)
    assert [a for a in ALLOWED if a not in text] == []


def test_the_scan_finds_a_flag_in_an_f_string(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text('def f(x):\n    raise ValueError(f"--max-length {x}: too long")\n')
    (tmp_path / "pkg" / "cli.py").write_text('HELP = "--max-length"\n')  # the CLI's own words
    assert flag_strings(tmp_path / "pkg") == ["pkg/m.py:2: '--max-length '"]


Env = dict[str, Any]


def _reproduce_only(e: Env) -> None:
    qbert.reproduce(e["model"], e["tsv"], e["calib"], e["out"] / "r", only=["nomatch"])


# (case, the library call, the argument its ConfigError names, the same mistake on the command line, the flag its
# one line names, whether that line is the library's error in the CLI's words — else a CLI rule refused it first)
CASES: list[tuple[str, Callable[[Env], Any], str, str, str, bool]] = [
    ("export max_length beyond the positions",
     lambda e: qbert.export(e["model"], e["out"] / "x.onnx", max_length=10000), "max_length",
     "export --model {model} --out {out}/x.onnx --max-length 10000", "--max-length 10000", True),
    ("export a missing model folder",
     lambda e: qbert.export(e["out"] / "missing", e["out"] / "x.onnx"), "model_spec",
     "export --model {out}/missing --out {out}/x.onnx", "--model", True),
    ("evaluate precision bf16 on ort-cpu",
     lambda e: qbert.evaluate(e["onnx"], e["tsv"], engine="ort-cpu", precision="bf16"), "precision",
     "eval --onnx {onnx} --data {tsv} --precision bf16", "--precision", False),
    ("evaluate labels naming three classes",
     lambda e: qbert.evaluate(e["onnx"], e["tsv"], labels="a,b,c"), "labels",
     "eval --onnx {onnx} --data {tsv} --labels a,b,c", "--labels a,b,c", True),
    ("load_data limit 0",
     lambda e: qbert.load_data(e["tsv"], limit=0), "limit",
     "eval --onnx {onnx} --data {tsv} --limit 0", "--limit 0", True),
    ("bench seq beyond the positions",
     lambda e: qbert.bench(e["onnx"], batch=[1], seq=100000, warmup=0, iters=1), "seq",
     "bench --onnx {onnx} --batch 1 --seq 100000 --warmup 0 --iters 1", "--seq 100000", True),
    ("build shapes not min/opt/max",
     lambda e: qbert.build(e["onnx"], e["out"] / "e.plan", shapes="8x128"), "shapes",
     "build --onnx {onnx} --out {out}/e.plan --shapes 8x128", "--shapes 8x128", True),
    ("calibrate more samples than rows",
     lambda e: qbert.calibrate(e["onnx"], qbert.CalibrationConfig(data=str(e["tsv"]), samples=1000)), "samples",
     "calibrate --onnx {onnx} --data {tsv} --samples 1000 --out {out}/q.onnx", "lower --samples", True),
    ("calibrate heldout beyond the data",
     lambda e: qbert.calibrate(e["onnx"], qbert.CalibrationConfig(data=str(e["tsv"]), method="auto", samples=16,
                                                                  heldout=5000)), "heldout",
     "calibrate --onnx {onnx} --data {tsv} --method auto --samples 16 --heldout 5000 --out {out}/q.onnx",
     "rows beyond --samples 16; lower --heldout or --samples", True),
    ("calibrate more PEG groups than channels",
     lambda e: qbert.calibrate(e["onnx"], qbert.CalibrationConfig(data=str(e["tsv"]), method="peg", groups=33,
                                                                  samples=16)), "groups",
     "calibrate --onnx {onnx} --data {tsv} --method peg --groups 33 --samples 16 --out {out}/q.onnx",
     "--groups 33", True),
    ("calibrate a fallback matching nothing",
     lambda e: qbert.calibrate(e["onnx"], qbert.CalibrationConfig(data=str(e["tsv"]), samples=16,
                                                                  fallback=["nope"])), "fallback",
     "calibrate --onnx {onnx} --data {tsv} --samples 16 --fp16-fallback nope --out {out}/q.onnx",
     "--fp16-fallback nope: matches no quantized tensor; under --placement gemm", True),
    ("reproduce only naming no row", _reproduce_only, "only",
     "reproduce --model {model} --eval-data {tsv} --calib-data {calib} --only nomatch --out {out}/r",
     "--only nomatch", True),
]


@pytest.fixture
def env(tiny_model, tiny_onnx, tiny_tsv, tmp_path) -> Env:
    from tests.conftest import write_tsv

    (tmp_path / "out").mkdir()
    return {"model": tiny_model, "onnx": tiny_onnx, "tsv": tiny_tsv, "out": tmp_path / "out",
            "calib": write_tsv(tmp_path / "calib.tsv", 200, seed=5)}


@pytest.mark.parametrize("case,call,field,argv,flag,same", CASES, ids=[c[0] for c in CASES])
def test_an_error_names_the_argument_here_and_the_flag_on_the_command_line(env, case, call, field, argv, flag,
                                                                         same):
    with pytest.raises(ConfigError) as e:
        call(env)
    message = str(e.value)
    assert e.value.field == field and message.startswith(f"{field}="), (case, message)
    assert "--" not in message and "\n" not in message, (case, message)
    r = runner.invoke(app, argv.format(**env).split())
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and flag in lines[0], (case, r.stderr)
    assert not same or lines[0] == f"error: {e.value.as_flag(FLAGS)}", (case, lines[0], e.value.as_flag(FLAGS))


def test_a_message_mentioning_arguments_reads_in_each_readers_words(tiny_onnx, tiny_tsv, tmp_path):
    """A QbertError that names arguments in passing (the labels that would map the data) names them as arguments
    here and as flags on the command line."""
    rows = tmp_path / "rows.tsv"
    rows.write_text(tiny_tsv.read_text().replace("not_entailment", "no").replace("entailment", "yes"))
    with pytest.raises(QbertError) as e:
        qbert.load_data(rows, {"entailment": 0, "not_entailment": 1})
    assert "labels='NAME0,NAME1'" in str(e.value) and "--" not in str(e.value), str(e.value)
    r = runner.invoke(app, ["eval", "--onnx", str(tiny_onnx), "--data", str(rows)])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {e.value.as_flag(FLAGS)}", r.stderr
    assert "--labels NAME0,NAME1" in r.stderr


def test_a_suggested_call_reads_as_a_function_here_and_as_a_command_there():
    from qbert.errors import Step

    e = QbertError("the tokenizer changed; re-export it: {export}",
                   export=Step("export", model_spec="/m", out="/m.onnx"))
    assert str(e) == "the tokenizer changed; re-export it: qbert.export(model_spec='/m', out='/m.onnx')"
    assert e.as_flag(FLAGS) == "the tokenizer changed; re-export it: qbert export --model /m --out /m.onnx"


@pytest.mark.parametrize("field,flag", sorted(FLAGS.items()))
def test_every_renamed_argument_maps_to_a_real_flag(field, flag):
    """FLAGS spells an argument as a flag the CLI has: a misspelt entry would send users to a flag that is not
    there."""
    import typer.main

    commands = typer.main.get_command(app).commands.values()
    flags = {o for command in commands for p in command.params for o in p.opts if o.startswith("--")}
    assert flag in flags, (field, flag)
