"""Latency, throughput and memory of an engine on fixed-shape batches (warm-up excluded)."""
from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import numpy as np

from qbert.encoding import random_feeds  # noqa: F401 - re-exported for scripts
from qbert.engines.base import Engine
from qbert.machine import machine
from qbert.progress import progress_bar


def data_feeds(encoded, batch: int, seq: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Real tokenized rows, padded/truncated to exactly `seq` so every engine sees the same shape."""
    from qbert.encoding import pad_batch

    idx = [i % len(encoded) for i in range(batch)]
    return pad_batch(encoded, idx, pad_id, length=seq)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_engine(engine: Engine, feeds: dict[str, np.ndarray], warmup: int = 20, iters: int = 200,
                cuda_graph: bool = False) -> dict[str, Any]:
    """Wall-clock per run on the CPU; CUDA events (optionally CUDA-graph replay) for GPU engines."""
    with progress_bar(f"bench [{engine.name}] b={len(feeds['input_ids'])}", total=iters) as advance:
        ms = engine.time(feeds, warmup, iters, cuda_graph, advance)
    return latency_stats(ms, len(feeds["input_ids"]), int(feeds["input_ids"].shape[1]), warmup=warmup)


def latency_stats(ms: np.ndarray, batch: int, seq: int, **extra: Any) -> dict[str, Any]:
    """Percentiles and throughput of per-run milliseconds: the one shape every latency result has."""
    return {"batch": batch, "seq": seq, "iters": int(ms.size), **extra,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "sequences_per_s": float(batch / np.median(ms) * 1e3)}


def model_bytes(path: str | Path) -> int:
    """Bytes on disk, external-data files (an ONNX's `.data`, an OpenVINO IR's `.bin`) included."""
    p = Path(path)
    extra = sum(f.stat().st_size for f in p.parent.glob(p.name + ".data")) if p.exists() else 0
    if p.suffix == ".xml" and p.with_suffix(".bin").is_file():
        extra += p.with_suffix(".bin").stat().st_size
    return (p.stat().st_size if p.exists() else 0) + extra


def _model_meta(path: str, kind: str) -> Any:
    """The model's sidecar (for a plan: that of the ONNX it was built from), or None for a foreign file."""
    from qbert.artifacts import load_meta, load_plan_meta
    from qbert.atomic import sidecar_path

    if not sidecar_path(path).is_file():
        return None
    if kind == "tensorrt":  # the plan is what runs; its ONNX's sidecar only lends the vocabulary and length
        onnx = load_plan_meta(path).onnx
        return load_meta(onnx, verify=False) if sidecar_path(onnx).is_file() else None
    return load_meta(path)  # the ONNX that runs must be the one its sidecar describes (vocabulary, length, census)


def run_bench(path: str, kind: str, sizes: list[int], seq: int | None, warmup: int, iters: int, threads: int | None = None,
              exact: bool = False, cuda_graph: bool = False, data: str | None = None, profile: bool = False,
              precision: str = "f32") -> dict[str, Any]:
    """Time one deployed model at each batch size (random ids, or real rows with `data`), then add memory,
    the integer-kernel census and, with `profile` (ort-cpu and openvino), kernel time per operator or layer type."""
    from qbert.engines import open_engine
    from qbert.errors import ConfigError

    meta = _model_meta(path, kind)
    rss_before = peak_rss_bytes()
    eng = open_engine(kind, path, threads=threads, exact=exact, precision=precision)
    vocab, longest = (meta.vocab_size, meta.max_length) if meta else (100, 1 << 30)
    config = getattr(getattr(eng, "model", None), "config", None)  # the torch engine: the model's own limits
    if config is not None:
        from qbert.exporter.arch import positions

        vocab, longest = config.vocab_size, positions(config)
    seq = seq or min(128, longest)
    if seq > longest:
        eng.close()
        raise ConfigError("seq", seq, f"the model takes at most {longest} tokens (its position table / export "
                          "{max_length})", max_length=longest)
    encoded, pad = None, 0
    if data is not None:
        from qbert.data import load_dataset_spec
        from qbert.encoding import encode, encode_texts
        from qbert.exporter.provenance import tokenizer_of

        if meta is None:
            raise ConfigError("data", data, f"needs the qbert sidecar of {path} (it names the tokenizer)")
        ds = load_dataset_spec(data, None, limit=max(sizes))
        tokenizer = tokenizer_of(meta, path)  # an embedding model encodes one sentence at a time, not a pair
        encoded = encode_texts(ds.sentences(), tokenizer, seq) if meta.task == "embedding" else \
            encode(ds, tokenizer, seq)
        pad = meta.pad_token_id

    def feeds_for(b: int) -> dict[str, np.ndarray]:
        if encoded is not None:
            return data_feeds(encoded, b, seq, pad)
        return random_feeds(b, seq, vocab)

    try:
        shapes = [time_engine(eng, feeds_for(b), warmup, iters, cuda_graph) for b in sizes]
        result = {"engine": eng.describe(), "machine": machine(), "model": path, "model_bytes": model_bytes(path),
                  "seq": seq,
                  "peak_rss_bytes": peak_rss_bytes(), "rss_before_load_bytes": rss_before,
                  "inputs": "data" if encoded is not None else "random ids", "shapes": shapes,
                  "census": eng.census(sizes[0], seq)}
    finally:
        eng.close()  # device buffers on a GPU
    if profile:
        if kind == "openvino":
            from qbert.engines.openvino_profile import layer_profile

            ops = layer_profile([path], feeds_for(sizes[0]), min(iters, 50), min(warmup, 3), threads, precision)[0]
            source = "OpenVINO per-layer counters"
        else:
            from qbert.engines.onnxruntime import op_profile

            ops = op_profile([path], feeds_for(sizes[0]), min(iters, 50), min(warmup, 3), threads, exact=exact)[0]
            source = "ONNX Runtime profiler"
        result["profile"] = {"batch": sizes[0], "seq": seq, "source": source, "ms_per_run": ops}
    return result
