"""Target choice, capability checks and network flags for TensorRT, without a GPU: only the CUDA device query is
stubbed; builds are real TensorRT-RTX builds on the CPU."""
from __future__ import annotations

import json
import types
from dataclasses import replace

import onnx
import pytest
from typer.testing import CliRunner

from qbert.artifacts import load_meta
from tests.helpers.calibration import calibrate
from qbert.calibration.emit import emit
from qbert.cli import app
from qbert.engines import gpu
from qbert.errors import QbertError

runner = CliRunner()
H100 = gpu.Device("NVIDIA H100 80GB HBM3", 9, 0)
RTX3050 = gpu.Device("NVIDIA GeForce RTX 3050", 8, 6)
RTX4090 = gpu.Device("NVIDIA GeForce RTX 4090", 8, 9)
T4 = gpu.Device("Tesla T4", 7, 5)
P100 = gpu.Device("Tesla P100-PCIE-16GB", 6, 0)


def fake_trt(version: str, sms=(), strongly_typed: bool | None = True):
    """A stand-in with only the attributes the choice logic reads (never used to build)."""
    cc = types.SimpleNamespace(**{f"SM{s}": s for s in sms}, CURRENT=-1, NONE=0)
    mod = types.SimpleNamespace(__version__=version, ComputeCapability=cc)
    if strongly_typed is not None:
        flags = types.SimpleNamespace(STRONGLY_TYPED=0) if strongly_typed else types.SimpleNamespace()
        mod.NetworkDefinitionCreationFlag = flags
    return mod


RTX = fake_trt("1.7.1.116", (75, 80, 86, 89, 120, 121))
TRT10 = fake_trt("10.13.0.35")


@pytest.mark.parametrize("backend,trt,sm,device,want", [
    ("tensorrt-rtx", RTX, "auto", None, 86),          # no GPU: SM86, an RTX 30xx
    ("tensorrt-rtx", RTX, "auto", RTX4090, 89),       # the GPU in hand
    ("tensorrt-rtx", RTX, "120", RTX3050, 120),       # explicit: cross-compile
    ("tensorrt-rtx", RTX, "sm89", None, 89),
    ("tensorrt", TRT10, "auto", H100, 90),            # standard TensorRT: always the present GPU
    ("tensorrt", TRT10, "auto", T4, 75),
])
def test_target_choice(backend, trt, sm, device, want):
    assert gpu.choose_target(trt, backend, sm, device) == want


@pytest.mark.parametrize("backend,trt,sm,device,needle", [
    ("tensorrt-rtx", RTX, "auto", H100, "TensorRT-RTX 1.7.1.116 cannot run on NVIDIA H100 80GB HBM3 (compute "
     "capability 9.0); it supports SM75, SM80, SM86, SM89, SM120, SM121 — install standard TensorRT: "
     "pip install 'qbert[trt]'"),
    ("tensorrt-rtx", RTX, "90", None, "cannot target SM90; it supports SM75"),
    ("tensorrt", TRT10, "auto", None, "no CUDA GPU is visible; cross-compile with backend='tensorrt-rtx'"),
    ("tensorrt", TRT10, "86", H100, "builds only for the present GPU"),
    ("tensorrt", TRT10, "auto", P100, "needs compute capability ≥ 7.5"),
    ("tensorrt-rtx", RTX, "eighty", None, "expected auto or a compute capability"),
])
def test_capability_refusals(backend, trt, sm, device, needle):
    with pytest.raises(QbertError) as e:
        gpu.choose_target(trt, backend, sm, device)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_plan_must_match_the_gpu_it_runs_on():
    gpu.check_plan_runs_here("tensorrt-rtx", 89, False, RTX, RTX4090)
    with pytest.raises(QbertError, match="built for SM86, and this GPU is NVIDIA GeForce RTX 4090"):
        gpu.check_plan_runs_here("tensorrt-rtx", 86, False, RTX, RTX4090)
    with pytest.raises(QbertError, match="TensorRT-RTX 1.7.1.116 cannot run on NVIDIA H100"):
        gpu.check_plan_runs_here("tensorrt-rtx", 86, False, RTX, H100)
    gpu.check_plan_runs_here("tensorrt", 86, True, TRT10, RTX4090)


def test_strongly_typed_flag_where_the_enum_has_it():
    assert gpu.network_flags(fake_trt("10.13.0", strongly_typed=True)) == 1  # 1 << STRONGLY_TYPED (0)
    assert gpu.network_flags(fake_trt("11.0.0", strongly_typed=False)) == 0
    assert gpu.network_flags(fake_trt("11.0.0", strongly_typed=None)) == 0
    assert gpu.trt_major(TRT10) == 10 and gpu.trt_major(RTX) == 1


@pytest.fixture(scope="module")
def trt_onnx(tiny_onnx, tiny_tsv, tmp_path_factory):
    model, meta = onnx.load(str(tiny_onnx)), load_meta(tiny_onnx)
    recipe = calibrate(tiny_onnx, meta, model, str(tiny_tsv), method="minmax", samples=32)
    q, _ = emit(model, recipe, "trt")
    path = tmp_path_factory.mktemp("gpu") / "q.onnx"
    onnx.save(q, str(path))
    replace(meta, kind="qdq", sha256=None).write(path)
    return path


def _build(path, out, *extra):
    return runner.invoke(app, ["build", "--onnx", str(path), "--out", str(out), "--backend", "tensorrt-rtx",
                               "--shapes", "1x1/2x16/4x32", "--opt-level", "0", *extra])


@pytest.mark.parametrize("sm", ["89", "120"])
def test_rtx_cross_compiles_for_sm89_and_sm120(trt_onnx, tmp_path, sm):
    pytest.importorskip("tensorrt_rtx")
    r = _build(trt_onnx, tmp_path / "p.plan", "--sm", sm)
    assert r.exit_code == 0, r.stderr
    meta = json.loads((tmp_path / "p.plan.json").read_text())
    assert meta["target"] == f"SM{sm}" and meta["sm"] == int(sm) and meta["trt_major"] == 1
    assert meta["strongly_typed"] is True


def test_sm_auto_follows_the_visible_gpu(trt_onnx, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    from qbert.engines import tensorrt as trt_mod

    monkeypatch.setattr(trt_mod, "query_device", lambda: (RTX4090, ""))
    r = _build(trt_onnx, tmp_path / "p.plan")
    assert r.exit_code == 0, r.stderr
    meta = json.loads((tmp_path / "p.plan.json").read_text())
    assert meta["target"] == "SM89" and meta["device"] == str(RTX4090)
    monkeypatch.setattr(trt_mod, "query_device", lambda: (None, "no CUDA GPU is visible"))
    r = _build(trt_onnx, tmp_path / "q.plan")
    assert r.exit_code == 0 and json.loads((tmp_path / "q.plan.json").read_text())["target"] == "SM86"


def test_sm90_with_tensorrt_rtx_is_refused_in_one_line(trt_onnx, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    r = _build(trt_onnx, tmp_path / "p.plan", "--sm", "90")
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert "cannot target SM90; it supports SM75, SM80, SM86, SM89, SM120, SM121" in lines[0]
    assert "pip install 'qbert[trt]'" in lines[0]
    assert not (tmp_path / "p.plan").exists()


def _reproduce(tiny_model, tsv, out):
    return runner.invoke(app, ["reproduce", "--model", str(tiny_model), "--eval-data", str(tsv), "--calib-data",
                               str(out.parent / "calib.tsv"), "--out", str(out), "--engine", "tensorrt",
                               "--only", "FP32", "--samples", "16", "--bench-iters", "3"])


def test_reproduce_tensorrt_refuses_up_front_without_a_gpu_it_can_serve(tiny_model, tiny_tsv, tmp_path,
                                                                          monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    from tests.conftest import write_tsv

    write_tsv(tmp_path / "calib.tsv", 200, seed=5)
    for device, needle in ((None, "--engine tensorrt needs a CUDA GPU: no CUDA GPU is visible"),
                           (H100, "TensorRT-RTX 1.7.1.116 cannot run on NVIDIA H100 80GB HBM3 (compute "
                                  "capability 9.0)")):
        monkeypatch.setattr(gpu, "query_device", lambda d=device: (d, "no CUDA GPU is visible"))
        out = tmp_path / f"rep-{device is None}"
        r = _reproduce(tiny_model, tiny_tsv, out)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], r.stderr
        assert not out.exists() or not any(out.rglob("*.onnx"))  # refused before any work


def test_reproduce_tensorrt_builds_plans_for_the_gpu_in_hand(tiny_model, tiny_tsv, tmp_path, monkeypatch):
    """With an RTX 3050 reported, each row's plan is a real TensorRT-RTX SM86 build; running it then needs the
    GPU itself, which this machine lacks, so the command stops there with one line."""
    pytest.importorskip("tensorrt_rtx")
    from qbert.engines import gpu as gpu_mod, tensorrt as trt_mod, tensorrt_runner as runner_mod
    from tests.conftest import write_tsv

    if gpu_mod.cuda_runtime()[0] is not None:
        pytest.skip("cuda-python is installed: the stubbed GPU would reach the real driver")
    write_tsv(tmp_path / "calib.tsv", 200, seed=5)
    monkeypatch.setattr(gpu, "query_device", lambda: (RTX3050, ""))
    monkeypatch.setattr(trt_mod, "query_device", lambda: (RTX3050, ""))
    monkeypatch.setattr(runner_mod, "query_device", lambda: (RTX3050, ""))
    r = _reproduce(tiny_model, tiny_tsv, tmp_path / "rep")
    assert r.exit_code == 2 and "needs cuda-python to drive NVIDIA GeForce RTX 3050" in r.stderr, r.stderr
    (side,) = (tmp_path / "rep" / "rows").glob("*/model.plan.json")
    meta = json.loads(side.read_text())
    assert meta["target"] == "SM86" and meta["device"] == str(RTX3050) and meta["backend"] == "tensorrt-rtx"
