"""Outlier channels in high precision beside an INT8 GEMM (`--fp16-fallback PATTERN:N`): which channels leave,
the clip they leave behind, the graph each target gets, and that the split computes exactly what it says."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qbert.artifacts import load_meta
from qbert.calibration.emit import emit
from qbert.calibration.outliers import split_patterns
from qbert.data import load_dataset_spec
from qbert.encoding import encode, pad_batch
from qbert.errors import ConfigError
from qbert.exporter.graph import parse
from qbert.exporter.hf import load_tokenizer
from qbert.ort_session import session_for, session_options
from tests.conftest import OUTLIER_CHANNELS
from tests.helpers.calibration import calibrate

SITE = "layer.0.z"  # layer 1's Q/K/V input: the planted outlier channels survive layer 0's LayerNorm into it
WHOLE = ["emb.ln", "q", "k_t", "p", "v", "context", "x", "a", "head"]  # every other tensor kept in FP32


@pytest.fixture(scope="module")
def recipes(tiny_onnx, tiny_tsv, fp32):
    """SITE alone in INT8, without and with its two largest channels in high precision."""
    model, meta = fp32
    return {name: calibrate(tiny_onnx, meta, model, str(tiny_tsv), method="minmax", samples=64, fallback=fb)
            for name, fb in (("plain", WHOLE), ("split", [*WHOLE, f"{SITE}:2"]))}


@pytest.fixture(scope="module")
def feeds(tiny_model, tiny_tsv, fp32):
    _, meta = fp32
    enc = encode(load_dataset_spec(str(tiny_tsv), meta.label2id), load_tokenizer(str(tiny_model)), meta.max_length)
    return pad_batch(enc, list(range(48)))


def run(model, feeds, extra=()):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in extra)
    sess = session_for(m, session_options(exact=True))
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


def sqnr_db(ref, x):
    return float(10 * np.log10((ref ** 2).sum() / ((ref - x) ** 2).sum()))


def test_patterns_carry_a_channel_count():
    assert split_patterns(["p", "a:4", "layer.*.x:16"]) == (["p"], [("a", 4), ("layer.*.x", 16)])
    for bad in ("a:0", "a:x", ":4", "a:-1"):
        with pytest.raises(ConfigError, match="PATTERN:N"):
            split_patterns([bad])


def test_the_planted_channels_leave_the_int8_gemm_and_its_clip(recipes):
    plain, split = recipes["plain"].sites[SITE], recipes["split"].sites[SITE]
    assert split.outliers == sorted(OUTLIER_CHANNELS) and plain.outliers is None
    assert split.amax < plain.amax / 2  # the clip the rest of the channels need, not the outliers'
    assert set(recipes["split"].sites) == {SITE}  # nothing else quantized: the others were kept whole


def test_graph_exact_split(recipes, fp32, feeds):
    """The ORT graph: one Gather, one high-precision MatMul + Add per reader (Q, K, V), INT8 weight rows zero
    where the channels left — and layer 1's query output equals, to float rounding, INT8(rest) · INT8 weights +
    x[outliers] · W[outliers] + bias, computed here in numpy from the graph's own scales."""
    model, _ = fp32
    q, summary = emit(model, recipes["split"], "ort-cpu")
    ops = Counter(n.op_type for n in q.graph.node)
    assert summary["outlier_gemms"] == 3 and ops["Gather"] - Counter(n.op_type for n in model.graph.node)["Gather"] == 1
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    lin = parse(model).layers[1].linears["query"]
    mm = next(n for n in q.graph.node if n.name == lin.node.name)
    wdq = producer[mm.input[1]]
    w8, ws = inits[wdq.input[0]], inits[wdq.input[1]]
    assert not w8[list(OUTLIER_CHANNELS)].any() and w8.any(axis=1).sum() == w8.shape[0] - len(OUTLIER_CHANNELS)
    side = next(n for n in q.graph.node if n.op_type == "MatMul" and n.name.startswith(f"qbert/{lin.name}/Outlier"))
    fp_w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == lin.weight))
    np.testing.assert_array_equal(inits[side.input[1]], fp_w[list(OUTLIER_CHANNELS)])
    qnode = producer[producer[mm.input[0]].input[0]]
    scale, zp = float(inits[qnode.input[1]]), int(inits[qnode.input[2]])
    x, = run(model, feeds, [recipes["split"].sites[SITE].tensor])[1:]
    bias = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == lin.bias))
    x_q = (np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale
    want = x_q @ (w8.astype(np.float64) * ws) + x[..., list(OUTLIER_CHANNELS)] @ fp_w[list(OUTLIER_CHANNELS)] + bias
    got, = run(q, feeds, [lin.output])[1:]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_split_beats_the_plain_int8_tensor(recipes, fp32, feeds):
    model, _ = fp32
    ref = run(model, feeds)[0]
    plain, split = (run(emit(model, recipes[k], "ort-cpu")[0], feeds)[0] for k in ("plain", "split"))
    assert sqnr_db(ref, split) > sqnr_db(ref, plain) + 6.0


def test_openvino_runs_the_split_graph_as_onnx_runtime_does(recipes, fp32, feeds):
    pytest.importorskip("openvino")
    from qbert.ov_session import compile_model, runner

    model, _ = fp32
    q, _ = emit(model, recipes["split"], "openvino")
    names = {i.name for i in q.graph.input}
    ov = runner(compile_model(q))({k: v for k, v in feeds.items() if k in names})
    ort = run(q, feeds)[0]
    ref = run(model, feeds)[0]
    assert sqnr_db(ort, ov) > 40.0 and sqnr_db(ref, ov) > sqnr_db(ref, run(emit(model, recipes["plain"],
                                                                                   "openvino")[0], feeds)[0])


def test_tensorrt_builds_the_split_graph_in_fp16(recipes, fp32, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from typer.testing import CliRunner

    from qbert.cli import app

    model, meta = fp32
    q, summary = emit(model, recipes["split"], "trt")
    assert summary["high_precision"] == "fp16"
    side = [n for n in q.graph.node if n.op_type == "MatMul" and "/Outlier" in n.name]
    types = {t.name: t.data_type for t in q.graph.initializer}
    assert len(side) == 3 and all(types[n.input[1]] == onnx.TensorProto.FLOAT16 for n in side)
    path = tmp_path / "q.onnx"
    onnx.save(q, str(path))
    replace(meta, kind="qdq", sha256=None).write(path)
    r = CliRunner().invoke(app, ["build", "--onnx", str(path), "--out", str(tmp_path / "p.plan"), "--backend",
                                 "tensorrt-rtx", "--shapes", "1x1/2x16/4x32", "--opt-level", "0", "--sm", "89"])
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "p.plan.json").read_text())["strongly_typed"] is True


def test_method_auto_keeps_the_users_count_over_a_candidates(fp32):
    """The user's patterns come first in a candidate's list; the first count for a tensor holds there, and is an
    error only among the user's own patterns."""
    from qbert.calibration.outliers import fallback_sites
    from qbert.calibration.placement import sites

    model, _ = fp32
    all_sites = sites(parse(model), "gemm")
    _, _, counts = fallback_sites(all_sites, ["layer.0.a:8", "p", "v", "a:4"], strict=False)
    assert counts == {"layer.0.a": 8, "layer.1.a": 4}
    with pytest.raises(ConfigError, match="one count"):
        fallback_sites(all_sites, ["layer.0.a:8", "a:4"])
    with pytest.raises(ConfigError, match="not both"):
        fallback_sites(all_sites, ["a", "a:4"])


def test_full_placement_takes_counts_where_only_gemms_read(tiny_onnx, tiny_tsv, fp32, feeds):
    """Under `full` the FFN2 input is read by FFN2 alone, so its outlier channels may leave INT8 there too; the
    LayerNorm outputs, which the residual path also reads, are refused (bad-input cases)."""
    model, meta = fp32
    r = calibrate(tiny_onnx, meta, model, str(tiny_tsv), method="minmax", placement="full", samples=32,
                  fallback=["a:2"])
    assert all(len(r.sites[f"layer.{i}.a"].outliers) == 2 for i in range(2))
    q, summary = emit(model, r, "ort-cpu")
    assert summary["outlier_gemms"] == 2 and np.isfinite(run(q, feeds)[0]).all()


def test_albert_layers_sharing_a_weight_get_their_own_outlier_rows(tmp_path):
    """ALBERT's layers share one set of weights; with SmoothQuant each layer's smoothed copy is derived from the
    zeroed one, which must be derived again, not handed out after the first layer's copy freed it. 31 of the 32
    FFN1 input channels: the same set in both layers."""
    from qbert.exporter.export import export
    from tests.conftest import build_tiny, write_tsv

    folder = build_tiny(tmp_path / "albert", "albert")
    out = tmp_path / "albert.onnx"
    export(str(folder), out)
    model, meta = onnx.load(str(out)), load_meta(out)
    data = write_tsv(tmp_path / "d.tsv", 96)
    r = calibrate(out, meta, model, str(data), method="smoothquant", samples=32, fallback=["x:31"])
    assert r.sites["layer.0.x"].outliers == r.sites["layer.1.x"].outliers
    q, summary = emit(model, r, "ort-cpu")
    enc = encode(load_dataset_spec(str(data), meta.label2id), load_tokenizer(str(folder)), meta.max_length)
    f = pad_batch(enc, list(range(32)))
    ref, got = run(model, f)[0], run(q, f)[0]
    assert summary["outlier_gemms"] == 2 and sqnr_db(ref, got) > 20.0
