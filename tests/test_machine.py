"""Results say which CPU and INT8 kernel path produced them (eval, bench, reproduce)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qbert.cli import app
from qbert.machine import kernel_mode, machine

runner = CliRunner()


@pytest.mark.parametrize("flags,path", [
    ("fpu avx2 avx512f avx512bw avx512_vnni amx_tile amx_int8", "VNNI (32-bit accumulation)"),
    ("fpu avx2 avx_vnni", "VNNI (32-bit accumulation)"),
    ("fpu avx2 avx512f avx512bw", "VPMADDUBSW (16-bit pair sums may saturate; no VNNI)"),
])
def test_isa_features_decide_the_int8_path(tmp_path, flags, path):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    m = machine(str(info))
    assert m["cpu"] == "Test CPU @ 2.0GHz" and m["ort_int8_path"] == path
    assert m["isa"]["avx2"] and m["isa"]["avx512_vnni"] == ("avx512_vnni" in flags)


def test_eval_and_bench_json_record_the_machine(tiny_onnx, tiny_tsv, tmp_path):
    r = runner.invoke(app, ["eval", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--limit", "8", "--exact",
                            "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["machine"] == json.loads(json.dumps(machine()))
    assert res["engine_info"]["int8_kernels"] == kernel_mode(True) == "exact (session.x64quantprecision)"
    r = runner.invoke(app, ["bench", "--onnx", str(tiny_onnx), "--batch", "1", "--iters", "2", "--warmup", "0",
                            "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "b.json").read_text())
    assert set(res["machine"]["isa"]) >= {"avx2", "avx512_vnni", "amx_int8"}
    assert res["engine"]["int8_kernels"].startswith("fast: ")
