"""Accuracy of any engine on a dataset, with predictions kept in the original row order."""
from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from qbert.engines.base import Engine
from qbert.machine import machine
from qbert.data import Dataset
from qbert.encoding import batches, encode
from qbert.progress import progress_bar


def predict(engine: Engine, encoded, batch_size: int = 32, pad_id: int = 0,
            description: str = "eval") -> np.ndarray:
    """Logits for every row of `encoded`, in row order (batches run length-sorted)."""
    logits: np.ndarray | None = None
    with progress_bar(description, total=len(encoded)) as advance:
        for idx, feeds in batches(encoded, batch_size, pad_id=pad_id):
            out = engine.run(feeds)
            if logits is None:
                logits = np.zeros((len(encoded), out.shape[-1]), dtype=np.float32)
            logits[idx] = out
            advance(len(idx))
    assert logits is not None
    return logits


def evaluate(engine: Engine, dataset: Dataset, tokenizer: Any, batch_size: int = 32, *,
             max_length: int, description: str | None = None) -> dict[str, Any]:
    """`max_length` has no default: rows must be cut to what the model was exported for (its sidecar's
    max_length), or a model with fewer positions fails on long rows."""
    encoded = encode(dataset, tokenizer, max_length)
    t0 = time.perf_counter()
    logits = predict(engine, encoded, batch_size, pad_id=int(tokenizer.pad_token_id or 0),
                     description=description or f"eval [{engine.name}]")
    seconds = time.perf_counter() - t0
    preds = logits.argmax(-1)
    labels = dataset.labels
    labelled = labels >= 0
    correct = int((preds[labelled] == labels[labelled]).sum())
    return {
        "accuracy": correct / int(labelled.sum()) if labelled.any() else None,
        "correct": correct,
        "examples": len(dataset.examples),
        "labelled": int(labelled.sum()),
        "data": dataset.source,
        "data_sha256": dataset.sha256(),
        "predictions_sha256": hashlib.sha256(preds.astype(np.int64).tobytes()).hexdigest(),
        "predictions": preds.tolist(),
        "seconds": round(seconds, 2),
        "examples_per_second": round(len(dataset.examples) / seconds, 1) if seconds else None,
        "batch_size": batch_size,
        "max_length": max_length,
        **{"engine": engine.name, "engine_info": engine.describe()},
        "machine": machine(),
    }
