"""OpenVINO as a target and an engine: the emitted graph's structure checked against OpenVINO's own compiled model
(every encoder GEMM and both attention MatMuls in INT8, attention fused, no FakeQuantize left), the engine's
parity and census, method auto timed on OpenVINO, reproduce on it, and the refusals."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from qbert.artifacts import load_meta
from tests.helpers.calibration import calibrate
from qbert.cli import app
from tests.conftest import build_tiny, write_tsv

pytest.importorskip("openvino")

runner = CliRunner()
LAYERS = 2


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    from qbert.api import export

    root = tmp_path_factory.mktemp("ov")
    export(str(build_tiny(root / "model", "bert")), root / "fp32.onnx")
    return root / "fp32.onnx"


def quantized(fp32, tiny_tsv, tmp_path, target, **kw):
    from qbert.api import quantize

    recipe = calibrate(fp32, load_meta(fp32), None, str(tiny_tsv), samples=48, **kw)
    out = tmp_path / f"{target}.onnx"
    quantize(fp32, recipe, out, target)
    return out


@pytest.mark.parametrize("kw", [dict(method="minmax"), dict(method="percentile"), dict(method="smoothquant"),
                                dict(method="peg", groups="auto"), dict(method="minmax", placement="full"),
                                dict(method="mse", placement="full")],
                         ids=["minmax", "percentile", "smoothquant", "peg-auto", "minmax-full", "mse-full"])
def test_openvino_target_runs_every_encoder_gemm_and_attention_in_int8(fp32, tiny_tsv, tmp_path, kw):
    """Read back from OpenVINO's compiled model, not inferred from the graph."""
    from qbert.engines.openvino import openvino_census

    path = quantized(fp32, tiny_tsv, tmp_path, "openvino", **kw)
    q = onnx.load(str(path))
    zps = [t for t in q.graph.initializer if t.name.endswith(".zero_point")]
    assert zps and all(t.data_type == onnx.TensorProto.INT8 and not onnx.numpy_helper.to_array(t).any()
                       for t in zps)  # signed, symmetric activations
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in q.graph.initializer)  # FP32 high precision
    census = openvino_census(str(path), seq=32)
    encoder = {n: g for n, g in census["gemms"].items() if n.startswith(("/layer.", "qbert/layer."))}
    assert len(encoder) == 8 * LAYERS  # 6 linears + Q·Kᵀ + P·V per layer
    assert all(g["precision"] in ("i8", "u8") for g in encoder.values()), \
        {n: g for n, g in encoder.items() if g["precision"] not in ("i8", "u8")}
    assert census["fused_attention_blocks"] == LAYERS
    # what stays a FakeQuantize of its own (dynamic shapes, as the engine runs it) is an activation's quantize step
    # that follows no single elementwise op to fuse into — after a LayerNorm's affine or the attention output's
    # reshape; SmoothQuant's per-channel Mul takes each as NNCF's smoothing Mul does (NNCF's graphs keep one too)
    left = census["fakequantize_layers"]
    assert len(left) == census["fakequantize_left"] and all(n.startswith("qbert/act.") for n in left), left
    assert len(left) <= (1 if kw["method"] == "smoothquant" else 1 + 3 * LAYERS), left
    assert census["float_gemms"] == 0 and census["integer_mac_share"] == 1.0, census  # pooler, classifier too
    assert census["integer_gemms"] == 8 * LAYERS + 2


def test_embedding_sums_stay_float_for_openvino_under_full(fp32, tiny_tsv, tmp_path):
    """Only an Add and the embedding LayerNorm read them: a FakeQuantize no kernel absorbs (and with them OpenVINO
    2026.4 failed to compile some full-placement graphs). Other targets keep the recipe's every site."""
    path = quantized(fp32, tiny_tsv, tmp_path, "openvino", method="minmax", placement="full")
    side = json.loads(path.with_name(path.name + ".json").read_text())["quantization"]
    assert side["left_in_float_by_target"] == ["emb.sum1", "emb.sum2"]
    readers = {n.input[0] for n in onnx.load(str(path)).graph.node if n.op_type == "QuantizeLinear"}
    assert not any(t.startswith("/embeddings/Add") for t in readers)
    ort_path = quantized(fp32, tiny_tsv, tmp_path, "ort-cpu", method="minmax", placement="full")
    ort_side = json.loads(ort_path.with_name(ort_path.name + ".json").read_text())["quantization"]
    heads = 2  # pooler and classifier: in INT8 for OpenVINO only
    assert "left_in_float_by_target" not in ort_side
    assert ort_side["quantized_sites"] == side["quantized_sites"] + 2 - heads


def test_census_sees_attention_left_in_float_by_the_ort_form(fp32, tiny_tsv, tmp_path):
    """The same recipe emitted for ONNX Runtime (U8, zero point 128): OpenVINO runs its attention MatMuls in f32,
    and the census says so — it can fail."""
    from qbert.engines.openvino import openvino_census

    census = openvino_census(str(quantized(fp32, tiny_tsv, tmp_path, "ort-cpu")), seq=32)
    attention = [g for n, g in census["gemms"].items() if n.endswith(("self/MatMul", "self/MatMul_1"))]
    assert len(attention) == 2 * LAYERS and all(g["precision"] == "f32" for g in attention)
    assert census["fused_attention_blocks"] == 0 and census["integer_mac_share"] < 1.0


def test_engine_matches_onnx_runtime_and_records_its_precision(fp32, tiny_tsv, tmp_path):
    from qbert.api import evaluate, open_engine
    from qbert.encoding import random_feeds

    feeds = random_feeds(3, 24, 50)
    with open_engine("openvino", fp32, threads=1) as ov_eng, open_engine("ort-cpu", fp32) as ort_eng:
        assert np.abs(ov_eng.run(feeds) - ort_eng.run(feeds)).max() < 1e-4
        described = ov_eng.describe()
    assert described["inference_precision"] == "f32" and described["threads"] == 1 and "machine" in described
    path = quantized(fp32, tiny_tsv, tmp_path, "openvino")
    result = evaluate(path, str(tiny_tsv), engine="openvino")
    assert result["examples"] == 96 and result["engine_info"]["engine"] == "openvino"
    assert result["quantization"]["target"] == "openvino"


def test_bench_reports_openvino_census(fp32, tiny_tsv, tmp_path):
    path = quantized(fp32, tiny_tsv, tmp_path, "openvino")
    r = runner.invoke(app, ["bench", "--onnx", str(path), "--engine", "openvino", "--batch", "1,2", "--seq", "16",
                            "--iters", "3", "--warmup", "1", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    assert [s["batch"] for s in result["shapes"]] == [1, 2] and result["engine"]["inference_precision"] == "f32"
    assert result["census"]["fused_attention_blocks"] == LAYERS and result["census"]["integer_gemms"] == 8 * LAYERS + 2
    assert "attention blocks fused in INT8" in " ".join(r.stdout.split())


def test_bench_profile_reads_openvinos_own_layer_counters(fp32, tiny_tsv, tmp_path):
    """--profile on openvino: time per executed layer type and kernel, from the compiled model that ran — the
    quantized graph's GEMMs on INT8 kernels and its attention as fused subgraphs, the FP32 graph's on float ones."""
    from qbert.api import bench

    path = quantized(fp32, tiny_tsv, tmp_path, "openvino")
    r = runner.invoke(app, ["bench", "--onnx", str(path), "--engine", "openvino", "--batch", "2,1", "--seq", "16",
                            "--iters", "10", "--warmup", "1", "--profile", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.stderr
    prof = json.loads((tmp_path / "b.json").read_text())["profile"]
    assert prof["batch"] == 2 and prof["seq"] == 16 and prof["source"] == "OpenVINO per-layer counters"
    ops = prof["ms_per_run"]
    gemm_rows = {k: v for k, v in ops.items() if k.split(" (")[0] in ("FullyConnected", "FullyConnectedQuantizedLegacy",
                                                                       "MatMul", "Gemm")}
    assert gemm_rows and all("i8" in k.lower() for k in gemm_rows if "FullyConnected" in k), ops
    assert any(k.startswith("Subgraph (") and "i8" in k for k in ops), ops  # the fused INT8 attention blocks
    assert ops["(gemm)"] == pytest.approx(sum(gemm_rows.values()))
    assert 0 < ops["(gemm)"] < ops["(kernels)"] <= ops["(whole run)"]
    assert "where the time goes (OpenVINO per-layer counters" in " ".join(r.stdout.split())
    float_ops = bench(fp32, "openvino", batch=[1], seq=16, warmup=1, iters=5, profile=True)["profile"]["ms_per_run"]
    float_gemms = [k for k in float_ops if k.startswith("FullyConnected")]
    assert float_gemms and not any("i8" in k.lower() for k in float_gemms), float_ops


def test_bench_times_and_censuses_an_openvino_ir_beside_the_onnx(fp32, tiny_tsv, tmp_path):
    """The peer's artefact (NNCF writes an OpenVINO IR) is timed and censused as qbert's own: the IR converted from
    qbert's ONNX gets the same census, and its size counts the .bin; elsewhere an IR is refused in one line."""
    import openvino as ov

    from qbert.api import bench

    path = quantized(fp32, tiny_tsv, tmp_path, "openvino")
    ir = tmp_path / "peer" / "model.xml"
    ir.parent.mkdir()
    ov.save_model(ov.Core().read_model(str(path)), str(ir))
    onnx_result = bench(path, "openvino", batch=[1], seq=16, warmup=1, iters=3)
    ir_result = bench(ir, "openvino", batch=[1], seq=16, warmup=1, iters=3)
    for key in ("integer_gemms", "float_gemms", "fused_attention_blocks", "fakequantize_left", "integer_mac_share"):
        assert ir_result["census"][key] == onnx_result["census"][key], key
    assert ir_result["model_bytes"] == ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
    r = runner.invoke(app, ["bench", "--onnx", str(ir), "--batch", "1", "--iters", "1"])  # ort-cpu
    assert r.exit_code == 2 and "is an OpenVINO IR, not an ONNX" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    ir.with_suffix(".bin").unlink()
    r = runner.invoke(app, ["bench", "--onnx", str(ir), "--engine", "openvino", "--batch", "1", "--iters", "1"])
    assert r.exit_code == 2 and "OpenVINO IR weights" in r.stderr and "not found" in r.stderr


def test_method_auto_scores_and_times_candidates_on_openvino(fp32, tmp_path):
    from qbert.api import CalibrationConfig, calibrate as api_calibrate

    data = write_tsv(tmp_path / "c.tsv", 48 + 256, seed=4)
    recipe = api_calibrate(fp32, CalibrationConfig(data=str(data), method="auto", samples=48, heldout=256,
                                                   target="openvino"))
    report = recipe.calibration["auto_method"]
    assert "OpenVINO" in report["speed"] and "OpenVINO" in report["int8_kernels"]
    assert all("p50_ms_b1" in c for c in report["candidates"])
    from qbert.calibration.select import CANDIDATES  # one OpenVINO cannot compile is skipped, with its reason

    assert len(report["candidates"]) + len(report.get("skipped", [])) == len(CANDIDATES)
    assert all(s["reason"] for s in report.get("skipped", []))
    assert any("a in high precision" in c["name"] for c in report["candidates"])  # timed: the FP32-FFN2 candidate
    assert any("p/v in high precision, asymmetric" in c["name"] for c in report["candidates"])  # fused by OpenVINO
    assert report["target"] == "openvino"
    recipe.save(tmp_path / "auto.recipe.json")  # re-emitted for another target: no table, one line saying whose it is
    r = runner.invoke(app, ["calibrate", "--onnx", str(fp32), "--recipe", str(tmp_path / "auto.recipe.json"),
                            "--target", "ort-cpu", "--out", str(tmp_path / "re.onnx")])
    assert r.exit_code == 0, r.stderr
    assert "held-out rows" not in r.stdout
    assert any(l.startswith("warning:") and "for --target openvino" in l and "--method auto --target ort-cpu" in l
               for l in r.stderr.splitlines()), r.stderr


def test_reproduce_on_openvino(tmp_path):
    from qbert.reproduction import reproduce

    model = build_tiny(tmp_path / "m", "bert")
    evald, calibd = write_tsv(tmp_path / "e.tsv", 40, seed=5), write_tsv(tmp_path / "c.tsv", 120, seed=6)
    rep = reproduce(str(model), str(evald), str(calibd), tmp_path / "rep", engine="openvino", samples=32,
                    bench_iters=2, analysis_samples=16, seeds=1, only=["fp32", "w8a8-minmax-gemm"])
    int8 = rep["rows"][1]
    assert int8["target"] == "openvino" and int8["census"]["fused_attention_blocks"] == LAYERS
    page = (tmp_path / "rep" / "report.md").read_text()
    assert "(OpenVINO census)" in page and "engine openvino (f32 inference precision)" in page
    assert "ORT census" not in page and "ONNX Runtime INT8 kernels" not in page


def refused_on_ort(env):
    return ["eval", "--onnx", str(env["ov"]), "--data", str(env["tsv"])]


def refused_by_build(env):
    return ["build", "--onnx", str(env["ov"]), "--out", str(env["tmp"] / "x.plan"), "--sm", "86"]


def precision_on_ort(env):
    return ["eval", "--onnx", str(env["fp32"]), "--data", str(env["tsv"]), "--precision", "bf16"]


def exact_for_openvino(env):
    return ["calibrate", "--onnx", str(env["fp32"]), "--data", str(env["tsv"]), "--method", "auto", "--exact",
            "--target", "openvino", "--out", str(env["tmp"] / "x.onnx")]


def fp16_for_openvino(env):
    return ["calibrate", "--onnx", str(env["fp32"]), "--data", str(env["tsv"]), "--target", "openvino",
            "--high-precision", "fp16", "--out", str(env["tmp"] / "x.onnx")]


REFUSALS = [  # (case, argv, words the one line holds)
    ("an openvino artefact on ort-cpu", refused_on_ort, "quantized for --target openvino"),
    ("an openvino artefact given to build", refused_by_build, "emitted for --target openvino"),
    ("--precision on ort-cpu", precision_on_ort, "--precision"),
    ("--exact with target openvino", exact_for_openvino, "--exact"),
    ("--high-precision fp16 for openvino", fp16_for_openvino, "--high-precision"),
]


@pytest.mark.parametrize("case,argv,needle", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refusals_are_one_line(fp32, tiny_tsv, tmp_path, case, argv, needle):
    env = {"fp32": fp32, "tsv": tiny_tsv, "tmp": tmp_path, "ov": quantized(fp32, tiny_tsv, tmp_path, "openvino")}
    r = runner.invoke(app, argv(env))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], (case, r.stderr)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.plan").exists()


def test_missing_openvino_and_a_cpu_without_bf16_are_one_line(fp32, monkeypatch):
    import builtins

    from qbert import QbertError
    from qbert.api import open_engine
    from qbert.engines import openvino as engine_mod

    class NoBf16:
        def get_property(self, device, name):
            return ["FP32", "INT8"]

    monkeypatch.setattr(engine_mod, "core", NoBf16)
    with pytest.raises(QbertError, match="bf16 inference needs a CPU with AVX-512 BF16 or AMX"):
        open_engine("openvino", fp32, precision="bf16")
    monkeypatch.undo()
    real_import = builtins.__import__

    def no_openvino(name, *a, **kw):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    r = runner.invoke(app, ["bench", "--onnx", str(fp32), "--engine", "openvino", "--batch", "1", "--iters", "1"])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "pip install 'qbert[openvino]'" in lines[0], r.stderr


def test_threads_beyond_the_cores_openvino_finds_are_warned_and_recorded(fp32, tmp_path):
    """OpenVINO caps INFERENCE_NUM_THREADS at the cores it finds: the result records what ran and says so."""
    asked = 4 * (os.cpu_count() or 1) + 8
    r = runner.invoke(app, ["bench", "--onnx", str(fp32), "--engine", "openvino", "--batch", "1", "--seq", "16",
                            "--iters", "2", "--warmup", "0", "--threads", str(asked), "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.stderr
    ran = json.loads((tmp_path / "b.json").read_text())["engine"]["threads"]
    assert ran < asked
    assert any(l.startswith("warning:") and f"not the {asked} asked" in l for l in r.stderr.splitlines()), r.stderr


def test_analyze_scores_each_layer_on_openvino(tiny_onnx, tiny_tsv, tmp_path):
    """`analyze --engine openvino`: each layer alone in its OpenVINO (S8) form, against FP32 on OpenVINO; the
    statistics are the engine-independent FP32 observation, so they equal ONNX Runtime's run."""
    runs = {}
    for engine in ("ort-cpu", "openvino"):
        r = runner.invoke(app, ["analyze", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "64",
                                "--heldout", "64", "--engine", engine, "--out", str(tmp_path / engine)])
        assert r.exit_code == 0, r.output
        runs[engine] = json.loads((tmp_path / engine / "analysis.json").read_text())
    assert runs["openvino"]["engine"] == "openvino" and runs["ort-cpu"]["engine"] == "ort-cpu"
    assert runs["openvino"]["layers"] == runs["ort-cpu"]["layers"]
    assert set(runs["openvino"]["sensitivity"]) == set(runs["ort-cpu"]["sensitivity"])
    for unit in runs["openvino"]["sensitivity"].values():
        assert np.isfinite(unit["sqnr_db"]) and -100 <= unit["delta_points"] <= 100
    r = runner.invoke(app, ["analyze", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--engine", "tensorrt",
                            "--out", str(tmp_path / "trt")])
    assert r.exit_code == 2 and "--engine tensorrt: choose one of ort-cpu, openvino" in r.stderr, r.output


def test_attention_left_to_openvino_still_runs_every_gemm_in_int8(fp32, tmp_path):
    """The candidate that leaves P·V's inputs unquantized (as NNCF does): no Q/DQ on the softmax output or V, and
    OpenVINO's census still counts every GEMM, attention included, in INT8 with each block fused."""
    from qbert.calibration import select
    from qbert.calibration.targets import target

    only = [c for c in select.CANDIDATES if c.fused_attention]
    assert only and all(c.keep == ("p", "v") for c in only)
    assert not any(c.fused_attention for c in select.candidates_for(target("ort-cpu"), False))
    assert not any(c.fused_attention for c in select.candidates_for(target("trt"), False))
    data = write_tsv(tmp_path / "c.tsv", 96, seed=5)
    out = tmp_path / "pv.onnx"
    r = runner.invoke(app, ["calibrate", "--onnx", str(fp32), "--data", str(data), "--samples", "64", "--method",
                            "smoothquant", "--alpha", "1.0", "--asymmetric", "--fp16-fallback", "p,v", "--target",
                            "openvino", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    model = onnx.load(str(out))
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert not any("Softmax" in t for t in quantized)
    from qbert.engines import open_engine

    with open_engine("openvino", str(out)) as engine:
        census = engine.census(batch=1, seq=32)
    assert census["fused_attention_blocks"] == LAYERS and census["float_gemms"] == 0
    assert census["integer_mac_share"] == 1.0


def test_ctrl_c_after_several_compiled_models_is_a_keyboardinterrupt(fp32):
    """OpenVINO's CPU plugin points the thread's alternate signal stack at its own buffer while it lives; with a
    Core per compile, two plugins alive at once left it pointing at freed memory, and the next Ctrl-C was a
    segmentation fault. Run in a child process, so a crash fails this test instead of the test run."""
    import signal
    import subprocess
    import sys

    script = (
        "import os, signal, time\n"
        "from qbert.ov_session import compile_path, runner\n"
        "from qbert.encoding import random_feeds\n"
        "models = []\n"
        "for _ in range(2):  # each compiled and run before the next, as method auto's candidates are\n"
        f"    models.append(compile_path({str(fp32)!r}, 1))\n"
        "    runner(models[-1])(random_feeds(1, 8, 100))\n"
        "while models:\n"
        "    models.pop(0)  # released in the order made: the first plugin goes before the later ones\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "interrupted", (r.returncode, -signal.SIGSEGV, r.stderr[-500:])


def test_eval_scores_a_peers_ir_against_its_fp32_export(fp32, tiny_tsv, tmp_path):
    """NNCF hands over an OpenVINO IR with no sidecar: named beside the FP32 export it came from, it is scored on the
    same rows with the same tokenizer, and the share of FP32's predictions it changed is reported — here an IR
    converted from qbert's own ONNX, so every number must equal the ONNX's."""
    import openvino as ov

    from qbert.api import evaluate

    path = quantized(fp32, tiny_tsv, tmp_path, "openvino")
    ir = tmp_path / "peer" / "model.xml"
    ir.parent.mkdir()
    ov.save_model(ov.Core().read_model(str(path)), str(ir))
    onnx_result = evaluate(path, str(tiny_tsv), "openvino", fp32=fp32)
    fp_result = evaluate(fp32, str(tiny_tsv), "ort-cpu")
    r = runner.invoke(app, ["eval", "--onnx", str(ir), "--engine", "openvino", "--fp32", str(fp32), "--data",
                            str(tiny_tsv), "--json", str(tmp_path / "ir.json")])
    assert r.exit_code == 0, r.stderr
    ir_result = json.loads((tmp_path / "ir.json").read_text())
    assert ir_result["predictions"] == onnx_result["predictions"] and ir_result["accuracy"] == onnx_result["accuracy"]
    changed = np.mean(np.asarray(ir_result["predictions"]) != np.asarray(fp_result["predictions"]))
    assert ir_result["fp32"]["flips"] == onnx_result["fp32"]["flips"] == pytest.approx(changed)
    assert ir_result["fp32"]["accuracy"] == fp_result["accuracy"] and ir_result["sidecar_from"] == str(fp32)
    assert "FP32 predictions changed" in r.stdout
    r = runner.invoke(app, ["eval", "--onnx", str(ir), "--engine", "openvino", "--data", str(tiny_tsv)])
    assert r.exit_code == 2 and "has no sidecar" in r.stderr and "--fp32" in r.stderr
