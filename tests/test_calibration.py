"""Q/DQ emission on the tiny BERT: legality (checker, TensorRT-RTX SM86 build), integer-kernel census,
numerical agreement with an independent numpy fake-quant, PEG permutation exactness."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.helpers.calibration import calibrate
from qbert.calibration.emit import emit
from qbert.calibration.recipe import Recipe
from qbert.engines.onnxruntime import ort_census, session_options
from qbert.data import load_dataset_spec
from qbert.encoding import batches, encode
from qbert.exporter.graph import parse
from qbert.exporter.hf import load_classifier
from tests.helpers import numpy_bert
from tests.conftest import OUTLIER_CHANNELS, OUTLIER_LAYER

CASES = [(m, p) for m in ("minmax", "percentile", "mse", "entropy", "peg", "peg-auto") for p in ("gemm", "full")] + \
    [("smoothquant", "gemm")]  # peg-auto: --groups auto (grouped GEMM inputs smoothed), peg: K=4


@pytest.fixture(scope="module")
def recipes(tiny_onnx, tiny_tsv, fp32):
    model, meta = fp32
    return {(m, p): calibrate(tiny_onnx, meta, model, str(tiny_tsv), method=m.removesuffix("-auto"), placement=p,
                              samples=64, groups="auto" if m.endswith("-auto") else 4, batch_size=16)
            for m, p in CASES}


def feeds_for(tiny_model, tiny_tsv, n=24):
    _, tok = load_classifier(str(tiny_model))
    ds = load_dataset_spec(str(tiny_tsv), {"entailment": 0, "not_entailment": 1}, limit=n)
    return next(iter(batches(encode(ds, tok, 64), n)))[1]


@pytest.mark.parametrize("method,placement", CASES)
def test_every_graph_is_valid_and_ort_runs_integer_kernels(recipes, fp32, tmp_path, method, placement):
    model, _ = fp32
    for target in ("ort-cpu", "trt"):
        q, summary = emit(model, recipes[(method, placement)], target)
        onnx.checker.check_model(q, full_check=True)
        zps = [t for t in q.graph.initializer if t.name.endswith("zero_point")]
        # per-tensor activation scales/zero points are rank-0 (ORT ≥ 1.30 refuses [1]); weights are per-axis 1-D
        qparams = [t for t in q.graph.initializer if t.name.endswith(("scale", "zero_point"))]
        assert {len(t.dims) for t in qparams if t.name.startswith("act.")} == {0}
        assert {len(t.dims) for t in qparams if not t.name.startswith("act.")} == {1}
        want = {"ort-cpu": {onnx.TensorProto.UINT8, onnx.TensorProto.INT8}, "trt": {onnx.TensorProto.INT8}}
        assert {t.data_type for t in zps} <= want[target]
        if target == "trt":
            assert all(not onnx.numpy_helper.to_array(t).any() for t in zps)  # symmetric: zero points all 0
        else:
            path = tmp_path / f"{method}-{placement}.onnx"
            onnx.save(q, str(path))
            census = ort_census(str(path))
            assert census["integer_gemms"] == summary["quantized_gemms"] > 0
            if placement == "gemm":
                assert census["float_activation_gemms"] == 0


@pytest.mark.parametrize("method,placement", CASES)
def test_trt_target_builds_with_tensorrt_rtx_for_sm86(recipes, fp32, tmp_path, method, placement):
    pytest.importorskip("tensorrt_rtx")
    from qbert.engines.tensorrt import build

    q, _ = emit(fp32[0], recipes[(method, placement)], "trt")
    path = tmp_path / "q.onnx"
    onnx.save(q, str(path))
    meta = build(path, tmp_path / "q.plan", backend="tensorrt-rtx", sm=86, shapes="1x1/4x32/8x64", opt_level=0)
    assert meta.target == "SM86" and meta.plan_bytes > 0


def test_ort_matches_independent_numpy_fake_quant(recipes, fp32, tiny_model, tiny_tsv):
    """The last FFN output of ORT's integer graph vs numpy fake-quant (and vs FP32)."""
    from qbert.exporter.graph import parse

    hf, _ = load_classifier(str(tiny_model))
    recipe = recipes[("minmax", "gemm")]
    feeds = feeds_for(tiny_model, tiny_tsv)
    q, _ = emit(fp32[0], recipe, "ort-cpu")
    last = parse(fp32[0]).layers[-1].tensors["h"]
    q.graph.output.append(onnx.helper.make_empty_tensor_value_info(last))
    ref_q = numpy_bert.forward(hf, feeds, recipe, hidden=True)
    ref_fp = numpy_bert.forward(hf, feeds, hidden=True)
    real = feeds["attention_mask"].astype(bool)
    quant_effect = np.abs(ref_q - ref_fp)[real].mean()
    assert quant_effect > 1e-5  # the recipe really changes the numbers
    for exact, bound in ((True, 1e-3), (False, 50.0)):
        so = session_options(exact=exact)
        got = ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"]).run([last], feeds)[0]
        err = np.abs(got - ref_q)[real].mean()
        # exact integer kernels reproduce the fake-quant; the fast x86 path adds saturation error on top
        assert err < bound * quant_effect, (exact, err, quant_effect)


def test_peg_permutation_is_exact_and_groups_hold_outliers(recipes, fp32, tiny_model, tiny_tsv):
    recipe = recipes[("peg", "gemm")]
    perm = np.array(recipe.permutation)
    assert sorted(perm.tolist()) == list(range(32))
    assert set(perm[-8:].tolist()) >= set(OUTLIER_CHANNELS)  # planted channels share the last group
    x = recipe.sites[f"layer.{OUTLIER_LAYER}.z"]  # LayerNorm output feeding the next Q/K/V
    assert x.bounds == [[0, 8], [8, 16], [16, 24], [24, 32]]
    assert x.group_amax[-1] == max(x.group_amax) > 3 * x.group_amax[0]
    # Every site in fallback: only the folded permutation remains, so the function must be unchanged.
    everything = Recipe(**{**recipe.__dict__, "sites": {}})
    q, summary = emit(fp32[0], everything, "ort-cpu")
    assert summary["quantized_gemms"] == 0
    feeds = feeds_for(tiny_model, tiny_tsv)
    a = ort.InferenceSession(fp32[0].SerializeToString()).run(["logits"], feeds)[0]
    b = ort.InferenceSession(q.SerializeToString()).run(["logits"], feeds)[0]
    assert np.abs(a - b).max() < 1e-4


@pytest.mark.parametrize("target", ["ort-cpu", "trt"])
def test_grouped_non_gemm_tensor_is_each_channels_group_grid(recipes, fp32, tiny_model, tiny_tsv, target):
    """Under `full`, a grouped tensor no GEMM reads goes through x·(s/s_c) → one per-tensor Q/DQ(s) → ·(s_c/s):
    the result must be every channel on its own group's INT8 grid, as K sliced Q/DQs would give. Where an INT8
    linear writes the tensor (FFN2's h), x·(s/s_c) comes from its folded weight scales and bias, not a Mul."""
    recipe = recipes[("peg", "full")]
    grouped = [k for k, v in recipe.sites.items() if v.bounds and len(v.bounds) > 1 and k.endswith((".h", ".y"))]
    assert grouped  # the planted outliers make h/y grouped
    q, _ = emit(fp32[0], recipe, target, high_precision="fp32")
    concats = {n.output[0] for n in q.graph.node if n.op_type == "Concat" and n.name.startswith("qbert/")}
    assert not any(c.startswith(tuple(f"act.{k}." for k in grouped)) for c in concats)
    # a grouped tensor that GEMMs also read (LayerNorm outputs z/x) reuses their slices: one Concat each
    assert concats and all(recipe.sites[c[4:].rsplit(".", 1)[0]].bounds for c in concats)
    feeds = feeds_for(tiny_model, tiny_tsv)
    real = feeds["attention_mask"].astype(bool)
    muls = {n.output[0]: n for n in q.graph.node if n.op_type == "Mul"}
    assert any(k.endswith(".h") for k in grouped)
    for key in grouped:
        out = f"act.{key}.rescaled"
        assert out in muls and (f"act.{key}.prescaled" in muls) == key.endswith(".y")  # h: folded into FFN2
        q.graph.output.extend([onnx.helper.make_empty_tensor_value_info(f"act.{key}.prescaled"),
                               onnx.helper.make_empty_tensor_value_info(out)])
    sess = ort.InferenceSession(q.SerializeToString(), session_options(exact=True), providers=["CPUExecutionProvider"])
    for key in grouped:
        site = recipe.sites[key]
        pre, got = sess.run([f"act.{key}.prescaled", f"act.{key}.rescaled"], feeds)
        s = np.concatenate([np.full(b - a, m / 127.0) for (a, b), m in zip(site.bounds, site.group_amax)])
        x = pre.astype(np.float64) * s / s.max()  # the tensor itself, from its prescaled form x·(s_max/s_c)
        want = np.clip(np.rint(x / s), -128, 127) * s
        diff = np.abs(got - want)[real]
        steps = diff / s  # a float rounding tie may land one step away; nothing else may differ
        assert steps.max() < 1.0 + 1e-3 and (steps > 1e-3).mean() < 1e-3, (key, steps.max())
        assert np.unique(np.round(got[real] / s, 3)).size > 3  # really quantized, and on s_c's grid


def test_peg_emits_k_sliced_gemms(recipes, fp32):
    q, summary = emit(fp32[0], recipes[("peg", "gemm")], "ort-cpu", fuse=False)
    ops = [n.op_type for n in q.graph.node]
    # per layer: Q/K/V read z (3 × 4 slices), FFN1 reads x (4), attn-out and FFN2 per-tensor, 2 BMMs
    assert summary["quantized_gemms"] == 2 * (3 * 4 + 4 + 2 + 2)
    assert ops.count("Slice") >= 2 * 2 * 4 and "Gather" not in [n.op_type for n in q.graph.node
                                                                 if n.name.startswith("qbert/")]
    assert "Split" not in ops


@pytest.mark.parametrize("placement", ["gemm", "full"])
def test_qkv_read_one_grouped_tensor_as_one_gemm_per_group(recipes, fp32, tiny_model, tiny_tsv, placement):
    """By default Q, K and V (which all read the grouped z) are K GEMMs over their weights side by side, one bias
    Add and one Split: 3K → K INT8 GEMMs per layer, the same logits as one split GEMM per linear."""
    recipe = recipes[("peg", placement)]
    fused, summary = emit(fp32[0], recipe, "ort-cpu")
    apart, unfused = emit(fp32[0], recipe, "ort-cpu", fuse=False)
    assert summary["quantized_gemms"] == unfused["quantized_gemms"] - 2 * 2 * 4  # 2 layers × (12 − 4)
    splits = [n for n in fused.graph.node if n.op_type == "Split" and n.name.startswith("qbert/")]
    assert len(splits) == 2 and all(len(n.output) == 3 for n in splits)
    side = [t for t in fused.graph.initializer if ".side_by_side.rows" in t.name and t.name.endswith(".int8")]
    assert len(side) == 2 * 4 and all(t.dims[1] == 3 * 32 for t in side)  # [group rows, q | k | v columns]
    assert not any(n.name.endswith(("query/MatMul", "key/Add")) for n in fused.graph.node)
    feeds = feeds_for(tiny_model, tiny_tsv)
    outs = [lin.output for lin in parse(fp32[0]).layers[1].linears.values()][:3] + ["logits"]  # q, k, v, logits

    def run(m):
        m.graph.output.extend([onnx.helper.make_empty_tensor_value_info(t) for t in outs[:3]])
        return ort.InferenceSession(m.SerializeToString(), session_options(exact=True),
                                    providers=["CPUExecutionProvider"]).run(outs, feeds)

    for a, b in zip(run(fused), run(apart)):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max() and np.abs(b).max() > 1e-3


def test_fallback_and_recipe_roundtrip(tiny_onnx, tiny_tsv, fp32, tmp_path):
    model, meta = fp32
    r = calibrate(tiny_onnx, meta, model, str(tiny_tsv), method="minmax", placement="full", samples=32,
                  fallback=["x", "h", "y"])
    assert not any(k.endswith((".x", ".h", ".y")) for k in r.sites)
    assert len(r.fallback) == 3 * 2
    r.save(tmp_path / "r.json")
    again = Recipe.load(tmp_path / "r.json")
    a, _ = emit(model, r, "trt")
    b, _ = emit(model, again, "trt")
    assert a.SerializeToString() == b.SerializeToString()
    assert json.loads((tmp_path / "r.json").read_text())["versions"]["onnxruntime"] == ort.__version__


def test_groups_auto_splits_only_the_planted_outlier_tensors(tiny_onnx, tiny_tsv, fp32, tmp_path):
    """The planted channels dominate layer 0's FFN output h, residual sum y and (through LayerNorm γ) its output z:
    auto groups h and y and smooths z (layer 1's Q/K/V read it: one GEMM each, not one per group); GEMM inputs
    without outliers (embeddings, both FFN inputs) stay per-tensor — minmax's GEMM count, fewer than split groups."""
    model, meta = fp32
    run = lambda **kw: calibrate(tiny_onnx, meta, model, str(tiny_tsv), placement="full", samples=64, **kw)  # noqa
    r = run(method="peg", groups="auto")
    assert r.groups == "auto"
    grouped = {k for k, v in r.sites.items() if v.bounds}
    smoothed = {k for k, v in r.sites.items() if v.smooth is not None}
    assert {"layer.0.h", "layer.0.y"} <= grouped and smoothed == {"layer.0.z"}
    assert not grouped & {"emb.ln", "layer.0.x", "layer.1.x"}
    last = r.sites["layer.0.h"].bounds[-1]
    assert set(np.array(r.permutation)[last[0]:last[1]]) >= set(OUTLIER_CHANNELS)
    assert r.alpha == pytest.approx(0.85)
    split = run(method="peg", groups="auto", gemm_split="split")  # PEG as published: z split into groups
    assert r.sites["layer.0.z"].smooth is not None and split.sites["layer.0.z"].bounds
    gemms = {k: emit(model, rec, "ort-cpu", fuse=False)[1]["quantized_gemms"]  # one GEMM per linear and group
             for k, rec in (("auto", r), ("split", split), ("minmax", run(method="minmax")),
                            ("k4", run(method="peg", groups=4)))}
    assert gemms["minmax"] == gemms["auto"] < gemms["split"] < gemms["k4"]
    r.save(tmp_path / "r.json")
    assert Recipe.load(tmp_path / "r.json").groups == "auto"  # survives the recipe file


def test_groups_auto_smoothed_tensor_reaches_its_residual_reader_on_a_per_channel_grid(tiny_onnx, tiny_tsv, fp32,
                                                                                        tiny_model):
    """`full`, `--groups auto`: layer 1's Q/K/V read layer 0's z (planted outliers) through one smoothed per-tensor
    Q/DQ, and its residual Add reads that DQ · m — every channel c on a grid of step s·m_c. Both are closer to FP32
    than one per-tensor scale (minmax) gets them."""
    model, meta = fp32
    r = calibrate(tiny_onnx, meta, model, str(tiny_tsv), method="peg", groups="auto", placement="full", samples=64)
    smooth, _ = emit(model, r, "ort-cpu")
    mm_recipe = calibrate(tiny_onnx, meta, model, str(tiny_tsv), method="minmax", placement="full", samples=64)
    mm, _ = emit(model, mm_recipe, "ort-cpu")
    site = r.sites["layer.0.z"]
    assert not any(n.op_type == "Slice" and n.input[0] == site.tensor for n in smooth.graph.node)  # nothing split
    # ORT CPU: 1/m folded into the LayerNorm that writes z (no Mul before its Q/DQ); TensorRT keeps the Mul
    assert not any(n.name.startswith("qbert/act.layer.0.z/Smooth") for n in smooth.graph.node)
    assert any(n.name.startswith("qbert/act.layer.0.z/Smooth") for n in emit(model, r, "trt")[0].graph.node)
    add = parse(model).layers[1].tensors["u"]  # layer 1's first residual sum reads z (ONNX: z + attention out)
    reader = lambda m: next(x for x in {n.output[0]: n for n in m.graph.node}[add].input  # noqa: E731
                            if x.startswith("act.layer.0.z"))
    query = parse(model).layers[1].linears["query"].output
    feeds = feeds_for(tiny_model, tiny_tsv)

    def run(m, outs):
        m = onnx.ModelProto.FromString(m.SerializeToString())
        m.graph.output.extend([onnx.helper.make_empty_tensor_value_info(t) for t in outs])
        return ort.InferenceSession(m.SerializeToString(), session_options(exact=True),
                                    providers=["CPUExecutionProvider"]).run(outs, feeds)

    z_res, q_smooth = run(smooth, [reader(smooth), query])
    z_mm, q_mm = run(mm, [reader(mm), query])
    z_fp, q_fp = run(model, [site.tensor, query])
    z_fp = z_fp[..., np.array(r.permutation)]  # the emitted stream is in PEG's channel order
    step = float(onnx.numpy_helper.to_array(next(t for t in smooth.graph.initializer
                                                 if t.name == "act.layer.0.z.scale"))) * np.array(site.smooth)
    levels = z_res / step
    assert np.abs(levels - np.round(levels)).max() < 1e-2  # on each channel's own grid s·m_c
    normal = ~np.isin(np.array(r.permutation), OUTLIER_CHANNELS)
    err = lambda a, b: float(np.abs(a - b)[..., normal].mean())  # noqa: E731
    assert err(z_res, z_fp) < 0.5 * err(z_mm, z_fp), (err(z_res, z_fp), err(z_mm, z_fp))
    rel = lambda q: float(np.abs(q - q_fp).mean() / np.abs(q_fp).mean())  # noqa: E731
    assert rel(q_smooth) < 0.5 * rel(q_mm), (rel(q_smooth), rel(q_mm))


def test_method_auto_budget_is_on_the_drops_upper_confidence_bound():
    from qbert.calibration.judge import drop_bound

    fp = np.ones(1000, dtype=bool)
    q = fp.copy()
    q[:30] = False  # 30 breaks, no fixes: drop 3 pt, SE = sqrt(0.03 * 0.97 / 999) (sample SD of a 0/1 difference)
    drop, se, bound = drop_bound(fp, q)
    assert drop == pytest.approx(3.0) and se == pytest.approx(100 * np.sqrt(0.03 * 0.97 * 1000 / 999 / 1000))
    assert bound == pytest.approx(drop + 1.645 * se)
    q[30:60] = False
    fp[30:60] = False  # rows both get wrong change nothing
    fp[60:90] = False  # 30 fixes cancel the 30 breaks: drop 0 but a real SE (flips are noise, not signal)
    drop, se, bound = drop_bound(fp, q)
    assert drop == pytest.approx(0.0) and bound == pytest.approx(1.645 * se) and se > 0.5


def test_method_auto_rule_fastest_within_budget_else_least_divergence():
    """Within budget: the fastest, and of those as fast (p50 within 10 %) the least divergence from FP32; else the
    least divergence. Flips do not rank: a row or two apart they are a coin toss (judge.unfaithfulness)."""
    from qbert.calibration.select import pick

    row = lambda name, ms, kl, bound, ok, flips=0.01: dict(  # noqa: E731
        name=name, p50_ms_b1=ms, divergence=kl, flips=flips, drop_bound_points=bound, within_budget=ok)
    speed = lambda r: r["p50_ms_b1"]  # noqa: E731
    rows = [row("slow ok", 30, 0.005, 0.1, True), row("fast ok", 20, 0.004, 0.2, True),
            row("fastest", 10, 0.001, 2, False)]
    assert pick(rows, speed)["name"] == "fast ok"
    rows = [row("low bound", 10, 0.004, 0.5, False), row("faithful", 30, 0.002, 1.0, False),
            row("faithful, lower bound", 40, 0.002, 0.8, False)]
    assert pick(rows, speed)["name"] == "faithful, lower bound"  # nothing passes: least divergence, then bound
    rows = [row("fastest, diverges more", 10.0, 0.005, 0.1, True, flips=0.006),
            row("as fast, diverges less", 10.9, 0.002, 0.2, True, flips=0.009),
            row("slower, diverges least", 11.2, 0.001, 0.1, True), row("out of budget", 9, 0.0, 1.0, False)]
    assert pick(rows, speed)["name"] == "as fast, diverges less"  # within 10 %: the most faithful, flips or not
    assert pick(rows, speed, timed=False)["name"] == "fastest, diverges more"  # counted speeds tie only when equal


def test_divergence_from_fp32_grows_with_the_shift_and_is_zero_without_one():
    from qbert.calibration.judge import divergence, judge_against

    rng = np.random.default_rng(0)
    fp = rng.normal(size=(500, 2)).astype(np.float32) * 3
    small, large = fp + rng.normal(size=fp.shape) * 0.05, fp + rng.normal(size=fp.shape) * 0.5
    assert divergence(fp, fp) == pytest.approx(0.0, abs=1e-12)
    assert 0 < divergence(small, fp) < divergence(large, fp)
    assert divergence(fp + 7.0, fp) == pytest.approx(0.0, abs=1e-9)  # a shift of every logit changes no probability
    p, q = np.exp(fp) / np.exp(fp).sum(-1, keepdims=True), np.exp(large) / np.exp(large).sum(-1, keepdims=True)
    assert divergence(large, fp) == pytest.approx(float((p * np.log(p / q)).sum(-1).mean()), rel=1e-4)  # KL(FP32‖q)
    labels = fp.argmax(-1)
    judged = judge_against(large, fp, labels, 0.3)
    assert judged["divergence"] == pytest.approx(divergence(large, fp)) and judged["flips"] > 0
    broken = large.copy()
    broken[3] = np.nan  # one row of a broken candidate: ranked last, whatever order the candidates come in
    assert divergence(broken, fp) == float("inf")
    assert divergence(np.where(np.arange(2) == 0, np.inf, large), fp) == float("inf")
    from qbert.calibration.select import pick

    rows = [dict(name=n, divergence=divergence(o, fp), drop_bound_points=0.0, within_budget=True, p50_ms_b1=1.0)
            for n, o in (("broken", broken), ("good", small))]
    assert pick(rows, lambda r: r["p50_ms_b1"])["name"] == pick(rows[::-1], lambda r: r["p50_ms_b1"])["name"] == "good"


def test_method_auto_rule_ranks_embedding_candidates_by_neighbours_kept():
    """An embedding model's candidates are ranked by the criterion (FP32 neighbours lost), not by how many
    sentences changed their one nearest neighbour: fewer flips must not beat more neighbours kept."""
    from qbert.calibration.select import pick

    row = lambda name, ms, kept, flips, ok: dict(  # noqa: E731
        name=name, p50_ms_b1=ms, top10_kept=kept, flips=flips, drop_points=100 * (1 - kept),
        drop_bound_points=100 * (1 - kept) + 0.3, within_budget=ok)
    speed = lambda r: r["p50_ms_b1"]  # noqa: E731
    rows = [row("float FFN2: fewer flips", 10.2, 0.9654, 0.042, False),
            row("outlier channels: more kept", 7.4, 0.9744, 0.049, False)]
    assert pick(rows, speed)["name"] == "outlier channels: more kept"  # nothing within budget: the most kept
    rows = [row("fastest", 7.4, 0.985, 0.010, True), row("as fast, more kept", 7.9, 0.990, 0.030, True),
            row("slower, most kept", 10.0, 0.995, 0.001, True)]
    assert pick(rows, speed)["name"] == "as fast, more kept"  # equally fast: the most neighbours kept


def test_method_auto_keeps_the_fastest_within_budget(tiny_onnx, fp32, tmp_path, monkeypatch):
    from qbert.calibration import select
    from tests.conftest import write_tsv

    model, meta = fp32
    data = write_tsv(tmp_path / "d.tsv", 400, seed=3)
    timed: dict = {}
    real = select._latency
    monkeypatch.setattr(select, "_latency", lambda runs, *a, **k: timed.setdefault("out", real(runs, *a, **k)))
    r = calibrate(tiny_onnx, meta, model, str(data), method="auto", samples=64)
    report = r.calibration["auto_method"]
    rows = report["candidates"]
    assert len(rows) == 17 and report["heldout_rows"] == 336 and report["budget_points"] == 0.3
    assert {(c["alpha"], c["asymmetric"]) for c in rows if c["method"] == "smoothquant"} == {
        (0.85, False), (0.95, False), (1.0, False), (0.95, True), (1.0, True), (0.85, True)}
    assert "smoothquant α=0.85, gemm, p/v in high precision, a's 4 largest channels in high precision, asymmetric" \
        in {c["name"] for c in rows}
    kept = next(c for c in rows if c["name"] == "smoothquant α=0.85, gemm, a in high precision")
    assert kept["method"] == "smoothquant" and kept["groups"] == 1  # SmoothQuant with its FFN2 inputs left FP32
    ok = [c for c in rows if c["within_budget"]]
    assert all(c["within_budget"] == (c["drop_bound_points"] <= 0.3 + 1e-9) for c in rows)
    assert all(c["drop_bound_points"] >= c["drop_points"] for c in rows)
    chosen = next(c for c in rows if c["name"] == report["chosen"])
    if ok:  # of those that pass, the as-fast-as-the-fastest with the least divergence; else the least divergence
        fastest = min(c["speed_ms_b1"] for c in ok)  # each graph structure's timing
        tied = [c for c in ok if c["speed_ms_b1"] <= 1.1 * fastest]
        assert chosen in tied and chosen["divergence"] == min(c["divergence"] for c in tied)
    else:
        assert chosen["divergence"] == min(c["divergence"] for c in rows)
    assert (r.method, r.placement) == (chosen["method"], chosen["placement"]) and r.method != "auto"
    smoothed = {c["structure"] for c in rows if c["method"] == "smoothquant" and "high precision" not in c["name"]}
    assert len(smoothed) == 1  # α and grids change numbers, not the graph: one speed for all of them
    keys = list(timed["out"])  # one runner timed per structure, in order of first appearance (= its number)
    assert len(keys) == len({c["structure"] for c in rows})
    assert all(c["p50_ms_b1"] == timed["out"][keys[c["structure"] - 1]][0] for c in rows)
    assert len({c["structure"] for c in rows}) >= 5  # PEG K=4, full, SmoothQuant, FP32 FFN2 each a graph of its own
    trt = calibrate(tiny_onnx, meta, model, str(data), method="auto", samples=64, target="trt", budget=100.0)
    counts = {c["name"]: (c["int8_gemms"], c["qdq_pairs"]) for c in trt.calibration["auto_method"]["candidates"]}
    assert len(counts) == 13 and not any("high precision" in n for n in counts)  # a count can't price a float GEMM
    assert not any("asymmetric" in n for n in counts)  # TensorRT runs symmetric INT8 only
    assert counts[trt.calibration["auto_method"]["chosen"]] == min(counts.values())  # fewest INT8 GEMMs, no timing
    # counted per linear and group (the work), not per emitted kernel: Q/K/V side by side do not look cheaper
    assert counts["peg groups=4, gemm"][0] == 2 * (3 * 4 + 4 + 2 + 2) > counts["minmax, gemm"][0]
    with pytest.raises(Exception, match="needs ≥ 256 held-out rows"):
        calibrate(tiny_onnx, meta, model, str(data), method="auto", samples=200)


def test_method_auto_candidate_with_ffn2_inputs_in_high_precision_leaves_them_unquantized(tiny_onnx, fp32, tmp_path,
                                                                                        monkeypatch):
    """The one candidate that keeps a role in high precision: its recipe has no FFN2-input site and the emitted
    graph feeds every FFN2 GEMM a float input, while the other GEMM inputs stay smoothed INT8."""
    from qbert.calibration import select
    from tests.conftest import write_tsv

    model, meta = fp32
    only = [c for c in select.CANDIDATES if c.keep == ("a",)]
    assert only == [select.Candidate("gemm", "smoothquant", keep=("a",))]
    monkeypatch.setattr(select, "CANDIDATES", only)
    data = write_tsv(tmp_path / "d.tsv", 400, seed=3)
    r = calibrate(tiny_onnx, meta, model, str(data), method="auto", samples=64)
    layers = {k.split(".")[1] for k in r.sites if k.startswith("layer.")}
    assert r.method == "smoothquant" and layers and not any(k.endswith(".a") for k in r.sites)
    assert sorted(r.fallback) == sorted(f"layer.{i}.a" for i in layers)
    assert all(s.smooth is not None for k, s in r.sites.items() if k.endswith((".x", ".context")))
    q, _ = emit(model, r, "ort-cpu")
    producers = {o: n for n in q.graph.node for o in n.output}
    ffn2 = [n for n in q.graph.node if n.op_type == "MatMul" and "output/dense" in n.name and "attention" not in n.name]
    assert ffn2 and all(producers[n.input[0]].op_type != "DequantizeLinear" for n in ffn2)


def test_bias_correction_restores_each_gemms_mean_output(fp32, tiny_model, tiny_tsv):
    """With INT8 weights (activations kept FP32), layer 0's Q projection output drifts from FP32 by E[x]·(W_q − W)
    per channel; the corrected bias brings the mean over the calibration tokens back to FP32's."""
    from qbert.calibration.bias import apply_bias_shifts, bias_shifts
    from qbert.calibration.clips import int8_per_channel
    from qbert.calibration.observe import Observer
    from qbert.calibration.peg import Initializers
    from qbert.calibration.placement import sites as placement_sites
    from qbert.exporter.graph import parse

    model, _ = fp32
    feeds = feeds_for(tiny_model, tiny_tsv, n=48)
    sites = placement_sites(parse(model), "gemm")
    stats = Observer(model, sites, histograms=False, channel_sums=True).run([feeds])
    shifts = bias_shifts(model, stats, sites)
    query = parse(model).layers[0].linears["query"]
    assert query.name in shifts and np.abs(shifts[query.name]).max() > 0

    real = feeds["attention_mask"].astype(bool)

    def mean_output(m) -> np.ndarray:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(query.output))
        out = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run([query.output],
                                                                                               feeds)[0]
        return out[real].mean(axis=0)

    def copy(correct: bool | None):  # None: FP32 as is; else INT8 weights, bias corrected or not
        m = onnx.ModelProto()
        m.CopyFrom(model)
        if correct is None:
            return m
        if correct:
            apply_bias_shifts(m, shifts)
        inits = Initializers(m)
        for lin in parse(m).linears():
            if lin.name in shifts:
                inits.replace_input(lin.node, 1, lambda w: np.multiply(*int8_per_channel(w)).astype(w.dtype), ".wq")
        return m

    fp_mean = mean_output(copy(None))
    raw, fixed = (np.abs(mean_output(copy(c)) - fp_mean).max() for c in (False, True))
    assert raw > 1e-4 and fixed < raw / 20, (raw, fixed)


def test_smoothquant_moves_input_ranges_into_weight_rows(tiny_onnx, tiny_tsv, fp32, tiny_model):
    """Smoothed sites: m = amax^α / wmax^(1−α) per channel, the per-tensor clip of x/m from the channel maxima,
    a Mul before the Q/DQ and m folded into the weight rows — the FP32 function is unchanged with every site in
    high precision except the smoothing, and the INT8 graph stays closer to FP32 than per-tensor minmax on the
    planted outlier channels."""
    from qbert.calibration.smooth import factors

    model, meta = fp32
    run = lambda **kw: calibrate(tiny_onnx, meta, model, str(tiny_tsv), samples=64, **kw)  # noqa
    sq, mm = run(method="smoothquant", alpha=0.5), run(method="minmax")
    smoothed = {k: v for k, v in sq.sites.items() if v.smooth is not None}
    assert set(smoothed) == {k for k in mm.sites if k.endswith((".x", ".a", ".context", ".z", "emb.ln"))} & \
        set(sq.sites) and smoothed
    stream = smoothed[f"layer.{OUTLIER_LAYER}.z"]  # LayerNorm output with the planted channels, read by Q/K/V
    m = np.array(stream.smooth)
    assert m[list(OUTLIER_CHANNELS)].min() > np.median(m) * 2  # outlier channels get the largest divisors
    assert stream.amax < mm.sites[f"layer.{OUTLIER_LAYER}.z"].amax / 2  # one scale now fits a much smaller range
    assert factors(np.array([4.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]), 0.5).tolist() == [2.0, 1.0, 1.0]
    assert sq.alpha == 0.5 and mm.alpha is None
    import inspect

    from qbert import cli
    from qbert.api import CalibrationConfig
    from qbert.calibration.smooth import ALPHA
    from qbert.reproduction import ROWS
    defaults = {CalibrationConfig(data="x").alpha, inspect.signature(cli.calibrate).parameters["alpha"].default.default,
                *(r.calibrate["alpha"] for r in ROWS if r.calibrate.get("method") == "smoothquant")}
    assert defaults == {ALPHA}  # one default α everywhere (chosen on held-out rows; see smooth.py)
    q, summary = emit(model, sq, "ort-cpu")
    assert summary["quantized_gemms"] == emit(model, mm, "ort-cpu")[1]["quantized_gemms"]  # no extra GEMMs
    assert sum(n.op_type == "Mul" and "/Smooth/" in n.name for n in q.graph.node) == len(smoothed)
    from qbert.exporter.graph import parse

    feeds = feeds_for(tiny_model, tiny_tsv)
    query = parse(model).layers[OUTLIER_LAYER + 1].linears["query"].output  # reads the planted channels

    def run_to_query(m):
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(query))
        return ort.InferenceSession(m.SerializeToString(), session_options(exact=True)).run([query], feeds)[0]

    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    ref = run_to_query(plain)
    err = {name: np.abs(run_to_query(emit(model, r, "ort-cpu")[0]) - ref).mean() for name, r in (("sq", sq),
                                                                                                  ("mm", mm))}
    assert err["sq"] < err["mm"] / 1.5, err
    with pytest.raises(Exception, match="placement='full': .* gemm placement only"):
        run(method="smoothquant", placement="full")
    with pytest.raises(Exception, match="alpha"):
        run(method="smoothquant", alpha=1.5)
