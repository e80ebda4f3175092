"""TensorRT-RTX AOT build + cache on the CPU, plan validation, GPU skip, and `qbert bench` on ORT-CPU."""
import json
import os
from dataclasses import replace
import signal

import onnx
import pytest
from typer.testing import CliRunner

from qbert.artifacts import load_meta
from tests.helpers.calibration import calibrate
from qbert.calibration.emit import emit
from qbert.cli import app
from qbert.engines.tensorrt_runner import check_plan, gpu_available
from qbert.errors import QbertError
from tests.conftest import signed

runner = CliRunner()


@pytest.fixture(scope="module")
def qdq_pair(tiny_onnx, tiny_tsv, tmp_path_factory):
    """A tiny Q/DQ graph for TensorRT (S8, FP16) and for ORT-CPU (U8, FP32), from one recipe."""
    model, meta = onnx.load(str(tiny_onnx)), load_meta(tiny_onnx)
    recipe = calibrate(tiny_onnx, meta, model, str(tiny_tsv), method="minmax", samples=32)
    folder = tmp_path_factory.mktemp("qdq")
    paths = {}
    for target in ("trt", "ort-cpu"):
        q, summary = emit(model, recipe, target)
        paths[target] = folder / f"{target}.onnx"
        onnx.save(q, str(paths[target]))
        replace(meta, kind="qdq", sha256=None, quantization=summary).write(paths[target])
    return paths


def test_rtx_build_cache_hit_and_invalidation(qdq_pair, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    args = ["build", "--onnx", qdq_pair["trt"], "--out", tmp_path / "e.plan", "--shapes", "1x1/2x16/4x32",
            "--opt-level", "0", "--backend", "tensorrt-rtx"]
    r1 = runner.invoke(app, list(map(str, args)))
    assert r1.exit_code == 0, r1.stderr
    side = json.loads((tmp_path / "e.plan.json").read_text())
    assert side["target"] == "SM86" and side["backend"] == "tensorrt-rtx" and not side["cache_hit"]
    stamp = (tmp_path / "e.plan").stat().st_mtime_ns
    r2 = runner.invoke(app, list(map(str, args)))
    assert r2.exit_code == 0 and "hit" in r2.stdout
    assert (tmp_path / "e.plan").stat().st_mtime_ns == stamp
    edited = {**side, "sm": 89, "target": "SM89"}  # a sidecar edited under the plan is no hit: rebuilt, rewritten
    (tmp_path / "e.plan.json").write_text(json.dumps(edited))
    r2b = runner.invoke(app, list(map(str, args)))
    assert r2b.exit_code == 0 and "miss" in r2b.stdout, r2b.stdout
    assert json.loads((tmp_path / "e.plan.json").read_text())["target"] == "SM86"
    # change the ONNX → new key → rebuild
    m = onnx.load(str(qdq_pair["trt"]))
    m.doc_string = "changed"
    changed = tmp_path / "changed.onnx"
    onnx.save(m, str(changed))
    args[2] = changed
    r3 = runner.invoke(app, list(map(str, args)))
    assert r3.exit_code == 0 and "miss" in r3.stdout
    assert json.loads((tmp_path / "e.plan.json").read_text())["cache_key"] != side["cache_key"]


def test_corrupt_empty_and_foreign_plans_are_refused(qdq_pair, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from qbert.engines.tensorrt import build

    plan = tmp_path / "e.plan"
    build(qdq_pair["trt"], plan, backend="tensorrt-rtx", shapes="1x1/2x16/4x32", opt_level=0)
    check_plan(plan)
    data = plan.read_bytes()
    plan.write_bytes(data[: len(data) // 2])
    with pytest.raises(QbertError, match="does not match its sidecar"):
        check_plan(plan)
    plan.write_bytes(b"")
    with pytest.raises(QbertError, match="empty"):
        check_plan(plan)
    foreign = tmp_path / "foreign.plan"
    foreign.write_bytes(data)
    with pytest.raises(QbertError, match="foreign"):
        check_plan(foreign)
    side = json.loads((tmp_path / "e.plan.json").read_text())
    plan.write_bytes(data)
    (tmp_path / "e.plan.json").write_text(json.dumps(signed({**side, "version": "0.0.1"})))
    with pytest.raises(QbertError, match="rebuild"):
        check_plan(plan)


def test_gpu_engine_refuses_cleanly_without_gpu(qdq_pair, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    ok, why = gpu_available()
    if ok:
        pytest.skip("a GPU is present; the no-GPU message is not reachable")
    from qbert.engines.tensorrt import build

    build(qdq_pair["trt"], tmp_path / "e.plan", backend="tensorrt-rtx", shapes="1x1/2x16/4x32", opt_level=0)
    r = runner.invoke(app, ["bench", "--plan", str(tmp_path / "e.plan"), "--iters", "1"])
    assert r.exit_code == 2 and "needs a CUDA GPU" in r.stderr and "Traceback" not in r.output


@pytest.mark.gpu
def test_tensorrt_runs_on_gpu(qdq_pair, tmp_path):
    ok, why = gpu_available()
    if not ok:
        pytest.skip(f"no GPU: {why}")
    from qbert.engines.tensorrt import build
    from qbert.engines.tensorrt_runner import TensorRTEngine
    from qbert.eval.bench import random_feeds

    try:  # for the GPU in hand (--sm auto); where no installed backend serves it, skip with the one-line reason
        build(qdq_pair["trt"], tmp_path / "e.plan", shapes="1x1/2x16/4x32")
    except QbertError as e:
        pytest.skip(f"{why}: {e}")
    out = TensorRTEngine(str(tmp_path / "e.plan")).run(random_feeds(2, 16, vocab=40))
    assert out.shape == (2, 2)


def test_bench_json_schema_and_integer_census(qdq_pair, tmp_path):
    r = runner.invoke(app, ["bench", "--onnx", str(qdq_pair["ort-cpu"]), "--batch", "1,2", "--seq", "16",
                            "--iters", "3", "--warmup", "1", "--profile", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "b.json").read_text())
    assert [s["batch"] for s in res["shapes"]] == [1, 2]
    for s in res["shapes"]:
        assert s["seq"] == 16 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["sequences_per_s"] > 0
    assert res["engine"]["engine"] == "ort-cpu" and res["model_bytes"] > 0 and res["peak_rss_bytes"] > 0
    # 2 layers × (6 linear GEMMs + 2 attention BMMs), all integer; pooler/classifier stay float
    assert res["census"]["integer_gemms"] == 16 and res["census"]["float_activation_gemms"] == 0
    # MACs at the first batch (1) × seq 16 for the tiny BERT (2 layers, hidden 32, FFN 64), from its shapes:
    # per layer 4 H² + 2 H·F per token plus 2 S² H for the attention BMMs; pooler H² and classifier 2H stay float
    L, S, H, F = 2, 16, 32, 64
    macs = res["census"]["gemm_macs"]
    assert macs["integer"] == L * (S * (4 * H * H + 2 * H * F) + 2 * S * S * H)
    assert macs["float"] == H * H + H * 2 and macs["shape"] == [1, 16]
    assert res["census"]["integer_mac_share"] == pytest.approx(macs["integer"] / (macs["integer"] + macs["float"]))
    # --profile: kernel time by operator at batch 1; the GEMM time is the integer GEMMs' plus the pooler's
    prof = res["profile"]
    assert prof["batch"] == 1 and prof["seq"] == 16
    ops = prof["ms_per_run"]
    assert ops["MatMulIntegerToFloat"] > 0 and "MatMul" not in ops
    assert ops["(gemm)"] == pytest.approx(sum(v for k, v in ops.items() if "MatMul" in k or "Gemm" in k))
    assert ops["(gemm)"] < ops["(kernels)"] <= ops["(whole run)"]
    assert "where the time goes" in r.stdout


def test_tensorrt_inspector_census_counts_int8_gemm_macs():
    """The layer JSON TensorRT's inspector writes with DETAILED verbosity (field names as documented)."""
    from qbert.engines.tensorrt_census import inspector_census

    def io(dims, fmt):
        return {"Name": "t", "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}

    layers = [
        {"Name": "/layer.0/intermediate/dense/MatMul", "LayerType": "Gemm",
         "Inputs": [io([1, 128, 768], "Row major linear INT8 format")], "Outputs": [io([1, 128, 3072], "Half")]},
        {"Name": "/layer.0/attention/self/MatMul", "LayerType": "MatrixMultiply",
         "Inputs": [io([1, 12, 128, 64], "Int8"), io([1, 12, 64, 128], "Int8")],
         "Outputs": [io([1, 12, 128, 128], "Half")]},
        {"Name": "/pooler/dense/Gemm", "LayerType": "Gemm", "Inputs": [io([1, 768], "Half")],
         "Outputs": [io([1, 768], "Half")]},
        {"Name": "/layer.0/output/LayerNorm", "LayerType": "Normalization", "Inputs": [io([1, 128, 768], "Half")],
         "Outputs": [io([1, 128, 768], "Half")]},
        "a layer name only (LAYER_NAMES_ONLY verbosity)",
        {"Name": "{ForeignNode[/layer.1/attention/self/MatMul.../layer.1/output/Add]}", "LayerType": "Myelin"},
    ]
    c = inspector_census(layers)
    assert c["gemm_layers"] == {"int8": 2, "fp16": 1, "fp32": 0} and c["layers"] == 6
    assert c["opaque_fused_layers"] == 1
    int8 = 128 * 3072 * 768 + 12 * 128 * 128 * 64
    assert c["gemm_macs"] == {"int8": int8, "fp16": 768 * 768, "fp32": 0}
    assert c["integer_mac_share"] == pytest.approx(int8 / (int8 + 768 * 768))


class _Recorder:
    """Stands in for the rich phase display; at step `ctrl_c_at` it raises KeyboardInterrupt in the callback
    or, with `real_signal`, sends this process a real SIGINT."""

    def __init__(self, ctrl_c_at: int | None = None, real_signal: bool = False):
        self.started, self.steps, self.finished = [], 0, 0
        self.ctrl_c_at, self.real_signal = ctrl_c_at, real_signal

    def start(self, name, parent, steps):
        self.started.append((name, parent, steps))
        self.sigint_handler = signal.getsignal(signal.SIGINT)

    def step(self, name, step):
        self.steps += 1
        if self.steps == self.ctrl_c_at:
            if self.real_signal:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt

    def finish(self, name):
        self.finished += 1


def test_build_shows_tensorrt_phases_and_ctrl_c_cancels_it(qdq_pair, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    import contextlib

    import qbert.engines.tensorrt as trt_mod

    rec = _Recorder()
    monkeypatch.setattr(trt_mod, "phase_display", contextlib.contextmanager(lambda _: (yield rec)))
    trt_mod.build(qdq_pair["trt"], tmp_path / "a.plan", backend="tensorrt-rtx", shapes="1x1/2x16/4x32", opt_level=0)
    assert rec.started[0][1] is None and rec.started[0][2] > 0  # the top phase, with its step count
    assert len(rec.started) > 1 and rec.finished == len(rec.started) and rec.steps > 0
    # Ctrl-C during the build — a real SIGINT, or a KeyboardInterrupt inside a callback: the monitor stops
    # TensorRT at the next step, build raises KeyboardInterrupt, nothing is written
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # CI shells may start us ignoring SIGINT
    try:
        for real in (True, False):
            rec = _Recorder(ctrl_c_at=2, real_signal=real)
            monkeypatch.setattr(trt_mod, "phase_display", contextlib.contextmanager(lambda _: (yield rec)))
            with pytest.raises(KeyboardInterrupt):
                trt_mod.build(qdq_pair["trt"], tmp_path / "b.plan", backend="tensorrt-rtx",
                              shapes="1x1/2x16/4x32", opt_level=0)
            assert rec.steps == 2  # the callback that saw Ctrl-C told TensorRT to stop
            # while TensorRT builds, SIGINT only flags the monitor (a KeyboardInterrupt raised between callbacks
            # would be swallowed by TensorRT and turn into a plain build failure)
            assert callable(rec.sigint_handler) and rec.sigint_handler is not signal.default_int_handler
            assert sorted(p.name for p in tmp_path.iterdir()) == ["a.plan", "a.plan.json"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the build restored it
    finally:
        signal.signal(signal.SIGINT, previous)


def test_census_without_room_for_the_optimized_graph_is_one_line(tiny_onnx, monkeypatch):
    """ORT reports a failed write of its optimized graph as a protobuf error; with the disk full that is named."""
    import shutil
    from collections import namedtuple

    import qbert.engines.onnxruntime as ortm

    real = ortm.session_from_path

    def fails_to_write(path, so, *a, **k):
        if so.optimized_model_filepath:
            raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Protobuf serialization failed.")
        return real(path, so, *a, **k)

    monkeypatch.setattr(ortm, "session_from_path", fails_to_write)
    with pytest.raises(RuntimeError, match="serialization failed"):  # room enough: ORT's own error, not a guess
        ortm.ort_census(str(tiny_onnx))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    result = CliRunner().invoke(app, ["bench", "--onnx", str(tiny_onnx), "--batch", "1", "--iters", "2"])
    assert result.exit_code == 2, result.output
    assert "no space for ONNX Runtime's optimized copy" in result.output and "1 MiB free" in result.output
    assert "Traceback" not in result.output
