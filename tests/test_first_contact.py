"""First contact: the README's own commands in a fresh clone, outputs where asked with normal modes, progress in
logs, models with HF's default label names, flag checks that do not depend on optional backends."""
from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qbert.cli import app
from tests.conftest import SHARED, build_tiny_bert, requires_fixture

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def readme_block(heading: str) -> list[str]:
    """Commands of the first ```bash block under `heading` in README.md (backslash continuations joined)."""
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_readme_blocks_are_what_ci_runs():
    setup, main = readme_block("## Set up and run (two commands)")
    assert "pip install" in setup and main.startswith("qbert reproduce")
    (test_cmd,) = readme_block("## Run the tests (one command)")
    ci = (ROOT / "noxfile.py").read_text()
    assert "## Run the tests (one command)" in ci  # nox runs the README's test command, read from the README


@requires_fixture
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout to clone")
def test_readme_setup_and_main_command_in_a_fresh_clone(tmp_path):
    """The two README commands, as written, in a fresh clone with ../shared beside it; the main command is
    shortened with extra flags (two rows, fewer samples) but otherwise the README's text."""
    setup, main = readme_block("## Set up and run (two commands)")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp_path / "main")], check=True)
    (tmp_path / "shared").symlink_to(SHARED)
    quick = main + " --only " + shlex.quote("FP32,placement gemm") + " --samples 64 --bench-iters 3"
    env = {k: v for k, v in os.environ.items() if k not in ("QBERT_QUIET", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run(["bash", "-c", f"umask 022 && {setup} >pip.log 2>&1 && {quick}"], cwd=tmp_path / "main",
                       env=env, capture_output=True, text=True, timeout=1500)
    log = (tmp_path / "main" / "pip.log")
    assert r.returncode == 0, (r.stderr[-3000:], log.read_text()[-3000:] if log.is_file() else "")
    out = tmp_path / "main" / "runs" / "reproduce"
    report = json.loads((out / "report.json").read_text())
    assert [row["name"] for row in report["rows"]][0] == "FP32" and len(report["rows"]) == 2
    assert report["rows"][0]["accuracy"] > 0.75  # the fixture: 80.11 % FP32 on eval.tsv
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert re.search(r"^\[\s*\d+\.\ds\] reproduce: 2/2 \(100%\) — ", r.stderr, re.M), r.stderr[-2000:]


def test_outputs_create_missing_folders_and_honour_the_umask(tiny_model, tiny_tsv, tmp_path):
    old = os.umask(0o022)
    try:
        onnx_path = tmp_path / "new" / "deeper" / "m.onnx"
        r = runner.invoke(app, ["export", "--model", str(tiny_model), "--out", str(onnx_path)])
        assert r.exit_code == 0, r.stderr
        q = tmp_path / "q" / "x" / "q.onnx"
        r = runner.invoke(app, ["calibrate", "--onnx", str(onnx_path), "--data", str(tiny_tsv), "--samples", "16",
                                "--out", str(q)])
        assert r.exit_code == 0, r.stderr
        files = [onnx_path, Path(f"{onnx_path}.json"), q, Path(f"{q}.json"), Path(f"{q}.recipe.json")]
        assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
        os.umask(0o077)
        r = runner.invoke(app, ["eval", "--onnx", str(q), "--data", str(tiny_tsv), "--limit", "8", "--json",
                                str(tmp_path / "j" / "e.json")])
        assert r.exit_code == 0, r.stderr
        assert stat.S_IMODE((tmp_path / "j" / "e.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, ["export", "--model", str(tiny_model), "--out", str(tmp_path / "afile" / "m.onnx")])
    assert r.exit_code == 2 and "is a file" in r.stderr


def _cli(*args: str, quiet: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QBERT_QUIET"}
    cmd = [sys.executable, "-m", "qbert.cli", *(["--quiet"] if quiet else []), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_progress_lines_when_stderr_is_not_a_terminal(tiny_onnx, tiny_tsv, tmp_path):
    args = ("calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "40", "--batch-size",
            "4", "--out", str(tmp_path / "q.onnx"))
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    lines = re.findall(r"^\[\s*\d+\.\ds\] calibrate \[minmax\]: (\d+)/40 \((\d+)%\)$", r.stderr, re.M)
    assert [int(done) for done, _ in lines] == list(range(4, 41, 4)), r.stderr  # one line per tenth
    assert "\x1b[" not in r.stderr  # no terminal escapes in a log
    r = _cli(*args, quiet=True)
    assert r.returncode == 0 and "calibrate [minmax]" not in r.stderr


def test_nested_steps_stay_quiet_in_logs(monkeypatch, capsys):
    from qbert import progress

    monkeypatch.delenv("QBERT_QUIET", raising=False)
    monkeypatch.setattr(progress, "_plain", lambda: True)
    with progress.progress_bar("outer", total=2) as outer:
        for i in range(2):
            with progress.progress_bar("inner", total=50) as inner:
                for _ in range(50):
                    inner(1)
            outer(1, note=f"row {i}")
    err = capsys.readouterr().err
    assert "inner" not in err
    assert re.findall(r"outer: (\d)/2 \(\d+%\) — row (\d)", err) == [("1", "0"), ("2", "1")]


def _default_label_model(tmp_path: Path) -> Path:
    folder = build_tiny_bert(tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("label2id"), cfg.pop("id2label")  # what save_pretrained writes for HF's LABEL_0 / LABEL_1
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_default_label_names_calibrate_without_labels_and_eval_with_a_map(tiny_tsv, tmp_path):
    model = _default_label_model(tmp_path)
    fp32, q = tmp_path / "m.onnx", tmp_path / "q.onnx"
    assert runner.invoke(app, ["export", "--model", str(model), "--out", str(fp32)]).exit_code == 0
    unlabelled = tmp_path / "unlabelled.tsv"
    unlabelled.write_text("".join(line.rsplit("\t", 1)[0] + "\n" for line in tiny_tsv.read_text().splitlines()))
    for data in (tiny_tsv, unlabelled):  # calibration reads no labels: QNLI names and no labels both work
        r = runner.invoke(app, ["calibrate", "--onnx", str(fp32), "--data", str(data), "--samples", "16",
                                "--out", str(q)])
        assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["eval", "--onnx", str(q), "--data", str(tiny_tsv)])
    assert r.exit_code == 2 and "unknown label 'entailment'" in r.stderr and "--labels" in r.stderr
    r = runner.invoke(app, ["eval", "--onnx", str(q), "--data", str(tiny_tsv), "--labels",
                            "entailment,not_entailment", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "e.json").read_text())["labelled"] == 96
    r = runner.invoke(app, ["calibrate", "--onnx", str(fp32), "--data", str(tiny_tsv), "--samples", "16",
                            "--labels", "entailment,not_entailment", "--auto-fp16", "--out", str(tmp_path / "l.onnx")])
    assert r.exit_code == 0, r.stderr  # the map reaches the one calibration that reads labels
    assert "--auto-fp16:" in r.stdout and "drop bound pt" in r.stdout and "(all quantized)" in r.stdout  # each step
    r = runner.invoke(app, ["calibrate", "--onnx", str(fp32), "--data", str(tiny_tsv), "--samples", "16",
                            "--labels", "entailment,not_entailment", "--out", str(tmp_path / "l2.onnx")])
    assert r.exit_code == 2 and "--labels, --budget, --heldout and --exact apply" in r.stderr  # elsewhere it would do nothing
    r = runner.invoke(app, ["eval", "--onnx", str(q), "--data", str(tiny_tsv), "--labels", "a,b,c"])
    assert r.exit_code == 2 and "names 3 classes but the model has 2" in r.stderr
    r = runner.invoke(app, ["calibrate", "--onnx", str(fp32), "--data", str(unlabelled), "--samples", "16",
                            "--auto-fp16", "--out", str(tmp_path / "auto.onnx")])
    assert r.exit_code == 2 and "unlabelled" in r.stderr


def test_bad_flags_read_the_same_without_tensorrt(tiny_onnx, tmp_path, monkeypatch):
    from qbert.engines import tensorrt as trt_mod
    from qbert.errors import QbertError

    def no_backend(backend="auto"):
        raise QbertError("no TensorRT module for --backend auto: pip install 'qbert[rtx]'")

    monkeypatch.setattr(trt_mod, "import_trt", no_backend)
    for flag, value, needle in (("--shapes", "0x0/0x0/0x0", "expected min/opt/max"),
                                ("--opt-level", "9", "must be 0-5")):
        r = runner.invoke(app, ["build", "--onnx", str(tiny_onnx), "--out", str(tmp_path / "p.plan"), flag, value])
        assert r.exit_code == 2 and needle in r.stderr, r.stderr
