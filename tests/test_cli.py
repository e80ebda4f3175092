"""CLI behaviour: real commands end to end on the tiny model, and one-line errors for bad input."""
import json

from typer.testing import CliRunner

from qbert.cli import app
from tests.conftest import build_tiny_bert

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, needle, folder):
    assert result.exit_code != 0
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not [p for p in folder.iterdir() if p.suffix in (".onnx", ".json", ".tmp")]


def test_export_bad_model_path(tmp_path):
    r = invoke("export", "--model", tmp_path / "missing", "--out", tmp_path / "m.onnx")
    assert_clean_failure(r, "no such folder", tmp_path)


def test_export_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "junk").mkdir()
    r = invoke("export", "--model", tmp_path / "junk", "--out", tmp_path / "m.onnx")
    assert_clean_failure(r, "not a Hugging Face model", tmp_path)


def test_export_non_classifier(tmp_path):
    folder = build_tiny_bert(tmp_path / "base", classifier=False)
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("export", "--model", folder, "--out", out / "m.onnx")
    assert_clean_failure(r, "not a sequence classifier", out)


def test_eval_malformed_tsv(tiny_onnx, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tquestion\tsentence\tlabel\n0\tq\n")
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("eval", "--onnx", tiny_onnx, "--data", bad, "--json", out / "r.json")
    assert_clean_failure(r, "expected 4 tab-separated fields", out)


def test_eval_ort_matches_torch(tiny_onnx, tiny_tsv, tmp_path):
    r1 = invoke("eval", "--onnx", tiny_onnx, "--data", tiny_tsv, "--json", tmp_path / "ort.json", "-b", 7)
    r2 = invoke("eval", "--onnx", tiny_onnx, "--data", tiny_tsv, "--engine", "torch",
                "--json", tmp_path / "torch.json")
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.stderr + r2.stderr
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("ort.json", "torch.json"))
    assert a["examples"] == b["examples"] == 96
    assert a["predictions"] == b["predictions"] and a["predictions_sha256"] == b["predictions_sha256"]
    assert a["engine"] == "ort-cpu" and b["engine"] == "torch"
    assert 0.0 <= a["accuracy"] <= 1.0 and "accuracy" in r1.stdout


def test_calibrate_groups_auto_and_method_auto_from_the_shell(tiny_onnx, tmp_path):
    from tests.conftest import write_tsv

    data = write_tsv(tmp_path / "d.tsv", 400, seed=3)
    r = invoke("calibrate", "--onnx", tiny_onnx, "--data", data, "--method", "peg", "--groups", "auto",
               "--placement", "full", "--samples", 64, "--out", tmp_path / "peg.onnx")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "peg.onnx.recipe.json").read_text())["groups"] == "auto"
    r = invoke("calibrate", "--onnx", tiny_onnx, "--data", data, "--method", "auto", "--samples", 64,
               "--heldout", 300, "--out", tmp_path / "auto.onnx")
    assert r.exit_code == 0, r.stderr
    report = json.loads((tmp_path / "auto.onnx.recipe.json").read_text())["calibration"]["auto_method"]
    assert report["heldout_rows"] == 300  # of the 336 beyond --samples: as asked
    assert "--method auto: 300 held-out rows" in r.stdout and "chosen" in r.stdout
    assert len(report["candidates"]) == 17 and all(m in r.stdout for m in ("minmax", "mse", "percentile", "peg",
                                                                           "smoothquant"))


def test_bench_torch_engine_uses_the_models_own_limits(tiny_model, tmp_path):
    """No sidecar: random ids within the model's vocabulary and sequences within its positions (64 here)."""
    r = invoke("bench", "--onnx", tiny_model, "--engine", "torch", "--batch", 1, "--iters", 2, "--warmup", 0,
               "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "b.json").read_text())["seq"] == 64
    r = invoke("bench", "--onnx", tiny_model, "--engine", "torch", "--seq", 65, "--iters", 2)
    assert r.exit_code == 2 and "at most 64 tokens" in r.stderr


def test_re_emitting_keeps_the_recipe_it_read_when_told_to_write_it_there(tiny_onnx, tiny_tsv, tmp_path):
    """--recipe-out naming the --recipe file itself: nothing is rewritten and the sidecar points at it."""
    r = invoke("calibrate", "--onnx", tiny_onnx, "--data", tiny_tsv, "--samples", 16, "--out", tmp_path / "q.onnx")
    assert r.exit_code == 0, r.stderr
    recipe = tmp_path / "q.onnx.recipe.json"
    before = recipe.read_bytes()
    r = invoke("calibrate", "--onnx", tiny_onnx, "--recipe", recipe, "--recipe-out", recipe, "--target", "openvino",
               "--out", tmp_path / "ov.onnx")
    assert r.exit_code == 0, r.stderr
    assert recipe.read_bytes() == before
    assert json.loads((tmp_path / "ov.onnx.json").read_text())["quantization"]["recipe"] == str(recipe)
