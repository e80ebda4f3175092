"""The rest of the BERT family: tiny random RoBERTa (and XLM-R, CamemBERT), ELECTRA (base: embeddings as wide as
the stream; small: projected embeddings), DistilBERT (no token types, one embedding sum) and ALBERT (one layer
shared across depth, projected embeddings), each built with its released checkpoint's configuration values
(RoBERTa-style pad id 1 with in-graph position ids and a single token type, eps, activation, embedding width)
and planted outlier channels, through export, the role map, both placements, every method, PEG, FP16 fallback,
TensorRT-RTX, analyze and the CLI — plus one-line refusals for what is not supported."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from qbert.artifacts import load_meta
from tests.helpers.calibration import calibrate
from qbert.calibration.emit import emit
from qbert.cli import app
from qbert.data import load_dataset_spec
from qbert.encoding import batches, encode
from qbert.engines.onnxruntime import ort_census, session_options
from qbert.ort_session import unshare_weights
from qbert.exporter.export import export
from qbert.exporter.graph import parse
from qbert.exporter.hf import forward_inputs, load_classifier
from tests.conftest import OUTLIER_CHANNELS, build_tiny, model_type as kind_of
from tests.helpers.fakequant_torch import fake_quant_forward

FAMILY = ("roberta", "xlm-roberta", "camembert", "electra", "electra-small", "distilbert", "albert")
PROJECTED = ("electra-small", "albert")  # embedding_size < hidden_size: a projection starts the residual stream
BMM_SITES = ["q", "k_t", "p", "v"]  # the reference quantizes GEMM inputs only


@pytest.fixture(scope="module", params=FAMILY)
def family(request, tmp_path_factory):
    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    folder = build_tiny(root / "model", arch)
    path = root / "fp32.onnx"
    export(str(folder), path)
    return arch, folder, path


def rows(folder, tsv, n=24):
    _, tok = load_classifier(str(folder))
    ds = load_dataset_spec(str(tsv), {"entailment": 0, "not_entailment": 1}, limit=n)
    return next(iter(batches(encode(ds, tok, 64), n)))[1]


def run_ort(model, feeds, exact=True):
    if exact:  # ORT's exact path cannot load an INT8 weight shared by several readers (ALBERT); see ort_session
        model = onnx.ModelProto.FromString(model.SerializeToString())
        unshare_weights(model)
    sess = ort.InferenceSession(model.SerializeToString(), session_options(exact=exact),
                                providers=["CPUExecutionProvider"])
    return sess.run(["logits"], feeds)[0]


def test_export_parity_and_sidecar(family, tiny_tsv):
    import torch

    arch, folder, path = family
    meta = load_meta(path)
    assert meta.model_type == kind_of(arch) and meta.parity["max_abs_logit_diff"] < 1e-5
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    hf, _ = load_classifier(str(folder))
    feeds = rows(folder, tiny_tsv)  # padded batch of varied lengths
    with torch.no_grad():
        ref = hf(**forward_inputs(hf, {k: torch.from_numpy(v) for k, v in feeds.items()})).logits.numpy()
    assert np.abs(run_ort(onnx.load(str(path)), feeds) - ref).max() < 1e-4


def test_role_map_finds_every_gemm(family):
    arch, _, path = family
    model = onnx.load(str(path))
    g = parse(model)
    meta = load_meta(path)
    assert len(g.layers) == meta.num_layers == 2 and len(g.linears()) == 6 * meta.num_layers
    inits = {t.name for t in model.graph.initializer}
    weight_gemms = {n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}
    mapped = {lin.node.name for lin in g.linears()} | ({g.emb_proj.node.name} if g.emb_proj else set())
    assert weight_gemms == mapped  # every GEMM with a weight has a role
    assert {n.name for n in model.graph.node if n.op_type == "Gemm"} == {h.name for h in g.heads}
    assert (g.emb_proj is not None) == (arch in PROJECTED)
    assert len(g.emb_adds) == (1 if arch == "distilbert" else 2)
    for layer in g.layers:  # both attention batched matmuls and the softmax between them
        assert layer.bmm_qk.op_type == layer.bmm_pv.op_type == "MatMul"
        assert layer.tensors["u"] == layer.ln_attn.input[0] and layer.tensors["y"] == layer.ln_out.input[0]


@pytest.mark.parametrize("placement", ["gemm", "full"])
def test_both_placements_run_on_integer_kernels(family, tiny_tsv, tmp_path, placement):
    _, folder, path = family
    model, meta = onnx.load(str(path)), load_meta(path)
    fp = run_ort(model, rows(folder, tiny_tsv), exact=False)
    for method in ("minmax", "peg"):
        recipe = calibrate(path, meta, model, str(tiny_tsv), method=method, placement=placement, samples=64,
                           groups=4)
        q, summary = emit(model, recipe, "ort-cpu")
        onnx.checker.check_model(q, full_check=True)
        out = tmp_path / f"{method}.onnx"
        onnx.save(q, str(out))
        census = ort_census(str(out), seq=32)
        assert census["integer_gemms"] == summary["quantized_gemms"] > 0
        if placement == "gemm":
            assert census["float_activation_gemms"] == 0 and census["integer_mac_share"] > 0.95
        got = run_ort(q, rows(folder, tiny_tsv), exact=False)
        assert np.isfinite(got).all() and np.abs(got - fp).max() < 0.5 * np.abs(fp).max() + 0.5


@pytest.mark.parametrize("groups", [1, 4])
def test_ort_integer_graph_matches_torch_fake_quant(family, tiny_tsv, groups):
    """PEG (and per-tensor, K=1) through the folded permutation vs fake quantization hooked into the model's
    own torch modules in its own channel order: the graph computes what the recipe says."""
    arch, folder, path = family
    model, meta = onnx.load(str(path)), load_meta(path)
    recipe = calibrate(path, meta, model, str(tiny_tsv), method="peg" if groups > 1 else "minmax",
                       placement="gemm", samples=64, fallback=BMM_SITES, **({"groups": groups} if groups > 1 else {}))
    if groups > 1:
        perm = np.array(recipe.permutation)
        assert sorted(perm) == list(range(32)) and set(perm[-8:]) >= set(OUTLIER_CHANNELS)
    feeds = rows(folder, tiny_tsv)
    _, ref_q = fake_quant_forward(folder, kind_of(arch), recipe, feeds)
    _, ref_fp = fake_quant_forward(folder, kind_of(arch), None, feeds)
    real = feeds["attention_mask"].astype(bool)
    effect = np.abs(ref_q - ref_fp)[real].mean()
    assert effect > 1e-5  # quantization really changes the numbers
    q, _ = emit(model, recipe, "ort-cpu")
    last = parse(model).layers[-1].tensors["h"]
    q.graph.output.append(onnx.helper.make_empty_tensor_value_info(last))
    unshare_weights(q)
    sess = ort.InferenceSession(q.SerializeToString(), session_options(exact=True), providers=["CPUExecutionProvider"])
    got = sess.run([last], feeds)[0]
    if recipe.permutation is not None:  # the graph's stream is in the permuted channel order
        ref_q = ref_q[..., recipe.permutation]
    err = np.abs(got - ref_q)[real].mean()
    assert err < 1e-3 * effect + 1e-6, (err, effect)  # + float32 summation-order noise


@pytest.mark.parametrize("groups", [4, "auto"])
def test_peg_alone_is_exact_and_albert_stays_shared(family, tiny_tsv, groups):
    """Every site in fallback leaves only the folded permutation: the function is unchanged. ALBERT's one
    shared layer stays one set of weights after folding and INT8 conversion — also under groups auto, which
    splits (not smooths) a grouped tensor whose GEMMs share their weights across layers."""
    arch, folder, path = family
    model, meta = onnx.load(str(path)), load_meta(path)
    recipe = calibrate(path, meta, model, str(tiny_tsv), method="peg", placement="full", samples=64, groups=groups)
    if groups == "auto":  # the planted outliers make layer 0's z need groups: smoothed, except on ALBERT
        assert any(s.smooth is not None for s in recipe.sites.values()) == (arch != "albert")
    from qbert.calibration.recipe import Recipe

    folded, summary = emit(model, Recipe(**{**recipe.__dict__, "sites": {}}), "ort-cpu")
    assert summary["quantized_gemms"] == 0
    feeds = rows(folder, tiny_tsv)
    assert np.abs(run_ort(folded, feeds) - run_ort(model, feeds)).max() < 1e-4
    q, _ = emit(model, recipe, "trt")
    g = parse(model)
    int8 = {t.name for t in q.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2}
    weight_bytes = sum(int(np.prod(t.dims)) for t in q.graph.initializer if t.name in int8)
    per_layer = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                    if t.name in {lin.weight for lin in g.layers[0].linears.values()})
    if arch != "albert":
        assert weight_bytes == per_layer * len(g.layers)
    elif groups == 4:
        assert weight_bytes == per_layer
    else:  # auto: a K per tensor slices the shared weights by more than one layout, but never copies them per layer
        assert per_layer <= weight_bytes < per_layer * len(g.layers)


def test_tensorrt_rtx_builds_peg_with_fp16_fallback_for_sm86(family, tiny_tsv, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from qbert.engines.tensorrt import build

    _, _, path = family
    model, meta = onnx.load(str(path)), load_meta(path)
    recipe = calibrate(path, meta, model, str(tiny_tsv), method="peg", placement="full", samples=64, groups=4,
                       fallback=["h"])  # the FFN output stays FP16
    q, summary = emit(model, recipe, "trt")
    assert summary["high_precision"] == "fp16"
    out = tmp_path / "q.onnx"
    onnx.save(q, str(out))
    plan = build(out, tmp_path / "q.plan", backend="tensorrt-rtx", sm=86, shapes="1x1/4x32/8x64", opt_level=0)
    assert plan.target == "SM86" and plan.plan_bytes > 0


def test_analyze_reads_every_architecture(family, tiny_tsv, tmp_path):
    from qbert.api import analyze

    _, _, path = family
    result = analyze(path, str(tiny_tsv), tmp_path / "analysis", samples=32, heldout=64)
    assert len(result["layers"]["hidden_states"]) == 3 and set(result["sensitivity"]) == {"layer.0", "layer.1"}
    assert (tmp_path / "analysis" / "analysis.json").is_file()


def test_cli_export_calibrate_peg_eval_build(family, tiny_tsv, tmp_path):
    runner = CliRunner()
    _, folder, _ = family
    inv = lambda *a: runner.invoke(app, [str(x) for x in a])  # noqa: E731
    steps = [("export", "--model", folder, "--out", tmp_path / "m.onnx"),
             ("calibrate", "--onnx", tmp_path / "m.onnx", "--data", tiny_tsv, "--method", "peg", "--groups", 4,
              "--placement", "full", "--samples", 64, "--out", tmp_path / "q.onnx"),
             ("eval", "--onnx", tmp_path / "q.onnx", "--data", tiny_tsv, "--json", tmp_path / "q.json"),
             ("eval", "--onnx", tmp_path / "q.onnx", "--data", tiny_tsv, "--exact", "--json", tmp_path / "x.json"),
             ("eval", "--model", folder, "--engine", "torch", "--data", tiny_tsv, "--json", tmp_path / "t.json")]
    for step in steps:
        r = inv(*step)
        assert r.exit_code == 0, (step[0], r.stderr)
    assert json.loads((tmp_path / "q.json").read_text())["examples"] == 96
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        return
    r = inv("calibrate", "--onnx", tmp_path / "m.onnx", "--data", tiny_tsv, "--method", "peg", "--groups", 4,
            "--samples", 64, "--target", "trt", "--out", tmp_path / "t.onnx")
    assert r.exit_code == 0, r.stderr
    r = inv("build", "--onnx", tmp_path / "t.onnx", "--out", tmp_path / "t.plan", "--sm", 86, "--shapes",
            "1x1/2x32/4x64", "--opt-level", 0)
    assert r.exit_code == 0 and (tmp_path / "t.plan").stat().st_size > 0, r.stderr


@pytest.mark.parametrize("model_type,needle", [
    ("deberta-v2", "'deberta-v2' is not supported yet (disentangled attention"),
    ("gpt2", "'gpt2' is not supported; supported: bert, roberta, xlm-roberta, camembert, electra, distilbert, albert"),
])
def test_unsupported_architectures_get_one_line(tmp_path, model_type, needle):
    from transformers import AutoConfig

    folder = tmp_path / model_type
    cfg = AutoConfig.for_model(model_type)
    cfg.architectures = [cfg.__class__.__name__.replace("Config", "ForSequenceClassification")]
    cfg.save_pretrained(folder)
    r = CliRunner().invoke(app, ["export", "--model", str(folder), "--out", str(tmp_path / "m.onnx")])
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_reproduce_runs_on_albert(tmp_path):
    """The study's pipeline on the hardest case: shared layers, projected embeddings (FP32 and PEG K=4 rows)."""
    from qbert.reproduction import reproduce
    from tests.conftest import write_tsv

    model = build_tiny(tmp_path / "albert", "albert")
    evald, calibd = write_tsv(tmp_path / "e.tsv", 40, seed=5), write_tsv(tmp_path / "c.tsv", 120, seed=6)
    rep = reproduce(str(model), str(evald), str(calibd), tmp_path / "rep", samples=32, bench_iters=2,
                    analysis_samples=16, only=["FP32", "PEG K=4 permuted"])
    assert [r["name"] for r in rep["rows"]] == ["FP32", "PEG K=4 permuted"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rep["rows"])
    assert "PEG K=4 permuted" in (tmp_path / "rep" / "report.md").read_text()


def test_a_tokenizer_with_more_token_types_than_the_model_is_refused(tmp_path):
    """A BERT with type_vocab_size=1 beside a tokenizer that marks pairs with type 1 would index past its table."""
    from transformers import AutoModelForSequenceClassification

    folder = build_tiny(tmp_path / "m", "bert")
    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    model.config.type_vocab_size = 1
    type(model)(model.config).save_pretrained(folder)
    r = CliRunner().invoke(app, ["export", "--model", str(folder), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "type_vocab_size=1" in r.stderr and not (tmp_path / "m.onnx").exists()



METHODS = [("minmax", "gemm"), ("minmax", "full"), ("percentile", "gemm"), ("percentile", "full"),
           ("mse", "gemm"), ("mse", "full"), ("entropy", "gemm"), ("entropy", "full"), ("smoothquant", "gemm"),
           ("peg", "gemm"), ("peg", "full"), ("peg-auto", "gemm"), ("peg-auto", "full")]


def test_every_method_and_placement_quantizes_evaluates_and_builds(family, tiny_tsv, tmp_path):
    """Released configurations through every method × placement: only float tensors quantized, a graph ORT
    runs on integer kernels, evaluated end to end, and for TensorRT a plan TensorRT-RTX builds for SM86 (the full
    placement, where a RoBERTa-style model's in-graph position ids — an integer Add under the embeddings — once
    became a QuantizeLinear on int64)."""
    from qbert.api import evaluate, quantize

    arch, _, path = family
    model, meta = onnx.load(str(path)), load_meta(path)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input)}
    try:
        import tensorrt_rtx  # noqa: F401
        from qbert.engines.tensorrt import build as rtx_build
    except ImportError:
        rtx_build = None
    for method, placement in METHODS:
        recipe = calibrate(path, meta, model, str(tiny_tsv), method=method.removesuffix("-auto"),
                           placement=placement, samples=48, groups="auto" if method == "peg-auto" else 4)
        for target in ("ort-cpu", "trt"):
            out = tmp_path / f"{method}-{placement}-{target}.onnx"
            side = quantize(path, recipe, out, target)
            q = onnx.load(str(out))
            quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
            assert {dtype.get(t, onnx.TensorProto.FLOAT) for t in quantized} <= {onnx.TensorProto.FLOAT}, \
                (method, placement, [t for t in quantized if dtype.get(t) != onnx.TensorProto.FLOAT])
            if target == "ort-cpu":
                census = ort_census(str(out), seq=32)
                assert census["integer_gemms"] == side.quantization["quantized_gemms"] > 0, (method, placement)
                result = evaluate(out, str(tiny_tsv), limit=32)
                assert result["examples"] == 32 and 0.0 <= result["accuracy"] <= 1.0
            elif rtx_build is not None and (placement == "full" or method == "smoothquant"):
                plan = rtx_build(out, tmp_path / f"{out.stem}.plan", backend="tensorrt-rtx", sm=86,
                                 shapes="1x1/2x16/4x32", opt_level=0)
                assert plan.plan_bytes > 0, (arch, method)


def test_method_auto_and_auto_fp16_on_released_configurations(family, tmp_path):
    """The two searches run the quantized candidates on held-out rows: both must get through every
    architecture's released configuration (RoBERTa-style pad id 1 crashed both)."""
    from qbert.api import CalibrationConfig, calibrate as api_calibrate, quantize
    from tests.conftest import write_tsv

    arch, _, path = family
    data = write_tsv(tmp_path / "calib.tsv", 64 + 256, seed=3)
    for config in (CalibrationConfig(data=str(data), method="auto", samples=64, heldout=256),
                   CalibrationConfig(data=str(data), method="minmax", placement="full", samples=64, heldout=256,
                                     auto_fp16=True, budget=0.0)):
        recipe = api_calibrate(path, config)
        side = quantize(path, recipe, tmp_path / "q.onnx")
        key = "auto_method" if config.method == "auto" else "auto_fp16"
        assert key in recipe.calibration and side.quantization["quantized_gemms"] >= 0, arch


def test_reproduce_runs_on_a_roberta_with_released_ids(tmp_path, capfd):
    """The study's pipeline on a RoBERTa with pad id 1 and one token type, through the full placement rows, on
    rows longer than its 64 positions: every step tokenizes to the exported model's length."""
    from qbert.reproduction import reproduce
    from tests.conftest import write_tsv

    model = build_tiny(tmp_path / "roberta", "roberta")
    evald = write_tsv(tmp_path / "e.tsv", 40, seed=5, words=(60, 90))
    calibd = write_tsv(tmp_path / "c.tsv", 120, seed=6, words=(30, 90))
    rep = reproduce(str(model), str(evald), str(calibd), tmp_path / "rep", samples=32, bench_iters=2,
                    analysis_samples=16, seeds=1, only=["FP32", "W8A8 minmax, placement full", "PEG K=4 permuted"])
    names = [r["name"] for r in rep["rows"]]
    assert names[0] == "FP32" and "PEG K=4 permuted" in names and any("placement full" in n for n in names), names
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["census"]["integer_gemms"] > 0 for r in rep["rows"][1:])
    from qbert.encoding import random_feeds
    from qbert.engines import open_engine
    from qbert.errors import QbertError

    capfd.readouterr()
    with open_engine("ort-cpu", str(tmp_path / "rep" / "fp32.onnx")) as eng, pytest.raises(QbertError):
        eng.run(random_feeds(2, 128, 50))  # past the model's positions: qbert's one line, not ORT's log as well
    assert "onnxruntime" not in capfd.readouterr().err
