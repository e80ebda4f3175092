"""Flags that would do nothing, or say the wrong thing, in the combination given: refused in one line naming the
flag the user can change (exit 2, nothing written), or warned about — and the outputs, labels and timing that
should not leave the user guessing."""
from __future__ import annotations

import json
import shutil
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qbert._version import __version__
from qbert.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tiny_model, tiny_onnx, tiny_tsv, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("rules")
    shutil.copy(tiny_onnx, d / "m.onnx")
    shutil.copy(str(tiny_onnx) + ".json", d / "m.onnx.json")
    (d / "p.plan").write_bytes(b"not read: refused before")
    from tests.conftest import write_tsv

    write_tsv(d / "e.tsv", 24, seed=9)
    write_tsv(d / "c200.tsv", 200, seed=10)
    return {"d": d, "tsv": str(tiny_tsv), "model": str(tiny_model)}


def _run(env: dict, out: Path, argv: str):
    args = argv.format(d=env["d"], o=out, tsv=env["tsv"], model=env["model"]).split()
    r = runner.invoke(app, args)
    return r, [l for l in r.stderr.strip().splitlines() if l.strip()]


REFUSED = [  # (case, argv, the flag the message must blame, text it must not contain)
    ("calibrate: --method auto --heldout below its minimum", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 "
     "--method auto --heldout 100 --out {o}/q.onnx", "--heldout 100", "--samples"),
    ("calibrate: --auto-fp16 --heldout below its minimum", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 "
     "--auto-fp16 --heldout 10 --out {o}/q.onnx", "--heldout 10", "--samples"),
    ("calibrate: --permute with mse", "calibrate --onnx {d}/m.onnx --data {tsv} --method mse --permute "
     "--out {o}/q.onnx", "--permute/--no-permute", None),
    ("calibrate: --high-precision fp16 for ort-cpu", "calibrate --onnx {d}/m.onnx --data {tsv} --high-precision fp16 "
     "--out {o}/q.onnx", "--high-precision", None),
    ("eval: --plan on ort-cpu", "eval --onnx {d}/m.onnx --plan {d}/p.plan --data {tsv}", "--plan", None),
    ("eval: --model on ort-cpu", "eval --onnx {d}/m.onnx --model {model} --data {tsv}", "--model", None),
    ("eval: --exact on torch", "eval --engine torch --model {model} --exact --data {tsv}", "--exact", None),
    ("eval: --threads on tensorrt", "eval --engine tensorrt --onnx {d}/m.onnx --plan {d}/p.plan --threads 2 "
     "--data {tsv}", "--threads", None),
    ("bench: --cuda-graph on ort-cpu", "bench --onnx {d}/m.onnx --cuda-graph", "--cuda-graph", None),
    ("bench: --exact on tensorrt", "bench --plan {d}/p.plan --exact", "--exact", None),
    ("bench: --threads on tensorrt", "bench --plan {d}/p.plan --threads 2", "--threads", None),
    ("build: --hw-compat with TensorRT-RTX", "build --onnx {d}/m.onnx --out {o}/e.plan --backend tensorrt-rtx "
     "--hw-compat", "--hw-compat", None),
    pytest.param("build: --hw-compat where auto picks TensorRT-RTX", "build --onnx {d}/m.onnx --out {o}/e.plan "
                 "--hw-compat", "--hw-compat", None, marks=pytest.mark.skipif(
                     find_spec("tensorrt") is not None or find_spec("tensorrt_rtx") is None,
                     reason="--backend auto picks TensorRT-RTX only where it alone is installed")),
    ("reproduce: --only with an unknown id", "reproduce --model {model} --eval-data {tsv} --calib-data {d}/m.onnx "
     "--only fp32,w8a8-minmax-gemmm --out {o}/r", "w8a8-minmax-gemm, smoothquant-gemm", None),
    # every input is read before the export writes fp32.onnx into --out
    ("reproduce: --eval-data missing", "reproduce --model {model} --eval-data {o}/nope.tsv --calib-data {tsv} "
     "--only fp32 --out {o}/r", "nope.tsv: data file not found", None),
    ("reproduce: --calib-data missing", "reproduce --model {model} --eval-data {d}/e.tsv --calib-data {o}/nope.tsv "
     "--only fp32 --out {o}/r", "nope.tsv: data file not found", None),
    ("reproduce: --calib-data unlabelled", "reproduce --model {model} --eval-data {d}/e.tsv --calib-data {d}/m.onnx "
     "--only fp32 --out {o}/r", "m.onnx", None),
    ("reproduce: too few calibration rows for the analysis", "reproduce --model {model} --eval-data {d}/e.tsv "
     "--calib-data {tsv} --samples 8 --only fp32 --out {o}/r", "give at least 160 calibration rows", "--samples"),
    ("reproduce: too few calibration rows for method auto", "reproduce --model {model} --eval-data {d}/e.tsv "
     "--calib-data {d}/c200.tsv --samples 8 --only fp32,method-auto --out {o}/r", "method-auto row needs", None),
]


@pytest.mark.parametrize("case,argv,flag,absent", REFUSED, ids=[(c.values if hasattr(c, "values") else c)[0]
                                                              for c in REFUSED])
def test_refused_in_one_line_naming_the_flag(env, tmp_path, case, argv, flag, absent):
    r, lines = _run(env, tmp_path, argv)
    assert r.exit_code == 2, (case, r.exit_code, r.stderr)
    assert len(lines) == 1 and flag in lines[0], (case, r.stderr)
    assert absent is None or absent not in lines[0], (case, lines[0])
    assert "Traceback" not in r.stdout + r.stderr
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [], case


OFF_VALUES = [  # a boolean flag typed at its off value asks for what happens anyway: run, not refused
    ("calibrate: --no-permute with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --no-permute "
     "--out {o}/q.onnx"),
    ("eval: --no-exact on torch", "eval --engine torch --model {model} --no-exact --data {tsv} --limit 8"),
    ("bench: --no-cuda-graph on ort-cpu", "bench --onnx {d}/m.onnx --no-cuda-graph --batch 1 --warmup 0 --iters 2"),
]


@pytest.mark.parametrize("case,argv", OFF_VALUES, ids=[c[0] for c in OFF_VALUES])
def test_a_boolean_flag_at_its_off_value_is_not_refused(env, tmp_path, case, argv):
    r, _ = _run(env, tmp_path, argv)
    assert r.exit_code == 0, (case, r.stderr)


FALLBACK_REFUSED = [  # (case, --fp16-fallback and any other flags, words the line must hold, words it must not)
    ("empty", ["--fp16-fallback", ""], ["--fp16-fallback ''", "names no tensor"], []),
    ("only commas", ["--fp16-fallback", ",,"], ["names no tensor"], []),
    ("only spaces and a comma", ["--fp16-fallback", " , "], ["names no tensor"], []),
    ("an empty item", ["--fp16-fallback", "x,,h"], ["'x,,h' has an empty item"], []),
    ("roles of the full placement under gemm", ["--fp16-fallback", "x,h,y", "--placement", "gemm"],
     ["h, y", "quantized only under --placement full", "under --placement gemm the roles are emb.ln, q, k_t, p, v, "
      "context, x, a, z"], ["roles like x, h, y"]),
    ("a key of the full placement under gemm", ["--fp16-fallback", "layer.*.h", "--placement", "gemm"],
     ["layer.*.h", "only under --placement full"], []),
    ("nothing of either placement", ["--fp16-fallback", "nope", "--placement", "full"],
     ["nope", "no quantized tensor", "under --placement full the roles are emb.sum1"], ["only under"]),
]


@pytest.mark.parametrize("case,flags,needles,absent", FALLBACK_REFUSED, ids=[c[0] for c in FALLBACK_REFUSED])
def test_a_fallback_that_names_nothing_usable_is_refused(env, tmp_path, case, flags, needles, absent):
    r = runner.invoke(app, ["calibrate", "--onnx", str(env["d"] / "m.onnx"), "--data", env["tsv"], "--samples", "16",
                            *flags, "--out", str(tmp_path / "q.onnx")])
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (case, r.stderr)
    assert all(n in lines[0] for n in needles) and not any(a in lines[0] for a in absent), (case, lines[0])
    assert list(tmp_path.iterdir()) == [], case


@pytest.mark.parametrize("patterns", [[""], ["x", " "]], ids=["empty", "blank among others"])
def test_the_library_refuses_a_blank_fallback_pattern(env, patterns):
    import onnx

    from qbert.calibration.placement import apply_fallback, sites
    from qbert.errors import QbertError
    from qbert.exporter.graph import parse

    with pytest.raises(QbertError, match="names no tensor"):
        apply_fallback(sites(parse(onnx.load(str(env["d"] / "m.onnx"))), "gemm"), patterns)


FOLDER_OUTPUTS = [  # (case, argv, the file that must appear); {o}/new/ does not exist yet, {o} does
    ("export --out new/", "export --model {model} --out {o}/new/", "new/model.onnx"),
    ("export --out an existing folder", "export --model {model} --out {o}", "model.onnx"),
    ("calibrate --out new/", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {o}/new/",
     "new/model.int8.onnx"),
    ("calibrate --recipe-out new/", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {o}/q.onnx "
     "--recipe-out {o}/new/", "new/recipe.json"),
    ("eval --json new/", "eval --onnx {d}/m.onnx --data {tsv} --limit 8 --json {o}/new/", "new/eval.json"),
    ("bench --json an existing folder", "bench --onnx {d}/m.onnx --batch 1 --warmup 0 --iters 2 --json {o}",
     "bench.json"),
]


@pytest.mark.parametrize("case,argv,written", FOLDER_OUTPUTS, ids=[c[0] for c in FOLDER_OUTPUTS])
def test_an_output_naming_a_folder_writes_a_file_inside_it(env, tmp_path, case, argv, written):
    r, lines = _run(env, tmp_path, argv)
    assert r.exit_code == 0, (case, r.stderr)
    assert (tmp_path / written).is_file(), (case, sorted(p.name for p in tmp_path.rglob("*")))
    assert any("is a folder: wrote" in l and l.endswith(written) for l in lines), (case, r.stderr)
    assert not (tmp_path / "new").is_file()


def test_version_prints_the_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"qbert {__version__}", r.output


def test_a_fallback_that_keeps_every_tensor_says_nothing_is_int8(env, tmp_path):
    r, lines = _run(env, tmp_path, "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --fp16-fallback * "
                                   "--out {o}/q.onnx")
    assert r.exit_code == 0, r.stderr
    warnings = [l for l in lines if l.startswith("warning:")]
    assert len(warnings) == 1 and "nothing is left in INT8" in warnings[0] and "--fp16-fallback" in warnings[0]
    assert "nothing in INT8" in r.stdout
    side = json.loads((tmp_path / "q.onnx.json").read_text())
    assert "nothing is left in INT8" in side["quantization"]["warning"]


def test_bench_labels_sizes_in_the_unit_it_computes(env, tmp_path):
    r, _ = _run(env, tmp_path, "bench --onnx {d}/m.onnx --batch 1 --warmup 0 --iters 2")
    assert r.exit_code == 0, r.stderr
    assert "model on disk MiB" in r.stdout and "peak RSS MiB" in r.stdout and " MB" not in r.stdout


# Δ: one sign everywhere, quantized − FP32 in points, labelled the same. Each renderer gets a result in which
# the quantized model is 1.5 points below FP32 and must print −1.50 under the one label.
def _judged(acc: float, fp: float) -> dict:
    drop = 100 * (fp - acc)
    return {"name": "minmax, gemm", "accuracy": acc, "flips": 0.02, "drop_points": drop, "se_points": 0.4,
            "drop_bound_points": drop + 0.7, "within_budget": False, "p50_ms_b1": 1.0, "p50_spread_ms_b1": [0.9, 1.1],
            "fallback": "layer.0.x"}


def _method_auto_report() -> dict:
    return {"heldout_rows": 400, "fp32_heldout_accuracy": 0.80, "budget_points": 0.3, "speed": "p50 ms",
            "chosen": "minmax, gemm", "within_budget": False, "candidates": [_judged(0.785, 0.80)]}


def _fallback_report() -> dict:
    return {"heldout_rows": 400, "fp32_heldout_accuracy": 0.80, "budget_points": 0.5, "within_budget": False,
            "steps": [_judged(0.785, 0.80)]}


def _render_candidates(capsys) -> str:
    from qbert.cli_output import show_candidates

    show_candidates(_method_auto_report())
    return capsys.readouterr().out


def _render_steps(capsys) -> str:
    from qbert.cli_output import show_fallback_steps

    show_fallback_steps(_fallback_report())
    return capsys.readouterr().out


def _render_report(capsys, tmp_path: Path) -> str:
    from qbert.eval.report import write_report

    lat = {"1": {"p50_ms": 1.0, "seq": 8, "p50_spread_ms": [0.9, 1.1]}, "8": {"p50_ms": 2.0}}
    census = {"integer_gemms": 0, "float_gemms": 2}
    fp = {"name": "FP32", "kind": "fp32", "accuracy": 0.80, "predictions": [0, 1] * 100, "flags": {},
          "target": "fp32", "high_precision": "fp32", "census": census, "latency": lat, "model_bytes": 4 * 2**20}
    q = {**fp, "name": "Method auto (fastest within 0.3 pt on held-out calibration rows)", "kind": "int8",
         "accuracy": 0.785, "predictions": [0, 1] * 97 + [1, 0] * 3, "target": "ort-cpu",
         "auto_method": _method_auto_report(), "chosen": "minmax, gemm", "flags": {"method": "auto"}}
    mp = {**q, "name": "Auto mixed precision (budget 0.5 pt)", "auto_method": None, "auto_fp16": _fallback_report(),
          "fallback": ["layer.0.x"], "flags": {"placement": "full"}}
    layer = {"kurtosis": 3.0, "top1pct_element_energy": 0.1, "top1pct_channel_energy": 0.1, "max_over_std": 5.0}
    report = {"model": "m", "eval_data": "e", "calib_data": "c", "engine": "ort-cpu", "samples": 16, "seeds": 1,
              "rows": [fp, q, mp], "versions": {},
              "analysis": {"layers": {"hidden_states": [layer, layer], "y": [layer]}, "plots": [],
                           "sensitivity": {"layer.0": {"accuracy_drop": 0.015}}}}
    write_report(report, tmp_path)
    return (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("render", ["method auto table", "auto-fp16 table", "report.md"])
def test_delta_has_one_sign_and_one_label(render, capsys, tmp_path, monkeypatch):
    from qbert import cli_output
    from qbert.calibration.judge import DELTA

    monkeypatch.setattr(cli_output.out, "width", 240)  # one line per row: the labels are read whole

    text = {"method auto table": lambda: _render_candidates(capsys), "auto-fp16 table": lambda: _render_steps(capsys),
            "report.md": lambda: _render_report(capsys, tmp_path)}[render]()
    assert DELTA == "Δ vs FP32 pt" and DELTA in text, text
    assert "-1.50" in text and "+1.50" not in text and "+1.5 " not in text, text
    assert "Δacc" not in text and "Δ pt" not in text, text
    if render == "report.md":  # the per-layer table (1 decimal) and the auto-fp16 line say −1.5 too
        assert "| -1.5 |" in text and f"{DELTA} -1.50" in text, text


def test_judged_rows_carry_delta_with_that_sign():
    from qbert.calibration.judge import judged

    labels = np.array([1, 1, 1, 1])
    row = judged(np.array([1, 1, 1, 0]), np.array([1, 1, 1, 1]), labels, 0.3)
    assert row["delta_points"] == pytest.approx(-25.0) and row["drop_points"] == pytest.approx(25.0)


def test_method_auto_times_candidates_interleaved_and_records_the_spread(monkeypatch):
    """Candidates are timed in alternating rounds (every candidate's turn once a round), several rounds, each with
    its per-round spread — not one candidate's turn after another's, which lets a busy machine's drift pick the
    "fastest"."""
    from qbert.calibration import select

    order: list[str] = []
    runs = {k: (lambda feeds, k=k: order.append(k)) for k in ("a", "b", "c")}
    result = select._latency(runs, seq=8, vocab=100, rounds=4, iters=2)
    timed = order[3:]  # after one warm-up run each
    assert all(timed[i] == timed[i + 1] for i in range(0, len(timed), 2)), order  # a turn: its 2 runs together
    turns = timed[::2]
    assert len(turns) == 12 and all(sorted(turns[i:i + 3]) == ["a", "b", "c"] for i in range(0, 12, 3)), order
    assert sorted(result) == ["a", "b", "c"]
    assert all(len(spread) == 2 and spread[0] <= spread[1] for _, spread in result.values()), result


def test_reproduce_and_method_auto_share_one_interleaved_timer():
    import inspect

    from qbert import reproduction
    from qbert.calibration import select

    assert "interleaved(" in inspect.getsource(select._latency)
    assert "interleaved(" in inspect.getsource(reproduction.time_rows)


ONLY = [  # (--only, row ids chosen)
    ("fp32,w8a8-minmax-gemm", ["fp32", "w8a8-minmax-gemm"]),
    ("W8A8 minmax, placement gemm (GEMM inputs only)", ["w8a8-minmax-gemm"]),  # a name with a comma, whole
    ("FP32,Mixed precision: x, h, y high precision", ["fp32", "mixed-xhy"]),
    ("FP32,placement gemm", ["fp32", "w8a8-minmax-gemm"]),  # parts of names, as before
    ("peg-k4-permuted, method-auto", ["peg-k4-permuted", "method-auto"]),
    ("PEG-K4", ["peg-k4"]),  # an id, whatever its case, is that row only
    (["FP32", "W8A8 minmax, placement full"], ["fp32", "w8a8-minmax-full"]),  # the library's list, item by item
    ("Percentile 99.0", ["percentile-99"]),  # an exact name is that row, though it is part of two others
    ("percentile-99", ["percentile-99"]),  # likewise an exact id
    ("k4-permuted", ["peg-k4-permuted"]),  # a part of an id
    ("-k4", ["peg-k4-permuted", "peg-k4"]),  # every row whose id contains it
    ("Percentile 99", ["percentile-99", "percentile-99.9", "percentile-99.99"]),  # a part: all three, said so
    ("mse,fp16", ["fp16", "mse"]),
]


@pytest.mark.parametrize("only,ids", ONLY, ids=[str(o) for o, _ in ONLY])
def test_reproduce_only_takes_ids_and_whole_names(only, ids):
    from qbert.reproduction import ROWS, select_rows

    assert [r.id for r in select_rows(only)] == ids
    assert len({r.id for r in ROWS}) == len(ROWS) and all("," not in r.id and " " not in r.id for r in ROWS)


def test_reproduce_only_says_which_rows_a_part_picked(capsys):
    from qbert.reproduction import select_rows

    select_rows("fp32,Percentile 99")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'Percentile 99'" in err[0], err
    assert "percentile-99, percentile-99.9, percentile-99.99" in err[0], err
    select_rows("fp32,k4-permuted")  # one row picked by a part: nothing to say
    assert capsys.readouterr().err == ""


ONLY_REFUSED = ["fp32,nosuchrow", "a", "x", ".", ",", "1", "k4", "fp32,a"]  # no row, or too short to be a part


@pytest.mark.parametrize("only", ONLY_REFUSED)
def test_reproduce_only_unknown_lists_the_ids(only):
    from qbert.errors import QbertError
    from qbert.reproduction import ROWS, select_rows

    with pytest.raises(QbertError) as e:
        select_rows(only)
    assert "matches no row" in str(e.value) and all(r.id in str(e.value) for r in ROWS), str(e.value)
