"""`qbert calibrate`: observe the FP32 graph on calibration data, choose scales, write recipe + Q/DQ ONNX."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from qbert.calibration import methods as M
from qbert.calibration.observe import Observer
from qbert.calibration.placement import apply_fallback, placement_name, sites as placement_sites
from qbert.calibration.recipe import Recipe, SiteScale
from qbert.errors import QbertError
from qbert.data import Dataset, batches, encode, load_dataset_spec
from qbert.exporter.export import versions
from qbert.exporter.graph import parse
from qbert.progress import progress_bar


def calibrate(onnx_path: Path, meta: dict[str, Any], model: Any | None, data: str | Dataset, method: str = "minmax",
              placement: str = "gemm", samples: int = 512, percentile: float = 99.99, groups: int = 4,
              permute: bool = True, include_padding: bool = False, fallback: list[str] | None = None,
              batch_size: int | None = None, threads: int | None = None, seed: int = 0, auto_fp16: bool = False,
              budget: float = 0.5, heldout_rows: int = 256, label2id: dict[str, int] | None = None) -> Recipe:
    """Observe `data` on the FP32 graph and choose scales. Labels are read only for `auto_fp16` (which judges
    accuracy on held-out rows), mapped with `label2id` (default: the model's own)."""
    from qbert.exporter.hf import load_tokenizer

    if method not in M.METHODS:
        raise QbertError(f"--method {method!r}: choose one of {', '.join(M.METHODS)}")
    if method == "percentile" and not 0.0 < percentile <= 100.0:
        raise QbertError(f"--percentile {percentile}: must be in (0, 100]")
    if method == "peg":
        M.check_groups(groups, meta.hidden_size)
    if samples < 1:
        raise QbertError(f"--samples {samples}: must be at least 1")
    caller_model = model is not None
    if model is None:  # load it here so the weights can be dropped once ORT has its own copy
        import onnx

        model = onnx.load(str(onnx_path))
    graph = parse(model)
    placement = placement_name(placement)
    chosen, dropped = apply_fallback(placement_sites(graph, placement), fallback or [])
    dataset = data if isinstance(data, Dataset) else \
        load_dataset_spec(data, (label2id or meta.label2id) if auto_fp16 else None)
    data = str(dataset.source)
    if len(dataset.examples) < samples:
        raise QbertError(f"--data {data} has {len(dataset.examples)} rows but --samples is {samples}; "
                         f"lower --samples or give more data")
    shuffled = np.random.default_rng(seed).permutation(len(dataset.examples))
    rows = np.sort(shuffled[:samples])
    held_rows = np.sort(shuffled[samples:samples + heldout_rows])  # auto-fp16 only: rows not calibrated on
    if auto_fp16 and len(held_rows) < 32:
        raise QbertError(f"--auto-fp16 needs ≥ 32 held-out rows beyond --samples {samples}; "
                         f"the data has {len(dataset.examples)}: lower --samples")
    all_examples = dataset.examples
    tokenizer = load_tokenizer(meta.tokenizer)
    encoded = encode(Dataset([all_examples[i] for i in rows], data), tokenizer, meta.max_length)
    pad_to = meta.max_length if include_padding else None
    batch_size = batch_size or auto_batch_size(chosen, meta)
    consume = not caller_model and not auto_fp16
    observer = Observer(model, chosen, histograms=method in ("percentile", "mse", "entropy"),
                        include_padding=include_padding, threads=threads, consume=consume)
    if consume:
        del model, graph  # peak memory: ORT's copy of the weights is enough from here on
    with progress_bar(f"calibrate [{method}]", total=len(encoded)) as advance:
        stats = observer.run((f for _, f in batches(encoded, batch_size, pad_id=meta.pad_token_id,
                                                    pad_to=pad_to)), advance)
    del observer
    scales, permutation = choose_scales(chosen, stats, method, percentile, groups, permute)
    recipe = Recipe(
        method=method, placement=placement, sites=scales,
        percentile=percentile if method == "percentile" else None,
        groups=groups if method == "peg" else 1, permute=bool(method == "peg" and permute),
        permutation=permutation, fallback=dropped,
        calibration={"data": data, "data_sha256": dataset.sha256(), "samples": samples, "seed": seed,
                     "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest(), "batch_size": batch_size,
                     "include_padding": include_padding, "max_length": meta.max_length},
        model={"onnx": str(onnx_path), "sha256": meta.sha256, "source_model": meta.source_model},
        versions=versions())
    if auto_fp16:
        from qbert.calibration.auto import auto_fallback
        held = Dataset([all_examples[i] for i in held_rows], data)
        if any(e.label is None for e in held.examples):
            raise QbertError(f"--auto-fp16 judges accuracy on held-out rows, but --data {data} has unlabelled "
                             "rows; give labelled calibration data or choose --fp16-fallback yourself")
        recipe, report = auto_fallback(model, recipe, encode(held, tokenizer, meta.max_length),
                                       held.labels, budget, meta.pad_token_id)
        recipe.calibration["auto_fp16"] = report
    return recipe


OBSERVED_BYTES_BUDGET = 256 * 2**20


def auto_batch_size(chosen, meta: dict[str, Any], budget: int = OBSERVED_BYTES_BUDGET) -> int:
    """Sequences per calibration batch such that the exposed activations of one batch stay within `budget`
    (bert-base, `full` placement: ≈ 85 MB per 128-token sequence ⇒ 3 per batch; MiniLM-L6: ≈ 20 MB ⇒ 12)."""
    seq, d = meta.max_length, meta.hidden_size
    width = {"bhss": meta.num_heads * seq, "bhsd": d, "bhds": d}
    per_token = sum(width.get(s.layout, meta.intermediate_size if s.key.endswith(".a") else d) for s in chosen)
    return int(max(1, min(32, budget // max(1, per_token * seq * 4))))


def choose_scales(chosen, stats, method: str, percentile: float, groups: int, permute: bool
                  ) -> tuple[dict[str, SiteScale], list[int] | None]:
    """Per-site clip values from the statistics; PEG adds groups (and the stream permutation)."""
    permutation = None
    peg_sites = [s for s in chosen if method == "peg" and s.stream and stats[s.key].channel_amax is not None]
    if peg_sites and permute:
        permutation = M.stream_permutation([stats[s.key].channel_amax for s in peg_sites], groups)
    out: dict[str, SiteScale] = {}
    for site in chosen:
        st = stats[site.key]
        if site in peg_sites:
            order = permutation if permutation is not None else np.arange(len(st.channel_amax))
            bounds, group_amax = M.peg_groups(st.channel_amax, groups, order)
            group_amax = [max(float(a), M.TINY) for a in group_amax]
            out[site.key] = SiteScale(site.tensor, max(group_amax), group_amax, bounds)
            continue
        if method == "percentile" and st.hist is not None:
            amax = M.percentile_amax(st.hist, percentile)
        elif method == "mse" and st.hist is not None:
            amax = M.mse_amax(st.hist)
        elif method == "entropy" and st.hist is not None:
            amax = M.entropy_amax(st.hist)
        else:
            amax = st.amax
        out[site.key] = SiteScale(site.tensor, max(float(min(amax, st.amax) if amax else st.amax), M.TINY))
    return out, None if permutation is None else [int(i) for i in permutation]

