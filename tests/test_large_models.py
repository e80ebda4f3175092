"""The >2 GB path (external data), forced on the tiny model by lowering the threshold."""
import json

import pytest
from typer.testing import CliRunner

from qbert.cli import app
from tests.conftest import signed

runner = CliRunner()


def test_external_data_through_export_calibrate_eval_build(tiny_model, tiny_tsv, tmp_path, monkeypatch):
    monkeypatch.setenv("QBERT_EXTERNAL_DATA_BYTES", "4096")
    fp32, q = tmp_path / "m.onnx", tmp_path / "q.onnx"
    r = runner.invoke(app, ["export", "--model", str(tiny_model), "--out", str(fp32)])
    assert r.exit_code == 0, r.stderr
    data = tmp_path / "m.onnx.data"
    assert data.is_file()
    import onnx

    proto = onnx.load(str(fp32), load_external_data=False)  # every weight above 1 KiB lives outside
    inline = [t.name for t in proto.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL
              and len(t.raw_data) > 1024]
    assert inline == [] and any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    r = runner.invoke(app, ["calibrate", "--onnx", str(fp32), "--data", str(tiny_tsv), "--samples", "32",
                            "--method", "peg", "--groups", "4", "--target", "trt", "--out", str(q)])
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "q.onnx.data").is_file()
    r = runner.invoke(app, ["eval", "--onnx", str(fp32), "--data", str(tiny_tsv), "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0 and json.loads((tmp_path / "e.json").read_text())["examples"] == 96
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    pytest.importorskip("tensorrt_rtx")
    r = runner.invoke(app, ["build", "--onnx", str(q), "--out", str(tmp_path / "q.plan"), "--shapes",
                            "1x1/2x16/4x32", "--opt-level", "0", "--backend", "tensorrt-rtx"])
    assert r.exit_code == 0, r.stderr
    # changing only the external data changes the engine cache key
    key = json.loads((tmp_path / "q.plan.json").read_text())["cache_key"]
    blob = bytearray((tmp_path / "q.onnx.data").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "q.onnx.data").write_bytes(bytes(blob))
    build = ["build", "--onnx", str(q), "--out", str(tmp_path / "q.plan"), "--shapes", "1x1/2x16/4x32",
             "--opt-level", "0", "--backend", "tensorrt-rtx"]
    r = runner.invoke(app, build)  # the sidecar no longer describes the ONNX's weights: refused, not built
    assert r.exit_code == 2 and "does not match its sidecar" in r.stderr, r.stderr
    from qbert.atomic import sha256_onnx

    side = json.loads((tmp_path / "q.onnx.json").read_text())  # as if qbert had written these weights
    (tmp_path / "q.onnx.json").write_text(json.dumps(signed({**side, "sha256": sha256_onnx(q)})))
    r = runner.invoke(app, build)
    assert r.exit_code == 0 and json.loads((tmp_path / "q.plan.json").read_text())["cache_key"] != key
