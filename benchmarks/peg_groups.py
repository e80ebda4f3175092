"""PEG group layouts on held-out calibration rows (never eval.tsv): what each choice contributes, over seeds.

    python benchmarks/peg_groups.py [--model ../shared/fixtures/minilm-l6-qnli] [--data ../shared/data/qnli/tune.tsv]
                                    [--samples 512] [--held 1000] [--seeds 0,1,2] [--placement full]
                                    [--only "PEG auto;PEG K=4, sized groups"]

For each seed: observe `--samples` rows (chosen by the seed) once, then emit every candidate and score it on the
last `--held` rows of a fixed shuffle (disjoint from every seed's calibration rows): accuracy, and flips (held-out
predictions that differ from FP32's — label-free, so it also reads right on rows the model was tuned on).
Prints mean and range over seeds, and the GEMM count of each graph (each PEG group a GEMM reads is one GEMM).
Candidates: minmax; PEG with equal or sized groups, K = 2–4 or auto; each group's clip by its maximum, MSE or the
99.99th percentile (on per-channel histograms); bias correction (calibration/bias.py); and how a grouped tensor
reaches its GEMMs (auto smooths it into their weights, one GEMM; "split": one GEMM per group, PEG as published;
"K=4, GEMM inputs smoothed": K=4 everywhere else) — ≈ 12 min on 2 cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import onnx

    from qbert.artifacts import load_meta
    from qbert.calibration import groups as G
    from qbert.calibration.bias import apply_bias_shifts, bias_shifts
    from qbert.calibration.methods import Observed, Settings, method as method_of
    from qbert.calibration.smooth import ALPHA, unshared, weight_rows
    from qbert.calibration.calibrate import auto_batch_size
    from qbert.calibration.emit import emit
    from qbert.calibration.observe import Observer
    from qbert.calibration.placement import sites as placement_sites
    from qbert.calibration.recipe import Recipe, SiteScale
    from qbert.data import Dataset, load_dataset_spec
    from qbert.encoding import batches, encode
    from qbert.exporter.export import export
    from qbert.exporter.graph import parse
    from qbert.exporter.hf import load_tokenizer
    from qbert.machine import machine
    from qbert.ort_session import logits_of

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="../shared/fixtures/minilm-l6-qnli")
    ap.add_argument("--data", default="../shared/data/qnli/tune.tsv")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--placement", default="full")
    ap.add_argument("--only", help="candidate names separated by semicolons (default: all)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qbert-peg-groups-"))
    fp32 = work / "fp32.onnx"
    export(args.model, fp32)
    meta, model = load_meta(fp32), onnx.load(str(fp32))
    tok = load_tokenizer(meta.tokenizer)
    ds = load_dataset_spec(args.data, meta.label2id)
    fixed = np.random.default_rng(12345).permutation(len(ds.examples))
    held_idx, pool = np.sort(fixed[-args.held:]), fixed[:-args.held]
    held = Dataset([ds.examples[i] for i in held_idx], ds.source)
    enc_h, labels = encode(held, tok, meta.max_length), np.array(held.labels)
    fp = logits_of(model, enc_h, 32, meta.pad_token_id).argmax(-1)
    sites = placement_sites(parse(model), args.placement)
    stream = [s for s in sites if s.stream]

    def equal(scales, perm, k):  # the old layout: K equal slices of the same order
        out = dict(scales)
        d = len(perm)
        bounds = [[i * d // k, (i + 1) * d // k] for i in range(k)]
        for s in stream:
            o = np.asarray(stats[s.key].channel_amax)[perm]
            ga = [max(float(o[a:b].max()), 1e-8) for a, b in bounds]
            out[s.key] = SiteScale(s.tensor, max(ga), ga, bounds)
        return out

    candidates = {  # name → (method, groups, post-processing, each group's range)
        "minmax (per-tensor)": ("minmax", 1, None, "max"),
        "PEG K=4, equal groups": ("peg", 4, lambda sc, p: equal(sc, p, 4), "max"),
        "PEG K=4, sized groups": ("peg", 4, None, "max"),
        "PEG K=3, sized groups": ("peg", 3, None, "max"),
        "PEG K=2, sized groups": ("peg", 2, None, "max"),
        "PEG auto": ("peg", G.AUTO, None, "max"),
        "PEG auto, GEMM inputs split": ("peg", G.AUTO, None, "max"),
        "PEG K=4, GEMM inputs smoothed": ("peg", 4, None, "max"),
        "PEG K=4, sized, MSE per group": ("peg", 4, None, "mse"),
        "PEG K=4, sized, 99.99th pct per group": ("peg", 4, None, "percentile"),
        "PEG auto, MSE per group": ("peg", G.AUTO, None, "mse"),
        "PEG auto, 99.99th pct per group": ("peg", G.AUTO, None, "percentile"),
        "PEG K=4, sized + bias correction": ("peg", 4, None, "max+bias"),
        "PEG auto + bias correction": ("peg", G.AUTO, None, "max+bias"),
        **({f"SmoothQuant α={a}": ("smoothquant", 1, None, "max") for a in ("0.5", "0.6", "0.75", "0.85")}
           if args.placement == "gemm" else {}),  # smoothing needs every reader of a tensor to be a GEMM
    }
    if args.only:
        wanted = [w.strip() for w in args.only.split(";")]
        unknown = [w for w in wanted if w not in candidates]
        if unknown:
            ap.error(f"--only: unknown {unknown}; choose from {list(candidates)}")
        candidates = {k: v for k, v in candidates.items() if k in wanted}
    results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in candidates}
    rows_max = weight_rows(parse(model), sites)  # SmoothQuant's weight-row ranges: the same for every seed
    peg_rows = unshared(parse(model), rows_max, sites)  # those PEG may smooth with (not weights shared by layers)
    for seed in [int(s) for s in args.seeds.split(",")]:
        rows = np.sort(np.random.default_rng(seed).permutation(pool)[:args.samples])
        enc_c = encode(Dataset([ds.examples[i] for i in rows], ds.source), tok, meta.max_length)
        obs = Observer(model, sites, histograms=False, channel_histograms=True, channel_sums=True)
        stats = obs.run(f for _, f in batches(enc_c, auto_batch_size(sites, meta), pad_id=meta.pad_token_id))
        corrected = onnx.ModelProto()
        corrected.CopyFrom(model)
        apply_bias_shifts(corrected, bias_shifts(model, stats, sites))
        for name, (method, k, post, group_range) in candidates.items():
            base = corrected if group_range.endswith("+bias") else model
            split = {"GEMM inputs split": "split", "GEMM inputs smoothed": "smooth"}.get(name.split(", ")[-1])
            strength = float(name.split("=")[1]) if method == "smoothquant" else ALPHA
            settings = Settings(placement=args.placement, groups=k, alpha=strength, gemm_split=split,
                                group_range=group_range.removesuffix("+bias"))
            choice = method_of(method).choose(sites, Observed(stats, rows_max, peg_rows), settings)
            scales, perm = choice.sites, choice.permutation
            if post is not None:
                scales = post(scales, np.asarray(perm))
            recipe = Recipe(method=method, placement=args.placement, sites=scales, **choice.fields,
                            permutation=perm)
            q, summary = emit(base, recipe, "ort-cpu")
            pred = logits_of(q, enc_h, 32, meta.pad_token_id).argmax(-1)
            results[name].append((100 * float((pred == labels).mean()), 100 * float((pred != fp).mean()),
                                  summary["quantized_gemms"]))
            print(f"seed {seed}  {name:38s} acc {results[name][-1][0]:6.2f}  flips {results[name][-1][1]:5.2f} %",
                  flush=True)
    m = machine()
    print(f"\n{args.model}, {args.placement} placement, {args.samples} calibration rows, {args.held} held-out rows of "
          f"{args.data}; seeds {args.seeds}; FP32 held-out accuracy {100 * float((fp == labels).mean()):.2f} %")
    isa = ", ".join(k for k, v in m["isa"].items() if v) or "none of the listed"
    print(f"machine: {m['cpu']}, {m['logical_cores']} logical cores ({isa}); ORT INT8 path: {m['ort_int8_path']}\n")
    print("| layout | held-out acc, mean (range) | flips vs FP32, mean (range) | INT8 GEMMs |")
    print("|---|---|---|---|")
    for name, rs in results.items():
        acc, flips, gemms = (np.array([r[i] for r in rs]) for i in range(3))
        print(f"| {name} | {acc.mean():.2f} ({acc.min():.2f}–{acc.max():.2f}) | {flips.mean():.2f} "
              f"({flips.min():.2f}–{flips.max():.2f}) | {int(gemms[0])} |")


if __name__ == "__main__":
    main()
