"""Symmetric against asymmetric activation grids (`--asymmetric`), per method and SmoothQuant α, on held-out rows.

Each setting is calibrated on the first half of a labelled file and judged on the second half — never on
eval.tsv: accuracy, and the share of FP32's predictions it changes (flips), on the runtime each target deploys to
(`ort-cpu` on ONNX Runtime, `openvino` on OpenVINO at f32). Then every model of a target is timed at batch 1, seq
128, in alternating rounds (only ratios inside one run mean anything on a shared machine).

    python benchmarks/activation_grids.py                              # the fixture, tune.tsv halves, ≈ 6 min
    python benchmarks/activation_grids.py --model runs/unseen/model --data runs/unseen/unseen.tsv

The fixture was fine-tuned on all of tune.tsv, so its halves are training rows (FP32 ≈ 91 % there); the unseen
model (`benchmarks/unseen_model.py --model-only`) was never trained on unseen.tsv.
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from common import FIXTURE, ROOT, TUNE, qbert
from openvino_peer import runners

SETTINGS = {  # name → calibrate flags (each also run with --asymmetric)
    "minmax": ["--method", "minmax"],
    "SmoothQuant α 0.85": ["--method", "smoothquant"],
    "SmoothQuant α 0.95": ["--method", "smoothquant", "--alpha", "0.95"],
    "SmoothQuant α 1.0": ["--method", "smoothquant", "--alpha", "1.0"],
}


def halves(data: Path, work: Path) -> tuple[Path, Path]:
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    head, rows = lines[0], lines[1:]
    out = []
    for name, part in (("calib.tsv", rows[:len(rows) // 2]), ("heldout.tsv", rows[len(rows) // 2:])):
        (work / name).write_text(head + "".join(part), encoding="utf-8")
        out.append(work / name)
    return out[0], out[1]


def runner(path: Path, target: str, threads: int):
    """The model on the runtime `target` deploys to (openvino_peer's runners, which time the same way)."""
    return runners({"m": ("openvino" if target == "openvino" else "ort", path)}, threads)["m"]


def main() -> None:
    from qbert.data import load_dataset_spec
    from qbert.encoding import encode, random_feeds
    from qbert.exporter.hf import load_tokenizer
    from qbert.machine import machine
    from qbert.ort_session import logits_with
    from qbert.timing import interleaved, p50_and_spread, wall_ms

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=FIXTURE, help="a fine-tuned classifier folder")
    ap.add_argument("--data", type=Path, default=TUNE, help="labelled rows, split in half: calibrate | judge")
    ap.add_argument("--targets", default="ort-cpu,openvino")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "activation_grids")
    args = ap.parse_args()
    work = args.out / args.model.name
    work.mkdir(parents=True, exist_ok=True)
    calib, held = halves(args.data, work)
    fp32 = work / "fp32.onnx"
    if not fp32.exists():
        qbert("export", "--model", args.model, "--out", fp32)
    label2id = json.loads((work / "fp32.onnx.json").read_text())["label2id"]
    ds = load_dataset_spec(str(held), label2id)
    enc = encode(ds, load_tokenizer(str(args.model)), 128)
    labels = np.array(ds.labels)
    result = {"machine": machine(), "model": str(args.model), "data": str(args.data), "heldout_rows": len(labels),
              "rows": []}
    print(f"machine: {json.dumps(machine())}; {len(labels)} held-out rows of {args.data}", flush=True)
    feeds = random_feeds(1, 128, 1000)
    for target in args.targets.split(","):
        runs = {"FP32": runner(fp32, target, args.threads)}
        fp = logits_with(runs["FP32"], enc, 32, 0).argmax(-1)
        scored = [("FP32", float((fp == labels).mean()), 0.0)]
        for name, flags in SETTINGS.items():
            for extra in ((), ("--asymmetric",)):
                label = name + (", asymmetric" if extra else "")
                out = work / f"{target}-{label.replace(' ', '_').replace(',', '').replace('α_', 'a')}.onnx"
                qbert("calibrate", "--onnx", fp32, "--data", calib, *flags, *extra, "--target", target, "--out", out)
                runs[label] = runner(out, target, args.threads)
                pred = logits_with(runs[label], enc, 32, 0).argmax(-1)
                scored.append((label, float((pred == labels).mean()), float((pred != fp).mean())))
                print(f"  {target}: {label}: {100 * scored[-1][1]:.2f} %, flips {100 * scored[-1][2]:.2f} %",
                      flush=True)
        for run in runs.values():
            run(feeds)
        timed = interleaved({k: functools.partial(wall_ms, functools.partial(r, feeds), 20) for k, r in runs.items()},
                            7)
        p50 = {k: p50_and_spread(v)[0] for k, v in timed.items()}
        for label, acc, flips in scored:
            result["rows"].append({"target": target, "setting": label, "accuracy": acc, "flips_vs_fp32": flips,
                                   "p50_ms_b1": p50[label], "x_fp32": p50["FP32"] / p50[label]})
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print("\n| target | setting | held-out accuracy | flips vs FP32 | p50 ms b1 | × FP32 |\n|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['target']} | {r['setting']} | {100 * r['accuracy']:.2f} % | {100 * r['flips_vs_fp32']:.2f} % | "
              f"{r['p50_ms_b1']:.2f} | {r['x_fp32']:.2f} |")
    print(f"\nwrote {work / 'result.json'}")


if __name__ == "__main__":
    main()
