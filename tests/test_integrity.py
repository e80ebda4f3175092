"""Artefacts that belong together: all-or-nothing outputs, caches keyed by what they came from, batch-invariant
statistics, reports for any subset of rows, results labelled with what really ran."""
from __future__ import annotations

import json

import onnx
import pytest
from typer.testing import CliRunner

from qbert.artifacts import load_meta
from tests.helpers.calibration import calibrate
from qbert.cli import app
from tests.conftest import build_tiny_bert, write_tsv

runner = CliRunner()


def test_a_failing_second_output_leaves_every_previous_file(tiny_onnx, tiny_tsv, tmp_path, monkeypatch):
    out = tmp_path / "q.onnx"
    for p, text in ((out, "old onnx"), (tmp_path / "q.onnx.json", "old sidecar"),
                    (tmp_path / "q.onnx.recipe.json", "old recipe")):
        p.write_text(text)
    from qbert.calibration import quantize as qmod

    real = qmod.write_json

    def fail_on_recipe(path, data, stage=None):
        if str(path).endswith(".recipe.json"):
            raise OSError(28, "No space left on device")
        return real(path, data, stage)

    monkeypatch.setattr(qmod, "write_json", fail_on_recipe)
    r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "16",
                            "--out", str(out)])
    assert r.exit_code != 0
    assert out.read_text() == "old onnx" and (tmp_path / "q.onnx.json").read_text() == "old sidecar"
    assert (tmp_path / "q.onnx.recipe.json").read_text() == "old recipe"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.json", "q.onnx.recipe.json"]


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse"])
def test_histogram_scales_do_not_depend_on_the_batch_size(tiny_onnx, tiny_tsv, method):
    model, meta = onnx.load(str(tiny_onnx)), load_meta(tiny_onnx)
    amax = [{k: (s.amax, s.group_amax) for k, s in calibrate(tiny_onnx, meta, model, str(tiny_tsv), method=method,
                                                               placement="full", samples=48, batch_size=b).sites.items()}
            for b in (1, 7, 48)]
    assert amax[0] == amax[1] == amax[2]


def test_recipe_re_emits_only_on_its_own_model(tiny_onnx, tiny_tsv, tmp_path):
    q = tmp_path / "q.onnx"
    r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "16",
                            "--method", "peg", "--groups", "4", "--out", str(q)])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--recipe", f"{q}.recipe.json", "--target", "trt",
                            "--out", str(tmp_path / "q.trt.onnx")])
    assert r.exit_code == 0, r.stderr  # the same model: fine
    side = json.loads((tmp_path / "q.trt.onnx.json").read_text())
    assert side["quantization"]["method"] == "peg" and side["fp32_onnx"] == str(tiny_onnx)


def test_eval_with_torch_is_not_labelled_with_the_onnx_quantization(tiny_onnx, tiny_tsv, tmp_path):
    q = tmp_path / "q.onnx"
    assert runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "16",
                               "--out", str(q)]).exit_code == 0
    r = runner.invoke(app, ["eval", "--onnx", str(q), "--engine", "torch", "--data", str(tiny_tsv), "--limit", "8",
                            "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["quantization"] is None and res["engine"] == "torch"


def test_reproduce_subset_without_fp32_and_a_folder_of_another_model(tmp_path):
    from qbert.errors import QbertError
    from qbert.reproduction import reproduce

    model = build_tiny_bert(tmp_path / "m")
    evald, calibd = write_tsv(tmp_path / "e.tsv", 40, seed=5), write_tsv(tmp_path / "c.tsv", 200, seed=6)
    out = tmp_path / "rep"

    def run(spec):
        return reproduce(str(spec), str(evald), str(calibd), out, samples=16, bench_iters=2, analysis_samples=16,
                         only=["placement gemm"])

    rep = run(model)
    assert [r["name"] for r in rep["rows"]] == ["W8A8 minmax, placement gemm (GEMM inputs only)"]
    text = (out / "report.md").read_text()
    assert "W8A8 minmax, placement gemm" in text and "| — |" in text  # no FP32 row: no deltas, no crash
    assert run(model)["rows"][0]["cached"]  # the same model resumes from the cache
    with pytest.raises(QbertError, match="holds a reproduction of another model"):
        run(build_tiny_bert(tmp_path / "other", seed=3))
    build_tiny_bert(model, seed=4)  # new weights at the same path are another model too
    with pytest.raises(QbertError, match="another model"):
        run(model)


def test_old_placement_name_trt_still_reads_as_gemm(tiny_onnx, tiny_tsv, tmp_path):
    """`trt` named both a target and a placement; the placement is `gemm` now, and old flags/recipes still work."""
    q = tmp_path / "q.onnx"
    r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "16",
                            "--placement", "trt", "--out", str(q)])
    assert r.exit_code == 0, r.stderr
    recipe = json.loads((tmp_path / "q.onnx.recipe.json").read_text())
    assert recipe["placement"] == "gemm"
    recipe["placement"] = "trt"  # a recipe written before the rename (and before recipes carried a checksum)
    del recipe["checksum"]
    (tmp_path / "old.recipe.json").write_text(json.dumps(recipe))
    r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--recipe", str(tmp_path / "old.recipe.json"),
                            "--out", str(tmp_path / "q2.onnx")])
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "q2.onnx.json").read_text())["quantization"]["placement"] == "gemm"
