"""Calibration: observe the FP32 graph on calibration data and choose scales — the recipe a Q/DQ ONNX is emitted
from."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from qbert.calibration.config import CalibrationConfig, Search
from qbert.calibration.grids import with_grids
from qbert.calibration.methods import AUTO, Observed, Settings, method as method_of
from qbert.calibration.observe import Observer
from qbert.calibration.outliers import (check_applicable, check_readers, check_widths, fallback_sites,
                                       split as split_outliers)
from qbert.calibration.placement import sites as placement_sites
from qbert.calibration.recipe import Recipe
from qbert.calibration.select import histograms as search_histograms, needs as search_needs, select
from qbert.calibration.smooth import unshared, weight_rows
from qbert.errors import ConfigError
from qbert.data import Dataset, load_dataset_spec
from qbert.encoding import batches, encode, encode_texts
from qbert.exporter.export import versions
from qbert.exporter.graph import parse
from qbert.progress import progress_bar


def calibration_rows(units: int, samples: int, seed: int = 0, heldout: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Which of `units` rows (or an embedding model's distinct sentences) calibrate, and which `heldout` others
    method auto and auto mixed precision judge on: one seeded shuffle, each part in data order. A peer calibrated
    for comparison takes the same rows from here."""
    shuffled = np.random.default_rng(seed).permutation(units)
    return np.sort(shuffled[:samples]), np.sort(shuffled[samples:samples + heldout])


def calibrate(onnx_path: Path, meta: Any, model: Any | None, config: CalibrationConfig,
              gemm_split: str | None = None) -> Recipe:
    """Observe `config.data` on the FP32 graph once and ask the method (or method auto's search) for scales.

    `config` is validated here (again, if the caller did: it is cheap and idempotent); what only the model and the
    data can tell is checked below (PEG groups against the hidden size, rows enough for the samples and held-out
    rows). Labels are read only for `auto_fp16` and method `auto`, which judge candidates on held-out rows (by
    default 1,000 of them, by the drop's 95 % upper bound; budget default 0.5 and 0.3 points), mapped with
    `config.label2id` (default: the model's own). `gemm_split` is PEG's advanced knob: how grouped tensors reach
    their GEMMs (scales.peg_scales; default smooth under groups auto, split for a fixed K). `model`: the loaded
    FP32 ONNX if the caller holds it (else loaded here, so its weights can be dropped once ORT has its copy)."""
    from qbert.exporter.provenance import tokenizer_of

    if not isinstance(config, CalibrationConfig):
        raise ConfigError("config", config, "must be a CalibrationConfig(data=…, method=…)")
    config.validate()
    method, placement, samples, seed = config.method, config.placement, config.samples, config.seed
    fallback, auto_fp16, include_padding = config.fallback, config.auto_fp16, config.include_padding
    threads, label2id, data = config.threads, config.label2id, config.data
    choosing = method == AUTO
    chosen_method = None if choosing else method_of(method)
    settings = replace(Settings.of(config), gemm_split=gemm_split)
    judges = {"method": AUTO, "auto_fp16": True}  # the two steps that run INT8 candidates on held-out rows
    embedding = meta.task == "embedding"  # encodes one sentence at a time: calibrate on sentences, not pairs
    search = Search.of(config, embedding)  # what the searches read, resolved (an embedding model's own budget)
    asked_heldout = config.heldout
    if chosen_method is not None:
        chosen_method.validate(settings, meta.hidden_size)
    judging = auto_fp16 or choosing  # runs INT8 candidates on held-out rows (sentences, for an embedding model)
    needs_labels = judging and not embedding  # a classifier is judged by accuracy; an embedding model by FP32
    judge, min_held = ("{method=}", 256) if choosing else ("{auto_fp16}", 32)  # what reads the held-out rows
    if judging and asked_heldout is not None and asked_heldout < min_held:  # the user's number, not `samples`
        raise ConfigError("heldout", asked_heldout, f"{judge} judges on at least {min_held} held-out rows; raise it "
                          f"to {min_held} or more", **judges)
    caller_model = model is not None
    if model is None:  # load it here so the weights can be dropped once ORT has its own copy
        import onnx

        model = onnx.load(str(onnx_path))
    graph = parse(model)
    placement = "full" if choosing else placement  # auto observes full's tensors: gemm's and more
    chosen, dropped, outlier_counts = fallback_sites(placement_sites(graph, placement), fallback or [])
    if not choosing:  # method auto applies them to the candidates they apply to (select.py)
        check_applicable(fallback or [], method)
        check_readers(graph, chosen, outlier_counts)
    # smoothing (and outlier channels) need the weights' row ranges: taken before the observer may consume them
    needs = search_needs() if choosing else {chosen_method.weight_rows(settings)} - {None}
    rows_max = weight_rows(graph, chosen) if needs or outlier_counts else {}
    peg_rows = unshared(graph, rows_max, chosen) if "unshared" in needs else {}
    check_widths(outlier_counts, rows_max)  # before any data is read
    dataset = data if isinstance(data, Dataset) else \
        load_dataset_spec(str(data), (label2id or meta.label2id) if needs_labels else None)
    data = str(dataset.source)
    sentences = dataset.sentences() if embedding else None  # both sides of each pair, each once
    units = len(sentences) if sentences is not None else len(dataset.examples)
    if units < samples:
        what = "distinct sentences (both sides of each pair)" if embedding else "rows"
        raise ConfigError("samples", samples, f"the data ({data}) has {units} {what}; lower "
                          "{samples} or give more data", samples=samples)
    rows, held_rows = calibration_rows(units, samples, seed, search.heldout)
    if judging and asked_heldout and len(held_rows) < asked_heldout:
        raise ConfigError("heldout", asked_heldout, f"the data has {len(held_rows)} rows beyond {{samples=}}; "
                          "lower {heldout} or {samples}, or give more data", samples=samples, heldout=asked_heldout)
    if judging and len(held_rows) < min_held:
        raise ConfigError("samples", samples, f"{judge} needs ≥ {min_held} held-out rows beyond these; the data has "
                          f"{units}: lower it or give more data", **judges)
    all_examples = dataset.examples
    tokenizer = tokenizer_of(meta, onnx_path)
    encoded = encode_texts([sentences[i] for i in rows], tokenizer, meta.max_length) if sentences is not None else \
        encode(Dataset([all_examples[i] for i in rows], data), tokenizer, meta.max_length)
    pad_to = meta.max_length if include_padding else None
    batch_size = config.batch_size or auto_batch_size(chosen, meta)
    consume = not caller_model and not judging
    observer = Observer(model, chosen, histograms=search_histograms() if choosing else chosen_method.histograms,
                        include_padding=include_padding, threads=threads, consume=consume,
                        extremes=choosing or config.asymmetric)  # method auto offers asymmetric candidates
    if consume:
        del model, graph  # peak memory: ORT's copy of the weights is enough from here on
    with progress_bar(f"calibrate [{method}]", total=len(encoded)) as advance:
        stats = observer.run((f for _, f in batches(encoded, batch_size, pad_id=meta.pad_token_id,
                                                    pad_to=pad_to)), advance)
    del observer
    observed = Observed(stats, rows_max, peg_rows)
    # method auto's base recipe: minmax on `full`, which select() replaces by the candidate it keeps
    choice = (chosen_method or method_of("minmax")).choose(chosen, observed, settings)
    if config.asymmetric:
        choice = replace(choice, sites=with_grids(choice.sites, stats))
    if outlier_counts and not choosing:
        choice = replace(choice, sites=split_outliers(choice.sites, outlier_counts, stats, rows_max))
    recipe = Recipe(
        method=method, placement=placement, sites=choice.sites, **choice.fields,
        permutation=choice.permutation, fallback=dropped,
        calibration={"data": data, "data_sha256": dataset.sha256(), "samples": samples, "seed": seed,
                     "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest(), "batch_size": batch_size,
                     "include_padding": include_padding, "max_length": meta.max_length,
                     **({"inputs": "sentences"} if embedding else {})},
        model={"onnx": str(onnx_path), "sha256": meta.sha256, "source_model": meta.source_model},
        versions=versions())
    if needs_labels:
        held = Dataset([all_examples[i] for i in held_rows], data)
        if any(e.label is None for e in held.examples):
            raise ConfigError("data", data, f"has unlabelled rows, and {judge} judges accuracy on held-out rows: "
                              "give labelled calibration data, or choose the method/{fallback} yourself",
                              fallback=fallback, **judges)
        held_encoded, held_labels = encode(held, tokenizer, meta.max_length), np.asarray(held.labels)
    elif judging:  # an embedding model: held-out sentences, judged against FP32's own embeddings of them
        held_encoded, held_labels = encode_texts([sentences[i] for i in held_rows], tokenizer, meta.max_length), None
    if choosing:
        recipe, report = select(model, graph, observed, recipe, held_encoded, held_labels, search, fallback or [],
                                meta)
        recipe.calibration["auto_method"] = report
    if auto_fp16:
        from qbert.calibration.auto import auto_fallback
        recipe, report = auto_fallback(model, recipe, held_encoded, held_labels, search.budget,
                                       meta.pad_token_id, exact=search.exact)
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
