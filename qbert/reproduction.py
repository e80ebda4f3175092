"""The study's whole table (`qbert.reproduce`) on any model, resumable, written up as report.md + report.json.

Each row (calibrate → emit → evaluate → bench) is cached under DIR/rows/ by a key of its inputs (FP32 ONNX
hash, data hashes, settings, engine); an interrupted run picks up where it stopped.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from qbert.atomic import read_json, sidecar_path, write_json
from qbert.reproduction_rows import ROWS, Row, select_rows  # noqa: F401 - the study's rows, read here by name
from qbert.calibration.methods import AUTO, NONE, REGISTRY
from qbert.engines import check_exact
from qbert.errors import ConfigError, QbertError
from qbert.timing import interleaved, p50_and_spread

TARGET_OF = {"ort-cpu": "ort-cpu", "openvino": "openvino", "tensorrt": "trt"}  # engine → what its rows emit


STUDY = {  # the study's published numbers on BERT-base / QNLI (docs/study.md)
    "FP32": 89.66, "W8A8": 54.33, "MP": 89.42, "PEG3": 66.12, "PEG4": 86.18, "PCT": 50.54,
}


def row_key(row: Row, fp32_sha: str, eval_sha: str, calib_sha: str, samples: int, engine: str, seeds: int,
            exact: bool = False, embedding: bool = False) -> str:
    """Inputs that decide a row's numbers; for method auto also what it chooses among (new candidates, new row)."""
    parts: list[Any] = [row.name, row.kind, row.calibrate, fp32_sha, eval_sha, calib_sha, samples, engine, seeds]
    if exact:  # appended only when set, so the keys (and caches) of default-kernel runs stay as they were
        parts.append("exact INT8 kernels")
    if embedding and (row.calibrate.get("method") == AUTO or row.calibrate.get("auto_fp16")):
        # the searches judge an embedding model by FP32 neighbours, with its own budget (run_row)
        from qbert.calibration.judge import EMBEDDING_BUDGET, NEIGHBOURS

        parts.append(["embedding", EMBEDDING_BUDGET, NEIGHBOURS])
    if row.calibrate.get("method") == AUTO:
        from qbert.calibration import select, smooth

        parts.append([select.CANDIDATES, smooth.ALPHA, select.RULE])
        if embedding:  # its own ranking (judge.unfaithfulness)
            parts.append(select.EMBEDDING_RULE)
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_row(row: Row, fp32_path: Path, meta: dict, model: Any, calib: str, eval_ds, tokenizer, work: Path,
            samples: int, engine: str, label2id: dict[str, int], seeds: int = 1, exact: bool = False) -> dict[str, Any]:
    """One row: calibrate with seed 0 (the deployed, timed model), measure it; INT8 rows are calibrated again
    with seeds 1 … seeds−1 (other calibration rows) for the accuracy spread."""
    from qbert.calibration.calibrate import calibrate
    from qbert.calibration.config import CalibrationConfig
    from qbert.calibration.quantize import quantize
    from qbert.calibration.recipe import Recipe

    t0 = time.perf_counter()
    target = TARGET_OF[engine]
    path = work / "model.onnx"
    info: dict[str, Any] = {}
    if row.kind == "fp32":
        path = fp32_path
    else:
        settings = dict(row.calibrate)
        if meta.task == "embedding":  # the rows' budgets are accuracy points: an embedding model's is its own
            settings.pop("budget", None)  # (points of FP32's top-10 neighbours, judge.EMBEDDING_BUDGET)
        config = CalibrationConfig(data=calib, samples=samples, **settings)  # the row, as a config
        if config.searches:  # only the searches read labels (a classifier's), a target to judge for, and kernels
            config = replace(config, label2id=label2id if meta.task != "embedding" else None, exact=exact,
                             **({"target": target} if config.method == AUTO else {}))

        def recipe_for(seed: int) -> Recipe:
            if row.kind == "fp16":
                return Recipe(method=NONE, placement="gemm", sites={})
            return calibrate(fp32_path, meta, model, replace(config, seed=seed))

        recipe = recipe_for(0)
        info = quantize(fp32_path, recipe, path, target, "fp16" if row.kind == "fp16" else None,
                        work / "recipe.json", write_recipe=row.kind == "int8", model=model).quantization
        info["auto_fp16"] = recipe.calibration.get("auto_fp16")
        info["auto_method"] = recipe.calibration.get("auto_method")
        if info["auto_method"]:
            info["chosen"] = _chosen(recipe)
    measured = measure(path, engine, eval_ds, tokenizer, meta, work, exact)
    spread = [score(measured)]
    chosen = [info["chosen"]] if info.get("chosen") else None
    for seed in range(1, seeds if row.kind == "int8" else 1):
        other = work / f"seed{seed}.onnx"
        seed_recipe = recipe_for(seed)
        if chosen:
            chosen.append(_chosen(seed_recipe))  # --method auto may choose differently on other calibration rows
        quantize(fp32_path, seed_recipe, other, target, None, work / f"seed{seed}.recipe.json",
                 write_recipe=False, model=model)
        spread.append(score(measure(other, engine, eval_ds, tokenizer, meta, work, exact)))
        for leftover in work.glob(f"seed{seed}.*"):  # only the seed-0 model is deployed; these were for the spread
            leftover.unlink()
    if len(spread) > 1 and engine == "tensorrt":
        measure(path, engine, eval_ds, tokenizer, meta, work)  # measure() wrote model.plan per seed: seed 0's again
    return {"name": row.name, "kind": row.kind, "flags": row.calibrate,
            "target": target if row.kind != "fp32" else "fp32",
            "high_precision": info.get("high_precision", "fp32"),
            "quantized_gemms": info.get("quantized_gemms", 0), "fallback": info.get("fallback", []),
            "auto_fp16": info.get("auto_fp16"), "auto_method": info.get("auto_method"), "chosen": info.get("chosen"),
            "seed_chosen": chosen, **measured, seed_key(meta): spread, "seconds": round(time.perf_counter() - t0, 1)}


def seed_key(meta: Any) -> str:
    """Where a row keeps its headline number per calibration seed: accuracy, or an embedding model's recall@1."""
    return "seed_recall@1" if meta.task == "embedding" else "seed_accuracies"


def _chosen(recipe: Any) -> str:
    """What a search kept: method auto's candidate name (it tells α and the grids apart), else the recipe's method,
    placement, groups and the roles auto mixed precision left in high precision."""
    from qbert.calibration.placement import role_of

    if (getattr(recipe, "calibration", None) or {}).get("auto_method"):
        return recipe.calibration["auto_method"]["chosen"]
    roles = sorted({role_of(k) for k in recipe.fallback or []})
    grouped = recipe.method in REGISTRY and REGISTRY[recipe.method].grouping
    return (f"{recipe.method}, {recipe.placement}" + (f", groups={recipe.groups}" if grouped else "")
            + (f", {'/'.join(roles)} in high precision" if roles else ""))


def measure(path: Path, engine: str, eval_ds, tokenizer, meta: dict, work: Path, exact: bool = False
            ) -> dict[str, Any]:
    """Accuracy and the precision census of one deployed model (latency is timed later, for all rows together).
    ort-cpu runs the ONNX; tensorrt builds a plan for the GPU in hand and reports its device memory."""
    from qbert.engines import open_engine
    from qbert.eval.accuracy import evaluate

    seq = min(128, meta.max_length)
    model_path, extra = path, {}
    if engine == "tensorrt":
        from qbert.engines.tensorrt import build

        model_path = work / "model.plan"
        extra["plan"] = build(path, model_path).to_json()  # --sm auto: the present GPU
    with open_engine(engine, str(model_path), exact=exact) as eng:
        if meta.task == "embedding":
            scored = _embedding_scores(eng, path, eval_ds, tokenizer, meta)
        else:
            result = evaluate(eng, eval_ds, tokenizer, max_length=meta.max_length)
            scored = {"accuracy": result["accuracy"], "correct": result["correct"], "examples": result["examples"],
                      "predictions": result["predictions"]}
        if engine == "tensorrt":
            extra["device_memory_bytes"] = eng.describe()["device_memory_bytes"]
            census = eng.census(1, seq)
        elif engine == "openvino":
            census = eng.census(1, seq)
        else:
            from qbert.engines.onnxruntime import ort_census

            census = ort_census(str(path))
        described = eng.describe()
    return {**scored, "engine": described, "census": census, "model_bytes": model_path.stat().st_size, **extra}


def _embedding_scores(eng: Any, path: Path, eval_ds, tokenizer, meta: Any) -> dict[str, Any]:
    """An embedding row's numbers: retrieval on the evaluation data, and agreement with the FP32 export the
    row's model was quantized from (none for the FP32 row itself)."""
    from qbert.artifacts import load_meta
    from qbert.eval.embedding import evaluate_embeddings, fp32_reference

    reference, note = fp32_reference(load_meta(path, verify=False), path)
    result = evaluate_embeddings(eng, eval_ds, tokenizer, max_length=meta.max_length, reference=reference,
                                 reference_note=note)
    return {"retrieval": result["retrieval"], "agreement": result["agreement"], "examples": result["examples"],
            "sentences": result["sentences"], "embeddings_sha256": result["embeddings_sha256"]}


def score(row: dict[str, Any]) -> float:
    """A row's headline number: accuracy, or an embedding model's recall@1."""
    return row["accuracy"] if "accuracy" in row else row["retrieval"]["recall@1"]


def time_rows(rows: list[dict[str, Any]], engine: str, meta: dict, bench_iters: int, rounds: int = 5,
              exact: bool = False) -> dict[str, dict[str, Any]]:
    """Latency of every row at batch 1 and 8, timed in alternating rounds (every row once a round: the shared
    timer, qbert/timing.py) so that a shared machine's drift hits all rows alike; p50 over all rounds, and the
    range of the per-round p50s as the spread. TensorRT rows are timed with CUDA events, also with CUDA-graph
    replay."""
    import numpy as np

    from qbert.encoding import random_feeds
    from qbert.engines import open_engine
    from qbert.eval.bench import latency_stats
    from qbert.progress import progress_bar

    seq = min(128, meta.max_length)
    feeds = {b: random_feeds(b, seq, meta.vocab_size) for b in (1, 8)}
    per_round = {1: max(2, bench_iters // rounds), 8: max(1, bench_iters // (4 * rounds))}
    graphs = (False, True) if engine == "tensorrt" else (False,)
    engines = {r["name"]: open_engine(engine, r["deployed"], exact=exact) for r in rows}
    try:
        for eng in engines.values():  # warm-up once, outside the rounds
            for b in (1, 8):
                eng.time(feeds[b], 3, 1)
        timers = {(name, b, graph): functools.partial(eng.time, feeds[b], 1, per_round[b], cuda_graph=graph)
                  for name, eng in engines.items() for b in (1, 8) for graph in graphs}
        with progress_bar("latency (rows interleaved)", total=rounds) as advance:
            samples = interleaved(timers, rounds, advance)
    finally:
        for eng in engines.values():
            eng.close()
    out: dict[str, dict[str, Any]] = {}
    for (name, b, graph), runs in samples.items():
        key = "latency_cuda_graph" if graph else "latency"
        out.setdefault(name, {}).setdefault(key, {})[str(b)] = latency_stats(
            np.concatenate(runs), b, seq, rounds=rounds, p50_spread_ms=p50_and_spread(runs)[1])
    return out


def check_gpu_ready() -> None:
    """Up front, before any work: a GPU, a TensorRT that serves it, and cuda-python to drive it."""
    from qbert.engines.gpu import choose_target, query_device
    from qbert.engines.tensorrt import import_trt

    device, why = query_device()
    if device is None:
        raise QbertError(f"{{engine=}} needs a CUDA GPU: {why}; run {{engine}} ort-cpu on this machine",
                         engine="tensorrt")
    trt, backend = import_trt()
    choose_target(trt, backend, "auto", device)


def check_inputs(model_spec: str, eval_data: str, calib_data: str, labels: str | None, rows: list[Row],
                 samples: int, analysis_samples: int, model_label2id: dict[str, int] | None = None) -> tuple:
    """Every input read and checked before the export writes anything into `out`: the model's config and label
    names, both data files (readable, labelled, distinct) and enough calibration rows for what the rows run.
    Returns the label map and both datasets."""
    from qbert.data import label_map, load_dataset_spec

    same = ConfigError("calib_data", calib_data, "holds the same rows as {eval_data}; calibrate on a separate split",
                       eval_data=eval_data)
    if Path(eval_data).resolve() == Path(calib_data).resolve():
        raise same
    from qbert.exporter.pooling import read_sentence_transformers

    embedding = read_sentence_transformers(model_spec, "model") is not None  # judged by retrieval, not accuracy
    if model_label2id is None and not embedding:
        from qbert.exporter.hf import check_classifier, load_config

        config = load_config(model_spec)
        check_classifier(config, model_spec)
        model_label2id = {str(k): int(v) for k, v in config.label2id.items()}
    if embedding:
        from qbert.eval.embedding import RETRIEVAL_LABELS

        model_label2id = RETRIEVAL_LABELS  # which passage answers which question
    label2id = label_map(model_label2id, labels)
    eval_ds = load_dataset_spec(eval_data, label2id).require_labels(
        "reproduce scores retrieval (which passage answers which question) on the evaluation data" if embedding
        else "reproduce scores accuracy on the evaluation data")
    calib_ds = load_dataset_spec(calib_data, None) if embedding else load_dataset_spec(calib_data, label2id)\
        .require_labels("reproduce's sensitivity analysis and auto mixed precision score held-out calibration rows")
    if eval_ds.sha256() == calib_ds.sha256():
        raise same
    have = len(calib_ds.sentences()) if embedding else len(calib_ds.examples)
    what = "distinct sentences" if embedding else "rows"
    if have < analysis_samples + 32:
        raise ConfigError("calib_data", calib_data, f"has {have} {what}, and reproduce's outlier analysis observes "
                          f"{analysis_samples} and scores 32 more held out: give at least {analysis_samples + 32} "
                          f"calibration {what}")
    if any(r.calibrate.get("method") == AUTO for r in rows) and have < samples + 256:
        raise ConfigError("calib_data", calib_data, f"has {have} {what}, and the method-auto row needs ≥ 256 held "
                          "out beyond {samples=}: give more calibration rows, lower {samples}, or leave the row out "
                          "with {only}", samples=samples, only=True)
    return label2id, eval_ds, calib_ds


def reproduce(model_spec: str, eval_data: str, calib_data: str, out: Path, engine: str = "ort-cpu",
              samples: int = 512, bench_iters: int = 50, analysis_samples: int = 128,
              only: str | list[str] | None = None, labels: str | None = None, seeds: int = 3, exact: bool = False
              ) -> dict[str, Any]:
    import onnx

    from qbert.artifacts import load_meta
    from qbert.eval.analyze import analyze, save_analysis
    from qbert.data import label_map
    from qbert.exporter.export import export, model_fingerprint
    from qbert.exporter.hf import load_tokenizer
    from qbert.progress import line, progress_bar

    if engine not in TARGET_OF:
        raise ConfigError("engine", engine, f"choose one of {', '.join(TARGET_OF)}")
    check_exact(engine, exact)  # up front, before any export or calibration
    if engine == "tensorrt":
        check_gpu_ready()
    rows = select_rows(only)
    label2id, eval_ds, calib_ds = check_inputs(model_spec, eval_data, calib_data, labels, rows, samples,
                                               analysis_samples)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows").mkdir(exist_ok=True)
    fp32_path = out / "fp32.onnx"
    if fp32_path.is_file() and sidecar_path(fp32_path).is_file():  # resuming: only into the same model's folder
        if load_meta(fp32_path, verify=False).source_fingerprint != model_fingerprint(model_spec):
            raise ConfigError("out", out, f"holds a reproduction of another model (or an earlier version of "
                              f"{model_spec}); choose another folder, or delete it to start over")
    else:
        line(f"exporting {model_spec} → {fp32_path}")
        export(model_spec, fp32_path)
    meta, model = load_meta(fp32_path), onnx.load(str(fp32_path))
    tokenizer = load_tokenizer(meta.tokenizer)
    if meta.task != "embedding" and label_map(meta.label2id, labels) != label2id:  # the sidecar's labels score rows
        label2id, eval_ds, calib_ds = check_inputs(model_spec, eval_data, calib_data, labels, rows, samples,
                                                   analysis_samples, meta.label2id)
    analysis_path = out / "analysis.json"
    key = {"fp32_sha256": meta.sha256, "calib_sha256": calib_ds.sha256(), "samples": analysis_samples}
    if not analysis_path.is_file() or read_json(analysis_path).get("key") != key:
        line(f"outlier statistics on {analysis_samples} calibration rows → {analysis_path}")
        save_analysis(analyze(model, meta, calib_ds, tokenizer, samples=analysis_samples), out, {"key": key})
    analysis = read_json(analysis_path)
    results = []
    with progress_bar("reproduce", total=len(rows)) as advance:
        for row in rows:
            key = row_key(row, meta.sha256, eval_ds.sha256(), calib_ds.sha256(), samples, engine, seeds, exact,
                          meta.task == "embedding")
            cached, work = out / "rows" / f"{key}.json", out / "rows" / key
            if cached.is_file():
                results.append({**read_json(cached), "cached": True})
            else:
                work.mkdir(exist_ok=True)
                res = run_row(row, fp32_path, meta, model, calib_data, eval_ds, tokenizer, work, samples, engine,
                              label2id, seeds, exact)
                write_json(cached, res)
                results.append({**res, "cached": False})
            r = results[-1]
            r["id"] = row.id  # also on rows cached before rows had ids
            onnx_path = fp32_path if row.kind == "fp32" else work / "model.onnx"  # where it lies now
            r["deployed"] = str(work / "model.plan" if engine == "tensorrt" else onnx_path)
            advance(1, note=f"{row.name}: {100 * score(r):.2f}%"
                            + (" (cached)" if r["cached"] else f" in {r['seconds']:.0f} s"))
    line(f"timing {len(results)} rows interleaved (batch 1 and 8)")
    timings = time_rows(results, engine, meta, bench_iters, exact=exact)
    for r in results:
        r.update(timings[r["name"]])
    from qbert.machine import kernel_mode, machine

    report = {"model": model_spec, "eval_data": eval_data, "calib_data": calib_data, "engine": engine,
              "machine": machine(), "kernel_mode": kernel_mode(exact) if engine == "ort-cpu" else engine,
              "samples": samples, "seeds": seeds, "rows": results, "analysis": {k: analysis[k] for k in
                                                               ("layers", "sensitivity", "worst_layer", "plots")},
              "versions": meta.versions, "task": meta.task}
    from qbert.eval.report import write_report
    from qbert.eval.report_embedding import render_embedding_report

    write_report(report, out, render_embedding_report if meta.task == "embedding" else None)
    return report
