"""The README's Python API block, run as written from the repo root; config errors name their field."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import qbert
from tests.conftest import requires_fixture

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@requires_fixture
def test_readme_api_script_runs_as_written():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QBERT_QUIET": "1"}
    r = subprocess.run([sys.executable, "-c", readme_python_block()], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = r.stdout.strip().splitlines()
    accuracy = float(first.rsplit(" ", 1)[1].rstrip("%")) / 100
    assert 0.7 < accuracy <= 1.0  # PEG K=4 on the fixture: FP32 is 80.11 % on eval.tsv
    assert float(second) > 0.99  # nearly every GEMM multiply-accumulate on integer kernels
    side = (ROOT / "runs" / "api" / "peg4.onnx.json")
    assert side.is_file() and (ROOT / "runs" / "api" / "peg4.onnx.recipe.json").is_file()


def test_api_on_the_tiny_model_with_in_memory_rows(tiny_onnx, tmp_path):
    from tests.conftest import sentence
    import random

    rng = random.Random(1)
    rows = [(sentence(rng, 5) + "?", sentence(rng, 12) + ".", ("entailment", "not_entailment")[i % 2])
            for i in range(64)]
    recipe = qbert.calibrate(tiny_onnx, qbert.CalibrationConfig(data=rows, samples=32, method="peg", groups=4))
    side = qbert.quantize(tiny_onnx, recipe, tmp_path / "q.onnx")
    assert side.quantization["method"] == "peg" and (tmp_path / "q.onnx.recipe.json").is_file()
    ds = qbert.load_data(rows, {"entailment": 0, "not_entailment": 1})
    res = qbert.evaluate(tmp_path / "q.onnx", ds, json_out=tmp_path / "e.json")
    assert res["labelled"] == 64 and (tmp_path / "e.json").is_file()
    with qbert.open_engine("ort-cpu", str(tmp_path / "q.onnx")) as engine:
        assert engine.census(1, 16)["integer_gemms"] > 0
    assert rows[0][2] in ("entailment", "not_entailment")  # the caller's rows are not rewritten


@pytest.mark.parametrize("field,value,needle", [
    ("samples", 0, "samples=0: must be a positive integer"),
    ("method", "magic", "method='magic': choose one of"),
    ("percentile", 0.0, "percentile=0.0: must be in (0, 100]"),
    ("budget", -1.0, "budget=-1.0: must be a finite number ≥ 0"),
    ("budget", float("inf"), "budget=inf: must be a finite number ≥ 0"),
    ("data", None, "data=None: give a .tsv/.jsonl path"),
    ("fallback", "x,h", "fallback='x,h': must be a list"),
    ("exact", True, "exact=True: applies to method='auto' and auto_fp16"),
    ("exact", "yes", "exact='yes': must be True or False"),
])
def test_config_errors_name_the_field(field, value, needle):
    with pytest.raises(qbert.ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        qbert.CalibrationConfig(**{"data": "x.tsv", field: value}).validate()
