"""Interrupted work leaves the previous output intact; identical inputs give byte-identical artefacts."""
import os
import signal
import subprocess
import sys
import time

from tests.conftest import write_tsv


def test_ctrl_c_during_calibrate_keeps_previous_output(tiny_onnx, tmp_path):
    data = write_tsv(tmp_path / "big.tsv", 4000, seed=9)
    out = tmp_path / "q.onnx"
    out.write_bytes(b"previous good output")
    cmd = [sys.executable, "-m", "qbert.cli", "calibrate", "--onnx", str(tiny_onnx), "--data", str(data),
           "--samples", "4000", "--batch-size", "1", "--method", "percentile", "--out", str(out)]
    env = {**os.environ, "QBERT_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8.0)  # imports + tokenizing, then well inside the observation loop
    assert proc.poll() is None, "calibration finished before it could be interrupted; make it longer"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert out.read_bytes() == b"previous good output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tsv", "q.onnx"]  # no temp files or recipe


def test_same_inputs_give_byte_identical_onnx_and_recipe(tiny_onnx, tiny_tsv, tmp_path):
    from typer.testing import CliRunner

    from qbert.cli import app

    runner = CliRunner()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "48",
                                "--method", "peg", "--groups", "4", "--target", "trt",
                                "--out", str(tmp_path / name / "q.onnx"), "--recipe-out", str(tmp_path / name / "r.json")])
        assert r.exit_code == 0, r.stderr
    for f in ("q.onnx", "r.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    import json

    versions = json.loads((tmp_path / "a" / "r.json").read_text())["versions"]
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(versions)
