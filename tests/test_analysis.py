"""Outlier statistics, automatic mixed precision and the resumable reproduction on the tiny planted BERT."""
from pathlib import Path

import numpy as np
import onnx
import pytest

from qbert.artifacts import load_meta
from qbert.calibration.observe import AbsHistogram, TensorStats
from qbert.data import load_dataset_spec
from qbert.encoding import encode
from qbert.eval.stats import summarize
from qbert.exporter.hf import load_tokenizer
from tests.conftest import OUTLIER_CHANNELS, OUTLIER_LAYER, write_tsv


def stats_of(x: np.ndarray) -> TensorStats:
    """TensorStats fed the way the observer feeds them ([tokens, channels])."""
    st = TensorStats(hist=AbsHistogram(4096, energy=True))
    v = x.astype(np.float64)
    st.moments += [v.sum(), (v ** 2).sum(), (v ** 3).sum(), (v ** 4).sum()]
    st.channel_energy = (v ** 2).sum(0)
    st.amax, st.count = float(np.abs(v).max()), v.size
    st.hist.add(np.abs(v))
    return st


def test_kurtosis_and_energy_of_known_tensors():
    rng = np.random.default_rng(0)
    gauss = summarize(stats_of(rng.normal(size=(4000, 64))))
    assert gauss["kurtosis"] == pytest.approx(3.0, abs=0.1)
    assert gauss["top1pct_channel_energy"] < 0.05
    uniform = summarize(stats_of(rng.uniform(-1, 1, size=(4000, 64))))
    assert uniform["kurtosis"] == pytest.approx(1.8, abs=0.05)  # uniform: 9/5
    x = rng.normal(size=(4000, 100))
    x[:, 7] *= 40.0
    spiky = summarize(stats_of(x))
    assert spiky["dominant_channels"][0] == 7 and spiky["top1pct_channel_energy"] > 0.9
    assert spiky["kurtosis"] > 20 and spiky["top1pct_element_energy"] > 0.3


def test_analyze_finds_planted_channels(tiny_onnx, tiny_model, tmp_path):
    from qbert.eval.analyze import analyze, plot

    meta = load_meta(tiny_onnx)
    data = write_tsv(tmp_path / "d.tsv", 120, seed=3)
    ds = load_dataset_spec(str(data), meta.label2id)
    res = analyze(onnx.load(str(tiny_onnx)), meta, ds, load_tokenizer(meta.tokenizer), samples=48, heldout_rows=64)
    y = res["layers"]["y"][OUTLIER_LAYER]
    assert set(y["dominant_channels"][:2]) == set(OUTLIER_CHANNELS)
    assert y["kurtosis"] > 9 and y["top1pct_channel_energy"] > 0.3  # Gaussian: 3 and ≈ 1/32
    assert len(plot(res, tmp_path)) == 4 and (tmp_path / "kurtosis.png").stat().st_size > 1000


FULL_DISK_AT = ["kurtosis.png", "channel_range.png", "sensitivity.png", "analysis.json"]  # where the disk fills


@pytest.mark.parametrize("full_at", FULL_DISK_AT)
def test_an_analysis_failing_partway_leaves_the_folder_as_it_was(tiny_onnx, tmp_path_factory, monkeypatch, full_at):
    import errno
    import tempfile

    from qbert.errors import QbertError
    from qbert.eval.analyze import analyze, save_analysis

    meta, work = load_meta(tiny_onnx), tmp_path_factory.mktemp("full")
    ds = load_dataset_spec(str(write_tsv(work / "d.tsv", 80, seed=3)), meta.label2id)
    res = analyze(onnx.load(str(tiny_onnx)), meta, ds, load_tokenizer(meta.tokenizer), samples=16, heldout_rows=32)
    out = work / "an"
    out.mkdir()
    (out / "kurtosis.png").write_bytes(b"an earlier run's plot")
    mkstemp = tempfile.mkstemp

    def full(*a, prefix="", **kw):
        if prefix.startswith(f".{full_at}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*a, prefix=prefix, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(QbertError, match=f"no space left on device writing .*{full_at}"):
        save_analysis(res, out, {"onnx": str(tiny_onnx)})
    assert sorted(p.name for p in out.iterdir()) == ["kurtosis.png"]
    assert (out / "kurtosis.png").read_bytes() == b"an earlier run's plot"


def test_auto_mixed_precision_ranks_planted_layer_first(tmp_path):
    """Outliers planted in the last layer's FFN (where BERT has them): its h and y are the most sensitive."""
    from qbert.calibration.auto import rank_sites
    from tests.helpers.calibration import calibrate
    from qbert.exporter.export import export
    from tests.conftest import build_tiny_bert

    export(str(build_tiny_bert(tmp_path / "m", outlier_layer=1)), tmp_path / "m.onnx")
    meta, model = load_meta(tmp_path / "m.onnx"), onnx.load(str(tmp_path / "m.onnx"))
    data = write_tsv(tmp_path / "d.tsv", 120, seed=4)
    recipe = calibrate(tmp_path / "m.onnx", meta, model, str(data), method="minmax", placement="full", samples=48)
    ds = load_dataset_spec(str(data), meta.label2id, limit=48)
    ranking = rank_sites(model, recipe, encode(ds, load_tokenizer(meta.tokenizer), meta.max_length), meta.pad_token_id)
    top3 = {k for k, _ in ranking[:3]}
    assert {"layer.1.h", "layer.1.y"} <= top3 and all(k.startswith("layer.1.") for k in top3), ranking[:5]
    assert ranking[0][1] < ranking[-1][1] - 10  # dB
    auto = calibrate(tmp_path / "m.onnx", meta, model, str(data), method="minmax", placement="full", samples=48,
                     auto_fp16=True, budget=100.0, heldout_rows=64)
    assert auto.calibration["auto_fp16"]["within_budget"] and auto.fallback == []  # generous budget: nothing kept


def test_auto_fp16_stops_on_the_drops_upper_bound_not_the_point_estimate(monkeypatch):
    """Three sites; quantizing all flips 20 of 1,000 FP32-correct rows, with A back in high precision 3 (drop
    0.3 pt: within a 0.5 pt budget as a point estimate, but its bound is 0.3 + 1.645 · 0.17 = 0.58), with A and
    B back 0. The greedy must go on past A and stop after B."""
    from qbert.calibration import auto
    from qbert.calibration.recipe import Recipe

    labels = np.zeros(1000, dtype=np.int64)
    flipped = {(): 20, ("A",): 3, ("A", "B"): 0, ("A", "B", "C"): 0}

    def logits(q, rows, batch, pad, exact=False):
        n = 0 if q == "fp32" else flipped[tuple(q.fallback)]
        out = np.zeros((len(labels), 2), np.float32)
        out[:, 0] = 1.0
        out[:n] = [0.0, 1.0]
        return out

    class Rows(list):
        def subset(self, idx):
            return self

    monkeypatch.setattr(auto, "rank_sites", lambda *a, **k: [("A", 1.0), ("B", 2.0), ("C", 3.0)])
    monkeypatch.setattr(auto, "emit", lambda model, r, target: (r, {}))
    monkeypatch.setattr(auto, "logits_of", logits)
    base = Recipe(method="minmax", placement="full", sites={"A": None, "B": None, "C": None})
    recipe, report = auto.auto_fallback("fp32", base, Rows(range(1000)), labels, 0.5, pad_id=0)
    assert recipe.fallback == ["A", "B"] and report["within_budget"]
    assert [s["fallback"] for s in report["steps"]] == [None, "A", "B"]
    a = report["steps"][1]
    assert a["drop_points"] == pytest.approx(0.3) and a["drop_bound_points"] > 0.5 and not a["within_budget"]
    assert report["steps"][2]["drop_bound_points"] == pytest.approx(0.0)
    flipped[("A", "B")] = 5  # never within: every site goes back, and the report says so
    recipe, report = auto.auto_fallback("fp32", base, Rows(range(1000)), labels, 0.5, pad_id=0, max_steps=2)
    assert recipe.fallback == ["A", "B"] and not report["within_budget"]


def test_reproduce_resumes_without_redoing_rows(tiny_model, tmp_path, monkeypatch):
    from qbert import reproduction as rep

    evald, calibd = write_tsv(tmp_path / "e.tsv", 40, seed=5), write_tsv(tmp_path / "c.tsv", 400, seed=6)
    calls = []
    real = rep.run_row
    monkeypatch.setattr(rep, "run_row", lambda row, *a, **k: calls.append(row.name) or real(row, *a, **k))
    only = ["FP32", "placement gemm"]
    first = rep.reproduce(str(tiny_model), str(evald), str(calibd), tmp_path / "r", samples=32, bench_iters=2,
                          analysis_samples=32, only=only)
    assert len(calls) == 2 and not any(r["cached"] for r in first["rows"])
    second = rep.reproduce(str(tiny_model), str(evald), str(calibd), tmp_path / "r", samples=32, bench_iters=2,
                           analysis_samples=32, only=only + ["Percentile 99.0"])
    assert calls[2:] == ["Percentile 99.0"]  # only the new row ran
    assert [r["cached"] for r in second["rows"]] == [True, True, False]
    text = (tmp_path / "r" / "report.md").read_text()
    assert "The study, side by side" in text and "kurtosis.png" in text
    assert "Machine: " in text and "interleaved over 5 rounds" in text  # how the numbers were obtained
    for r in second["rows"]:  # every row timed in this run, cached or not, with its spread
        lo, hi = r["latency"]["1"]["p50_spread_ms"]
        assert 0 < lo <= hi and r["latency"]["1"]["rounds"] == 5
    import importlib.util  # a docs/results page renders the same tables from the folder alone

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("results_page", root / "benchmarks" / "results_page.py")
    results_page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_page)
    page = results_page.page(results_page.load(tmp_path / "r"))
    body = lambda t: [l for l in t.split("## Accuracy", 1)[1].splitlines() if not l.startswith("![")]
    assert body(page) == body(text) and "qbert reproduce --model" in page
    shown = results_page.shown  # a benchmark's absolute paths print as a reader types them from the repo root
    assert shown(str(root / "runs" / "m")) == "runs/m" and shown(str(root.parent / "shared" / "e.tsv")) == \
        "../shared/e.tsv" and shown("runs/m") == "runs/m"


def test_reproduce_method_auto_records_every_seeds_choice(tiny_model, tmp_path):
    """Other calibration rows may make --method auto choose differently: the report names each seed's choice."""
    from qbert import reproduction as rep

    evald, calibd = write_tsv(tmp_path / "e.tsv", 40, seed=5), write_tsv(tmp_path / "c.tsv", 400, seed=6)
    out = rep.reproduce(str(tiny_model), str(evald), str(calibd), tmp_path / "r", samples=32, bench_iters=2,
                        analysis_samples=32, only=["Method auto"], seeds=2)
    row = out["rows"][0]
    assert len(row["seed_chosen"]) == 2 and row["seed_chosen"][0] == row["chosen"]
    assert all(c.split(", ")[1] in ("gemm", "full") for c in row["seed_chosen"])
    text = (tmp_path / "r" / "report.md").read_text()
    assert f"seeds 0–1: {'; '.join(row['seed_chosen'])}" in text and "drop bound pt" in text
    am = row["auto_method"]  # the column the fallback decides by, and the rule, are in the readable table too
    chosen = next(c for c in am["candidates"] if c["name"] == am["chosen"])
    assert f"| **{am['chosen']}** (chosen) | {100 * chosen['accuracy']:.2f}% |" in text
    assert f"{100 * chosen['flips']:.1f}% | {1e3 * chosen['divergence']:.3g} |" in text
    assert "the least divergence from FP32's class probabilities" in text


def test_reproduce_exact_chooses_scores_and_times_with_exact_kernels(tiny_model, tmp_path):
    """--exact: every number (method auto's choice included) from ORT's non-saturating INT8 path, said so in the
    report, and cached apart from a default-kernel run in the same folder."""
    from qbert import reproduction as rep
    from qbert.machine import kernel_mode

    evald, calibd = write_tsv(tmp_path / "e.tsv", 40, seed=5), write_tsv(tmp_path / "c.tsv", 400, seed=6)
    kw = dict(samples=32, bench_iters=2, analysis_samples=32, only=["placement gemm", "Method auto"], seeds=1)
    exact = rep.reproduce(str(tiny_model), str(evald), str(calibd), tmp_path / "r", exact=True, **kw)
    assert exact["kernel_mode"] == kernel_mode(True)
    assert all(r["engine"]["int8_kernels"] == kernel_mode(True) for r in exact["rows"])
    auto = next(r for r in exact["rows"] if r["auto_method"])
    assert auto["auto_method"]["int8_kernels"] == kernel_mode(True)
    assert f"INT8 kernels: {kernel_mode(True)}" in (tmp_path / "r" / "report.md").read_text()
    fast = rep.reproduce(str(tiny_model), str(evald), str(calibd), tmp_path / "r", **kw)
    assert not any(r["cached"] for r in fast["rows"])  # the exact rows were not served to a default run
    assert all(r["engine"]["int8_kernels"] == kernel_mode(False) for r in fast["rows"])
    again = rep.reproduce(str(tiny_model), str(evald), str(calibd), tmp_path / "r", exact=True, **kw)
    assert all(r["cached"] for r in again["rows"])


def test_verdicts_state_their_tolerance():
    from qbert.eval.report import NEAR_FP32_PT, claims

    def row(name, acc):
        return {"name": name, "accuracy": acc, "kind": "int8", "latency": {"1": {"p50_ms": 1.0}}, "model_bytes": 1}

    layers = {"hidden_states": [{"kurtosis": 3.0, "top1pct_element_energy": 0.1}], "y": [{"kurtosis": 3.0}]}
    report = {"rows": [row("FP32", 0.80), row("Mixed precision: x", 0.80 - (NEAR_FP32_PT + 0.03) / 100),
                       row("PEG K=3 permuted", 0.70), row("PEG K=4 permuted", 0.80 - (NEAR_FP32_PT - 0.5) / 100)],
              "analysis": {"layers": layers}}
    verdicts = {c[0]: c[3] for c in claims(report)}
    assert verdicts["Mixed precision (x, h, y high precision) ≈ FP32"].startswith("does not hold: 1.03 pt")
    assert verdicts["PEG: K=3 < K=4 ≈ FP32"] == "holds"
    report["rows"][3]["accuracy"] = 0.80 - 0.0226
    verdicts = {c[0]: c[3] for c in claims(report)}
    assert verdicts["PEG: K=3 < K=4 ≈ FP32"] == "partly: K=3 < K=4, but K=4 is 2.26 pt below FP32"
    report["rows"][2]["accuracy"], report["rows"][3]["accuracy"] = 0.7980, 0.8007  # K=3 ≈ K=4 ≈ FP32
    verdict = {c[0]: c[3] for c in claims(report)}["PEG: K=3 < K=4 ≈ FP32"]
    assert verdict.startswith("partly: K=4 ≈ FP32, but K=3 is not below K=4 (K=4 − K=3 = +0.27 pt, within 1 pt)")
    report["rows"][2]["accuracy"], report["rows"][3]["accuracy"] = 0.7750, 0.7700  # both short, K=3 ahead
    verdict = {c[0]: c[3] for c in claims(report)}["PEG: K=3 < K=4 ≈ FP32"]
    assert verdict == "does not hold: K=3 is not below K=4 (-0.50 pt) and K=4 is 3.00 pt below FP32"


def test_paired_se_of_a_delta_is_the_se_of_the_per_row_differences():
    """The ± SE column: from predictions alone (two labels) it equals the SE computed with the labels."""
    from qbert.eval.report import paired_se

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1463)
    fp = np.where(rng.random(1463) < 0.8, labels, 1 - labels)
    q = fp.copy()
    flip = rng.choice(1463, 60, replace=False)  # 60 flips, more of them away from the label
    q[flip] = 1 - q[flip]
    d = (q == labels).astype(float) - (fp == labels)
    want = 100 * np.sqrt(((d - d.mean()) ** 2).mean() / len(d))
    row = {"accuracy": float((q == labels).mean()), "predictions": q.tolist()}
    ref = {"accuracy": float((fp == labels).mean()), "predictions": fp.tolist()}
    assert paired_se(row, ref) == pytest.approx(want, rel=1e-9)
    assert 0.4 < want < 0.6  # 4 % flips on 1,463 rows: ±0.5 pt, larger than a 0.3 pt budget
    assert paired_se(ref, ref) == 0.0


def test_reproduce_names_a_choice_by_method_placement_groups_and_kept_roles():
    """The report's "chosen" reads like the candidate table: roles kept in high precision are named once, by the
    role fallback patterns use (layer.3.a → a; a non-layer key such as emb.ln is its own role)."""
    from types import SimpleNamespace

    from qbert.reproduction import _chosen

    peg = SimpleNamespace(method="peg", placement="full", groups="auto", fallback=[])
    assert _chosen(peg) == "peg, full, groups=auto"
    kept = SimpleNamespace(method="smoothquant", placement="gemm", groups=1,
                           fallback=["layer.1.a", "layer.0.a", "emb.ln"])
    assert _chosen(kept) == "smoothquant, gemm, a/emb.ln in high precision"
    searched = SimpleNamespace(method="smoothquant", placement="gemm", groups=1, fallback=[],
                               calibration={"auto_method": {"chosen": "smoothquant α=1, gemm, asymmetric"}})
    assert _chosen(searched) == "smoothquant α=1, gemm, asymmetric"  # method auto's candidate: α and grids told apart


def test_the_analyze_command_writes_plots_and_json_together(tiny_onnx, tmp_path, monkeypatch):
    """The library call (and so the CLI) goes through the same all-or-nothing commit: a full disk at
    analysis.json leaves no plots behind, nor the output folder it had made."""
    import errno
    import tempfile

    from qbert.api import analyze as api_analyze
    from qbert.errors import QbertError

    mkstemp = tempfile.mkstemp

    def full(*a, prefix="", **kw):
        if prefix.startswith(".analysis.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*a, prefix=prefix, **kw)

    data = write_tsv(tmp_path / "d.tsv", 80, seed=3)
    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(QbertError, match="no space left on device writing .*analysis.json"):
        api_analyze(tiny_onnx, str(data), tmp_path / "an", samples=16, heldout=32)
    assert not (tmp_path / "an").exists()
