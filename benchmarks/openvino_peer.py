"""qbert on OpenVINO against its peer there, NNCF, side by side in one run — speed and accuracy.

Speed (`--suite fixture|base|both`): the same FP32 ONNX quantized by NNCF (`nncf.quantize(model, dataset,
model_type=TRANSFORMER)`, its defaults, 300 calibration rows of tune.tsv, OpenVINO IR) and by qbert (`--target
openvino`: minmax and PEG `--groups auto` under the gemm placement; minmax `--target ort-cpu` on ONNX Runtime as
qbert's previous best CPU deployment), plus FP32 on both runtimes; every model timed in alternating rounds at seq
128, batch 1 and 8, 2 threads each unless `--threads`, OpenVINO at f32 inference precision. Prints p50 per model,
each INT8 model's ratio to NNCF (> 1: faster than NNCF), and OpenVINO's census of each model it runs.

Where the time goes (`--profile`): the OpenVINO INT8 models of each speed suite at batch 1, side by side in
alternating rounds, by OpenVINO's own per-layer counters (layer type and kernel; `qbert bench --profile` for one
model) — what separates two graphs whose census is the same.

Accuracy (`--accuracy`): on eval.tsv (never tuned on), FP32, NNCF INT8 and qbert `--method auto --target openvino`
with symmetric and with asymmetric activation grids (`--asymmetric`), calibrated on tune.tsv, each with accuracy
and the share of FP32's predictions it flips.

    python benchmarks/openvino_peer.py --suite fixture --accuracy     # ≈ 15 min on 2 cores
    python benchmarks/openvino_peer.py --suite base                   # bert-base shape, speed only
    python benchmarks/openvino_peer.py --suite fixture --profile      # + per-layer time, NNCF beside qbert

NNCF is a benchmark-only dependency (pip install nncf). Goals: qbert `--target openvino` minmax ≥ 1.0× NNCF at
batch 1 and 8 (aim ≥ 1.15×); OpenVINO's census of qbert's graph: every encoder GEMM, attention included, INT8;
method auto within 0.3 pt of FP32 and flipping no more FP32 predictions than NNCF.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common import FIXTURE, ROOT, SHARED, TUNE, bert_base_like, nncf_int8_of, qbert, runners, timed

EVAL = SHARED / "data" / "qnli" / "eval.tsv"


def nncf_int8(fp32: Path, out: Path, tokenizer_dir: str, rows: int = 300, calib: Path = TUNE) -> Path:
    """NNCF's INT8 of the FP32 ONNX on its OpenVINO backend, with its transformer defaults."""
    if out.exists():
        return out
    from qbert.data import load_dataset_spec
    from qbert.encoding import batches, encode
    from qbert.exporter.hf import load_tokenizer

    ds = load_dataset_spec(str(calib), None, limit=rows)
    items = [f for _, f in batches(encode(ds, load_tokenizer(tokenizer_dir), 128), 1, sort=False)]
    return nncf_int8_of(fp32, items, out)


def speed_suite(name: str, model_dir: Path, work: Path, args) -> list[dict]:
    from qbert.engines.openvino import openvino_census

    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    if not fp32.exists():
        qbert("export", "--model", model_dir, "--out", fp32)
    models = {"FP32, ORT": ("ort", fp32), "FP32, OpenVINO": ("openvino", fp32),
              "NNCF INT8, OpenVINO (peer)": ("openvino", nncf_int8(fp32, work / "nncf.xml", str(model_dir)))}
    for label, runtime, target, flags in (
            ("qbert minmax --target ort-cpu, ORT", "ort", "ort-cpu", ["--method", "minmax"]),
            ("qbert minmax --target openvino, OpenVINO", "openvino", "openvino", ["--method", "minmax"]),
            ("qbert PEG auto --target openvino, OpenVINO", "openvino", "openvino",
             ["--method", "peg", "--groups", "auto"])):
        out = work / f"{target}-{flags[1]}{'-auto' if 'auto' in flags else ''}.onnx"
        # always calibrated anew: a cached graph would measure the qbert that wrote it, not this one
        qbert("calibrate", "--onnx", fp32, "--data", TUNE, "--samples", args.samples, "--target", target,
              *flags, "--out", out)
        models[label] = (runtime, out)
    p50 = timed(runners(models, args.threads), args.batch, args.iters)
    peer = p50["NNCF INT8, OpenVINO (peer)"]
    rows = []
    for label, (runtime, path) in models.items():
        row = {"suite": name, "model": label, "p50_ms": p50[label],
               "x_nncf": {b: peer[b] / p50[label][b] for b in args.batch}}
        if runtime == "openvino":
            c = openvino_census(str(path), args.threads)
            row["census"] = {k: c[k] for k in ("integer_gemms", "float_gemms", "integer_mac_share",
                                               "fused_attention_blocks", "fakequantize_left")}
        rows.append(row)
        print(f"  {name}: {label}: " + ", ".join(f"b{b} {v:.2f} ms ({row['x_nncf'][b]:.2f}x NNCF)"
                                                 for b, v in p50[label].items())
              + (" | census: {integer_gemms} INT8 / {float_gemms} float GEMMs, {integer_mac_share:.2%} of MACs, "
                 "{fused_attention_blocks} fused attention, {fakequantize_left} FakeQuantize left".format(
                     **row["census"]) if "census" in row else ""), flush=True)
    if args.profile:
        profiled(rows, models, args.threads)
    return rows


def profiled(rows: list[dict], models: dict[str, tuple[str, Path]], threads: int) -> None:
    """Each OpenVINO INT8 row gets `profile_b1`: ms per run by layer type and kernel at batch 1 (the models run
    in alternating rounds)."""
    from qbert.encoding import random_feeds
    from qbert.engines.openvino_profile import layer_profile

    labels = [r["model"] for r in rows if models[r["model"]][0] == "openvino" and "FP32" not in r["model"]]
    profiles = layer_profile([str(models[k][1]) for k in labels], random_feeds(1, 128, 30522), iters=100,
                             threads=threads)
    for row in rows:
        if row["model"] in labels:
            row["profile_b1"] = profiles[labels.index(row["model"])]


def accuracy(work: Path, args, model_dir: Path = FIXTURE, calib: Path = TUNE) -> list[dict]:
    """eval.tsv: FP32 (OpenVINO), NNCF INT8, qbert method auto --target openvino, both calibrated on `calib`;
    flips vs FP32's predictions."""
    from qbert.data import load_dataset_spec
    from qbert.encoding import encode
    from qbert.exporter.hf import load_tokenizer
    from qbert.ort_session import logits_with

    fp32 = work / "fp32.onnx"
    if not fp32.exists():
        qbert("export", "--model", model_dir, "--out", fp32)
    nncf_int8(fp32, work / "nncf.xml", str(model_dir), calib=calib)
    models = {"FP32": ("openvino", fp32), "NNCF INT8": ("openvino", work / "nncf.xml")}
    for extra in ((), ("--asymmetric",)):  # anew each run, like the speed rows
        auto = work / f"openvino-auto{'-asymmetric' if extra else ''}.onnx"
        qbert("calibrate", "--onnx", fp32, "--data", calib, "--method", "auto", "--target", "openvino",
              "--samples", args.samples, *extra, "--out", auto)
        models[" ".join(("qbert method auto --target openvino", *extra))] = ("openvino", auto)
    label2id = json.loads((fp32.parent / "fp32.onnx.json").read_text())["label2id"]
    ds = load_dataset_spec(str(EVAL), label2id)
    enc = encode(ds, load_tokenizer(str(model_dir)), 128)
    labels = np.array(ds.labels)
    preds = {k: logits_with(run, enc, 32, 0).argmax(-1) for k, run in runners(models, args.threads).items()}
    rows = []
    for label, pred in preds.items():
        rows.append({"model": label, "accuracy": float((pred == labels).mean()),
                     "flips_vs_fp32": float((pred != preds["FP32"]).mean())})
        print(f"  eval.tsv: {label}: {100 * rows[-1]['accuracy']:.2f} %, flips vs FP32 "
              f"{100 * rows[-1]['flips_vs_fp32']:.2f} %", flush=True)
    return rows


def main() -> None:
    from qbert.machine import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=("fixture", "base", "both", "none"), default="fixture",
                    help="speed suites to time (none: accuracy only)")
    ap.add_argument("--profile", action="store_true", help="also time each OpenVINO INT8 model per layer type "
                    "and kernel at batch 1 (OpenVINO's performance counters)")
    ap.add_argument("--accuracy", action="store_true", help="also score FP32, NNCF and method auto on eval.tsv")
    ap.add_argument("--accuracy-model", type=Path, help="score this classifier instead of the fixture (e.g. "
                    "runs/unseen/model from unseen_model.py --model-only), calibrated on --calib-data")
    ap.add_argument("--calib-data", type=Path, default=TUNE, help="calibration rows for --accuracy-model")
    ap.add_argument("--model-line", help="the shell line that makes --accuracy-model and --calib-data (the page "
                    "prints it before its own command), e.g. 'python benchmarks/unseen_model.py --model-only'")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "openvino_peer")
    ap.add_argument("--md", type=Path, help="also write the tables as a markdown page here (docs/results/…)")
    args = ap.parse_args()
    if args.profile and args.suite == "none":
        ap.error("--profile profiles the speed suites' models: give --suite fixture, base or both")
    if args.model_line and not args.accuracy_model:
        ap.error("--model-line names what makes --accuracy-model: give that too")
    args.out.mkdir(parents=True, exist_ok=True)
    import nncf
    import openvino

    print(f"machine: {json.dumps(machine())}; openvino {openvino.get_version()}, nncf {nncf.__version__}", flush=True)
    rows = []
    if args.suite in ("fixture", "both"):
        rows += speed_suite("fixture", FIXTURE, args.out / "fixture", args)
    if args.suite in ("base", "both"):
        rows += speed_suite("bert-base shape", bert_base_like(args.out / "base-model"), args.out / "base", args)
    result = {"machine": machine(), "openvino": openvino.get_version(), "nncf": nncf.__version__, "speed": rows}
    if args.accuracy:
        result["accuracy"] = accuracy(args.out / "fixture", args)
    if args.accuracy_model:
        result["accuracy_model"] = str(args.accuracy_model)
        result["accuracy"] = accuracy(args.out / "accuracy-model", args, args.accuracy_model, args.calib_data)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'result.json'}")
    if args.md:
        import sys

        import shlex

        command = "python benchmarks/openvino_peer.py " + shlex.join(sys.argv[1:])
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(result, command, args.model_line))
        print(f"wrote {args.md}")


def markdown(result: dict, command: str, model_line: str | None = None) -> str:
    """The result as a page: the machine, versions and command (after `model_line`, the one that makes the model
    it scores, if any) first, then one table per suite."""
    m = result["machine"]
    isa = ", ".join(k for k, v in m["isa"].items() if v) or "unknown"
    lines = ["# qbert on OpenVINO beside NNCF", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({isa}). OpenVINO {result['openvino']}, "
             f"NNCF {result['nncf']}; f32 inference precision; seq 128; p50 of models timed in alternating rounds.",
             "", "Regenerate (the first line makes the model it scores):" if model_line else "Regenerate:", "",
             "```bash", *([model_line] if model_line else []), command, "```", ""]
    for suite in dict.fromkeys(r["suite"] for r in result["speed"]):
        rows = [r for r in result["speed"] if r["suite"] == suite]
        sizes = list(rows[0]["p50_ms"])
        lines += [f"## Speed: {suite}", "", "| model | " + " | ".join(f"b{b} ms | × NNCF" for b in sizes)
                  + " | OpenVINO census |", "|---|" + "---|---|" * len(sizes) + "---|"]
        for r in rows:
            c = r.get("census")
            census = (f"{c['integer_gemms']} INT8 / {c['float_gemms']} float GEMMs, {c['integer_mac_share']:.2%} "
                      f"MACs, {c['fused_attention_blocks']} fused attention, {c['fakequantize_left']} FakeQuantize"
                      if c else "(ONNX Runtime)")
            lines.append(f"| {r['model']} | " + " | ".join(f"{r['p50_ms'][b]:.2f} | {r['x_nncf'][b]:.2f}"
                                                          for b in sizes) + f" | {census} |")
        lines.append("")
        lines += profile_table(suite, [r for r in rows if "profile_b1" in r])
    if "accuracy" in result:
        lines += [f"## Accuracy: eval.tsv (1,463 rows), {result.get('accuracy_model', 'fixture')}", "",
                  "| model | accuracy | flips vs FP32 |",
                  "|---|---|---|"]
        lines += [f"| {r['model']} | {100 * r['accuracy']:.2f} % | {100 * r['flips_vs_fp32']:.2f} % |"
                  for r in result["accuracy"]]
        lines.append("")
    return "\n".join(lines + goals(result))


def profile_table(suite: str, rows: list[dict], top: int = 10) -> list[str]:
    """Per-layer time of the suite's OpenVINO INT8 models at batch 1: the `top` layer types (by the largest time
    any model spends in them), then GEMM layers, all layers and the whole inference."""
    if not rows:
        return []
    names = [r["model"].removesuffix(" (peer)").removesuffix(", OpenVINO") for r in rows]
    kinds = sorted({k for r in rows for k in r["profile_b1"] if not k.startswith("(")},
                   key=lambda k: -max(r["profile_b1"].get(k, 0.0) for r in rows))
    out = [f"### Where the time goes: {suite}, batch 1", "",
           "OpenVINO's per-layer counters, the models run in alternating rounds (ms per inference; counters on, "
           "so the whole inference runs a little slower than in the table above).", "",
           "| layer (kernel) | " + " | ".join(names) + " |", "|---|" + "---|" * len(rows)]
    for k in kinds[:top] + ["(gemm)", "(kernels)", "(whole run)"]:
        label = {"(gemm)": "GEMM layers", "(kernels)": "all layers", "(whole run)": "whole inference"}.get(k, k)
        out.append(f"| {label} | " + " | ".join(f"{r['profile_b1'].get(k, 0.0):.3f}" for r in rows) + " |")
    return out + [""]


GOALS = ("qbert's goals against NNCF on OpenVINO: `--target openvino` at ≥ 1.0× NNCF's INT8 speed at batch 1 and 8 "
         "(aim: 1.15×), 100 % of the GEMM multiply-accumulates in INT8, and `--method auto --target openvino` within "
         "0.3 pt of FP32 on `eval.tsv` while flipping no more of FP32's predictions than NNCF's INT8.")


def goals(result: dict) -> list[str]:
    """This run read against GOALS (the page states them first, so the verdicts below say what they judge)."""
    out = ["## Read against the goals", "", GOALS, ""]
    for name in ("qbert minmax --target openvino", "qbert PEG auto --target openvino"):
        rows = [r for r in result["speed"] if r["model"].startswith(name)]
        if rows:
            ratios = [x for r in rows for x in r["x_nncf"].values()]
            out.append(f"- Speed, {name.removeprefix('qbert ')} against NNCF's INT8: {min(ratios):.2f}–"
                       f"{max(ratios):.2f}× over {', '.join(r['suite'] for r in rows)} at batch "
                       f"{', '.join(map(str, rows[0]['x_nncf']))}: ≥ 1.0× {'met' if min(ratios) >= 1.0 else 'not met'}"
                       f"; the 1.15× aim {'met' if min(ratios) >= 1.15 else 'not reached'}.")
    census = [r["census"] for r in result["speed"] if r.get("census") and r["model"].startswith("qbert")]
    if census:
        share = min(c["integer_mac_share"] for c in census)
        left = sorted({c["fakequantize_left"] for c in census})
        out.append(f"- Census of qbert's `--target openvino` graphs: {'' if share == 1 else 'at least '}{share:.2%} of "
                   f"GEMM MACs in INT8, {' to '.join(map(str, left[::max(1, len(left) - 1)]))} FakeQuantize left.")
    acc = {r["model"]: r for r in result.get("accuracy", [])}
    if "FP32" in acc and "NNCF INT8" in acc:
        fp, nncf = acc["FP32"], acc["NNCF INT8"]
        for name, r in acc.items():
            if name.startswith("qbert"):
                delta = 100 * (r["accuracy"] - fp["accuracy"])
                out.append(f"- `{name.removeprefix('qbert ')}`: {delta:+.2f} pt vs FP32 (within 0.3 pt: "
                           f"{'yes' if delta >= -0.3 else 'no'}), {100 * r['flips_vs_fp32']:.2f} % flips against "
                           f"NNCF's {100 * nncf['flips_vs_fp32']:.2f} % (no more than NNCF: "
                           f"{'yes' if r['flips_vs_fp32'] <= nncf['flips_vs_fp32'] else 'no'}).")
    return out + [""]


if __name__ == "__main__":
    main()
