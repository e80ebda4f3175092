"""Latency, throughput and memory of an engine on fixed-shape batches (warm-up excluded)."""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from qbert.engines.base import Engine
from qbert.progress import progress_bar


def random_feeds(batch: int, seq: int, vocab: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids in [vocab/10, vocab) — clear of the special tokens at the start of BERT vocabularies."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(vocab // 10, vocab, size=(batch, seq), dtype=np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq), dtype=np.int64), "token_type_ids": types}


def data_feeds(encoded, batch: int, seq: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Real tokenized rows, padded/truncated to exactly `seq` so every engine sees the same shape."""
    from qbert.eval.data import pad_batch

    idx = [i % len(encoded) for i in range(batch)]
    return pad_batch(encoded, idx, pad_id, length=seq)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_engine(engine: Engine, feeds: dict[str, np.ndarray], warmup: int = 20, iters: int = 200,
                cuda_graph: bool = False) -> dict[str, Any]:
    """Wall-clock per run on the CPU; CUDA events (optionally CUDA-graph replay) for GPU engines."""
    if hasattr(engine, "time_gpu"):
        ms = engine.time_gpu(feeds, warmup, iters, cuda_graph)
        times = ms / 1e3
    else:
        for _ in range(warmup):
            engine.run(feeds)
        times = np.empty(iters)
        with progress_bar(f"bench [{engine.name}] b={len(feeds['input_ids'])}", total=iters) as advance:
            for i in range(iters):
                t0 = time.perf_counter()
                engine.run(feeds)
                times[i] = time.perf_counter() - t0
                advance(1)
        ms = times * 1e3
    batch = len(feeds["input_ids"])
    return {"batch": batch, "seq": int(feeds["input_ids"].shape[1]), "iters": iters, "warmup": warmup,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "sequences_per_s": float(batch / np.median(times))}


def model_bytes(path: str | Path) -> int:
    """Bytes on disk, external-data files included."""
    p = Path(path)
    extra = sum(f.stat().st_size for f in p.parent.glob(p.name + ".data")) if p.exists() else 0
    return (p.stat().st_size if p.exists() else 0) + extra
