"""The library API: the whole flow as functions and config objects, each writing its artefacts itself. The CLI
is flags → these functions → a table; scripts call them directly (re-exported from `qbert`).

    import qbert
    qbert.export("../shared/fixtures/minilm-l6-qnli", "runs/api/fp32.onnx")
    recipe = qbert.calibrate("runs/api/fp32.onnx", qbert.CalibrationConfig(data="tune.tsv", method="peg", groups=4))
    qbert.quantize("runs/api/fp32.onnx", recipe, "runs/api/peg4.onnx", target="ort-cpu")
    print(qbert.evaluate("runs/api/peg4.onnx", "eval.tsv", limit=200)["accuracy"])
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from qbert import arguments as arg
from qbert.artifacts import ModelMeta, PlanMeta
from qbert.calibration.config import CalibrationConfig
from qbert.calibration.recipe import Recipe
from qbert.calibration.targets import TARGETS
from qbert.data import Dataset, label_map, load_dataset_spec, rows_dataset
from qbert.engines import ENGINE_KINDS, Engine
from qbert.errors import ConfigError, QbertError, check_range
from qbert.ov_session import PRECISIONS

__all__ = ["CalibrationConfig", "ConfigError", "Dataset", "QbertError", "Recipe", "analyze", "bench", "build",
           "calibrate", "evaluate", "export", "load_data", "open_engine", "quantize", "reproduce"]

@arg.arguments_checked
def load_data(source: Any, label2id: Mapping[str, int] | None = None, limit: int | None = None,
              unlabelled_ok: bool = False) -> Dataset:
    """Sentence pairs from a `.tsv`/`.jsonl` file, a `datasets` spec (`glue/qnli[:split]`), a `Dataset`, or
    in-memory rows (`{"question", "sentence", "label"}` dicts or `(first, second[, label])` tuples).
    `label2id=None` reads no labels (what calibration wants: `unlabelled_ok`; otherwise labelled in-memory rows
    without a label2id are refused rather than silently read as unlabelled)."""
    arg.label_ids("label2id", label2id)
    check_range("limit", limit, 1, optional=True)
    if isinstance(source, Dataset):
        return source.head(limit)
    if isinstance(source, (str, Path)):
        arg.data("source", source)
        return load_dataset_spec(str(source), label2id, limit)
    if isinstance(source, (str, bytes, Mapping)) or not hasattr(source, "__iter__"):
        raise ConfigError("source", source, "give a .tsv/.jsonl path, a datasets spec like glue/qnli, a Dataset or "
                          "a list of rows")
    rows = list(source)
    labelled = any(len(r) == 3 if isinstance(r, (list, tuple)) else isinstance(r, Mapping) and r.get("label")
                   not in (None, "") for r in rows)
    if labelled and label2id is None and not unlabelled_ok:  # rows given here with labels mean them
        raise ConfigError("label2id", None, "the rows carry labels but nothing maps them to the model's ids: pass "
                          "the model's label2id (or give rows without labels)")
    return rows_dataset(rows[:limit] if limit else rows, label2id)


@arg.arguments_checked
def export(model_spec: str | Path, out: str | Path, opset: int = 17, tolerance: float = 1e-4,
           max_length: int | None = None, pooling: str | None = None, normalize: bool = False) -> ModelMeta:
    """A Hugging Face sequence classifier (hub id or local folder) → a clean FP32 ONNX at `out` (output `logits`)
    and its sidecar, parity-checked against PyTorch within `tolerance` (max |Δ| of the output). A sentence-
    transformers folder, or an encoder given `pooling` (mean | cls | max | mean-sqrt-len) and `normalize` (L2),
    outputs `embeddings` [batch, dim] instead, pooled in the graph. `max_length` (default 128 — a sentence-
    transformers model's max_seq_length — or the model's positions if fewer): what later commands truncate to."""
    from qbert.artifacts import POOLINGS
    from qbert.exporter.export import export as run

    arg.path("model_spec", model_spec)
    arg.path("out", out)
    check_range("opset", opset)  # its range, explained, is export's own
    check_range("tolerance", tolerance, 0.0, integer=False)
    check_range("max_length", max_length, 2, optional=True)
    arg.choice("pooling", pooling, (None, *POOLINGS))
    arg.flag("normalize", normalize)
    return run(str(model_spec), out, opset=opset, tolerance=tolerance, max_length=max_length, pooling=pooling,
               normalize=normalize)


@arg.arguments_checked
def calibrate(onnx: str | Path, config: CalibrationConfig) -> Recipe:
    """Observe the FP32 ONNX (from `export`) on `config.data` and choose scales: a `Recipe` that `quantize`
    turns into a Q/DQ ONNX for any target."""
    from qbert.artifacts import load_meta, load_onnx
    from qbert.calibration.calibrate import calibrate as run

    arg.path("onnx", onnx)
    if not isinstance(config, CalibrationConfig):
        raise ConfigError("config", config, "must be a qbert.CalibrationConfig(data=…, method=…)")
    config.validate()
    load_onnx(onnx, expect="fp32")
    meta = load_meta(onnx)
    label2id = config.label2id or meta.label2id
    data = str(config.data) if isinstance(config.data, (str, Path)) else \
        load_data(config.data, label2id if config.searches else None, unlabelled_ok=True)
    return run(Path(onnx), meta, None, replace(config, data=data))  # the config travels whole


@arg.arguments_checked
def quantize(fp32_onnx: str | Path, recipe: Recipe, out: str | Path, target: str = "ort-cpu",
             high_precision: str | None = None, recipe_out: str | Path | None = None,
             write_recipe: bool = True) -> ModelMeta:
    """Emit `recipe` (from `calibrate`, or `Recipe.load(path)`) on the FP32 ONNX it was computed on, for `target`
    (ort-cpu: U8 activations | trt: S8 | openvino: S8), everything not INT8 in `high_precision` (fp16 | fp32;
    default fp16 for trt, fp32 for ort-cpu and openvino; fp16 is refused for the CPU targets, whose runtimes then
    leave most GEMMs on float kernels); writes `out`, its sidecar and the recipe (`recipe_out`, default
    `<out>.recipe.json`) together. write_recipe=False writes no recipe: the sidecar then names `recipe_out`, which
    must be an existing recipe (the one `recipe` was loaded from), or none. Returns the sidecar."""
    from qbert.calibration.quantize import quantize as run

    arg.path("fp32_onnx", fp32_onnx)
    if not isinstance(recipe, Recipe):
        raise ConfigError("recipe", recipe, "must be a qbert.Recipe (from qbert.calibrate, or Recipe.load(path))")
    arg.path("out", out)
    _choice("target", target, tuple(TARGETS))
    arg.choice("high_precision", high_precision, (None, "fp16", "fp32"))
    arg.path("recipe_out", recipe_out, optional=True)
    arg.flag("write_recipe", write_recipe)
    if not write_recipe and recipe_out is not None and not Path(recipe_out).is_file():
        raise ConfigError("recipe_out", recipe_out, "with write_recipe=False names the existing recipe the sidecar "
                          "points to, and there is none: drop one of them")
    if high_precision is not None and high_precision not in TARGETS[target].high_precisions:
        fp16 = next(t for t in TARGETS.values() if high_precision in t.high_precisions).name
        raise ConfigError("high_precision", high_precision, f"target {target} runs on the CPU, whose runtime leaves "
                          f"the GEMMs around FP16 tensors on float kernels: use fp32, or target {fp16} for FP16")
    return run(fp32_onnx, recipe, out, target, high_precision, recipe_out, write_recipe)


@arg.arguments_checked
def build(onnx: str | Path, out: str | Path, backend: str = "auto", sm: str | int = "auto",
          shapes: str | None = None, opt_level: int = 3, timing_cache: str | Path | None = None, force: bool = False,
          hw_compat: bool = False) -> PlanMeta:
    """A TensorRT / TensorRT-RTX plan (+ sidecar) of a Q/DQ ONNX emitted for target trt.

    backend: auto (TensorRT if installed, else TensorRT-RTX) | tensorrt (builds for the GPU in hand only) |
    tensorrt-rtx (cross-compiles). sm: auto (the visible GPU; SM86 without one) or a compute capability such as
    86. shapes: the profile's min/opt/max as "BxS/BxS/BxS" (default 1x1/8x128/32x128). opt_level: the builder's
    optimization level 0-5. timing_cache: a file read and updated. force: rebuild even when an identical plan is
    cached (the sidecar holds the cache key). hw_compat: standard TensorRT plans that also run on later GPUs."""
    from qbert.engines.tensorrt import BACKENDS, build as run, parse_shapes

    arg.path("onnx", onnx)
    arg.path("out", out)
    arg.choice("backend", backend, BACKENDS)
    arg.compute_capability("sm", sm)
    arg.text("shapes", shapes)
    parse_shapes(shapes)
    check_range("opt_level", opt_level)  # its range is the builder's own (0-5)
    arg.path("timing_cache", timing_cache, optional=True)
    arg.flag("force", force)
    arg.flag("hw_compat", hw_compat)
    return run(Path(onnx), Path(out), backend=backend, sm=sm, shapes=shapes, opt_level=opt_level,
               timing_cache=Path(timing_cache) if timing_cache is not None else None, force=force,
               hw_compat=hw_compat)


@arg.arguments_checked
def open_engine(kind: str, path: str | Path, threads: int | None = None, exact: bool = False,
                precision: str = "f32") -> Engine:
    """An inference engine as a context manager: ort-cpu or openvino (a qbert ONNX), tensorrt (a plan) or torch
    (a Hugging Face model). `threads` applies to the CPU engines; `exact` (ONNX Runtime's non-saturating x86 INT8
    kernels) to ort-cpu only; `precision` (OpenVINO's inference precision, f32 | bf16) to openvino only."""
    from qbert.engines import check_exact, check_precision, open_engine as run

    arg.choice("kind", kind, ENGINE_KINDS)
    arg.path("path", path)
    check_range("threads", threads, 1, optional=True)
    arg.flag("exact", exact)
    arg.choice("precision", precision, PRECISIONS)
    check_exact(kind, exact, "kind")  # named as this function names the engine
    check_precision(kind, precision, "kind")
    return run(kind, str(path), threads=threads, exact=exact, precision=precision)


@arg.arguments_checked
def evaluate(model: str | Path, data: Any, engine: str = "ort-cpu", plan: str | Path | None = None,
             limit: int | None = None, batch_size: int = 32, threads: int | None = None, exact: bool = False,
             labels: str | None = None, json_out: str | Path | None = None, precision: str = "f32",
             fp32: str | Path | None = None) -> dict[str, Any]:
    """Accuracy on labelled data — or, for a sentence-embedding model, retrieval (recall@1/10, MRR@10, nDCG@10
    where the data labels which passage answers which question) and agreement with the FP32 model it was
    quantized from (qbert.eval.embedding); no accuracy then. `model` is a qbert ONNX (ort-cpu, openvino; tensorrt
    runs its `plan`), or for engine torch a Hugging Face model or a qbert ONNX whose FP32 source model then runs —
    the folder export read (by absolute path), refused if it moved or its files changed; the result's `ran` says
    so. `labels` maps the data's label names to ids ("entailment,not_entailment"); `json_out` writes the full
    result. `fp32`: the qbert FP32 export `model` was quantized from (ort-cpu and openvino engines). A model qbert did
    not write — NNCF's OpenVINO IR, another tool's ONNX: no sidecar — then borrows that export's tokenizer, length,
    labels or pooling, so a peer's INT8 is scored on the same rows the same way; and the result says how far from
    FP32 it moved: the share of FP32's predictions it changed (`fp32.flips`, a classifier) or its agreement with
    FP32's embeddings (an embedding model, which a qbert INT8 model measures against its sidecar's FP32 anyway)."""
    from qbert.artifacts import load_meta
    from qbert.atomic import sidecar_path, write_json
    from qbert.output_checks import check_outputs
    from qbert.engines import open_engine as open_kind
    from qbert.eval.accuracy import evaluate as run
    from qbert.eval.embedding import RETRIEVAL_LABELS, evaluate_embeddings, fp32_reference
    from qbert.eval.reference import check_run, flips_against, fp32_export
    from qbert.exporter.hf import load_tokenizer
    from qbert.exporter.pooling import Pooling
    from qbert.exporter.provenance import check_loaded, source_model, tokenizer_of

    arg.path("model", model)
    arg.data("data", data)
    arg.choice("engine", engine, ENGINE_KINDS)
    arg.path("plan", plan, optional=True)
    arg.only_with("plan", plan, engine == "tensorrt", f"runs on engine tensorrt, not {engine}; drop plan")
    check_range("limit", limit, 1, optional=True)
    check_range("batch_size", batch_size, 1)
    check_range("threads", threads, 1, optional=True)
    arg.flag("exact", exact)
    arg.text("labels", labels)
    arg.path("json_out", json_out, optional=True)
    arg.choice("precision", precision, PRECISIONS)
    arg.path("fp32", fp32, optional=True)
    arg.only_with("fp32", fp32, engine in ("ort-cpu", "openvino"), f"runs beside engines ort-cpu and openvino, not "
                  f"{engine}; drop fp32")
    check_outputs({"json_out": json_out}, {"model": model, "plan": plan, "fp32": fp32,
                                           "data": data if isinstance(data, (str, Path)) else None})
    if str(model).endswith(".json"):
        raise QbertError(f"{model} is a JSON file (a sidecar or recipe?); give the .onnx it belongs to")
    is_onnx = str(model).endswith(".onnx") or sidecar_path(model).is_file()
    cpu = engine in ("ort-cpu", "openvino")
    if fp32 is None and cpu and not sidecar_path(model).is_file() and Path(model).is_file():
        raise QbertError(f"{model} has no sidecar ({sidecar_path(model).name}): put it back beside the model, or, "
                         "for a model qbert did not write (a peer's INT8), give {fp32}: the qbert FP32 export it was "
                         "quantized from", fp32=None)
    reference_meta = fp32_export(fp32, model) if fp32 is not None else None
    borrowed = reference_meta is not None and not sidecar_path(model).is_file()  # a model qbert did not write
    meta = reference_meta if borrowed else load_meta(model) if is_onnx or engine != "torch" else None
    if engine == "tensorrt" and plan is None:
        raise ConfigError("plan", None, "engine tensorrt needs a plan (build one with qbert build)")
    source = str(model) if meta is None else source_model(meta, model) if engine == "torch" else None
    target = {"torch": source, "tensorrt": str(plan)}.get(engine, str(model))
    # the torch engine runs the source model with the pooling the ONNX was exported with
    pooling = Pooling(meta.pooling, meta.normalize) if meta and meta.task == "embedding" else None
    with open_kind(engine, target, threads=threads, exact=exact, precision=precision,
                   pooling=pooling if engine == "torch" else None) as eng:
        if meta is not None and engine == "torch":
            check_loaded(meta, eng.model.config, model)
        if borrowed:
            check_run(eng, model, fp32, meta)
        task = meta.task if meta else getattr(eng, "task", "classification")
        tokenizer = load_tokenizer(eng.hf_spec) if engine == "torch" else \
            tokenizer_of(meta, fp32 if borrowed else model)
        max_length = meta.max_length if meta else eng.max_length
        if task == "embedding":
            dataset = load_data(data, label_map(RETRIEVAL_LABELS, labels), limit)
            reference, note = (str(fp32), None) if fp32 is not None else \
                fp32_reference(meta if engine != "torch" else None, model)
            result = evaluate_embeddings(eng, dataset, tokenizer, batch_size, max_length=max_length,
                                         reference=reference, reference_note=note, threads=threads)
        else:
            label2id = meta.label2id if meta else eng.label2id
            dataset = load_data(data, label_map(label2id, labels), limit)
            result = run(eng, dataset, tokenizer, batch_size=batch_size, max_length=max_length)
            if fp32 is not None:
                result["fp32"] = flips_against(fp32, result, dataset, tokenizer, batch_size, max_length, threads)
    if borrowed:
        result.update(onnx=str(model), quantization=None, sidecar_from=str(fp32))
    elif meta is not None:  # torch runs the FP32 source model: never label it with the ONNX's quantization
        result.update(onnx=str(model), quantization=meta.quantization if engine != "torch" else None)
        if engine == "torch":
            result.update(source_model=source, ran=f"fp32 source model of {model}" + (
                " (INT8 ONNX: its quantization did not run)" if meta.kind == "qdq" else ""))
    if json_out is not None:
        write_json(json_out, result)
    return result


@arg.arguments_checked
def bench(path: str | Path, engine: str | None = None, batch: Sequence[int] = (1, 8), seq: int | None = None,
          warmup: int = 20, iters: int = 200, json_out: str | Path | None = None, threads: int | None = None,
          exact: bool = False, cuda_graph: bool = False, data: str | Path | None = None,
          profile: bool = False, precision: str = "f32") -> dict[str, Any]:
    """Latency percentiles, throughput, memory and the integer-kernel census of a deployed ONNX or plan.

    engine: ort-cpu | openvino | tensorrt | torch (default: tensorrt for a .plan/.engine, else ort-cpu). batch: the batch
    sizes, each timed once. seq: tokens per row (default 128, or the model's maximum if shorter). warmup/iters:
    untimed and timed runs per shape. threads: CPU threads (default all cores). exact: ort-cpu's non-saturating
    x86 INT8 kernels. cuda_graph: tensorrt replays one captured CUDA graph per run. data: real tokenized rows
    (.tsv/.jsonl or a datasets spec) instead of random ids. profile: kernel time per operator type (ort-cpu, from
    ONNX Runtime's profiler) or per executed layer type and kernel (openvino, from its performance counters).
    precision: OpenVINO's inference precision (f32 | bf16)."""
    from qbert.atomic import write_json
    from qbert.output_checks import check_outputs
    from qbert.eval.bench import run_bench

    arg.path("path", path)
    arg.choice("engine", engine, (None, *ENGINE_KINDS))
    sizes = arg.batch_sizes("batch", batch)
    check_range("seq", seq, 1, optional=True)
    check_range("warmup", warmup, 0)
    check_range("iters", iters, 1)
    arg.path("json_out", json_out, optional=True)
    check_range("threads", threads, 1, optional=True)
    for name, value in (("exact", exact), ("cuda_graph", cuda_graph), ("profile", profile)):
        arg.flag(name, value)
    arg.path("data", data, optional=True)
    if data is not None:
        arg.data("data", data)
    arg.choice("precision", precision, PRECISIONS)
    kind = engine or ("tensorrt" if str(path).endswith((".plan", ".engine")) else "ort-cpu")
    if profile and kind not in ("ort-cpu", "openvino"):
        raise ConfigError("profile", profile, f"works with engines ort-cpu and openvino, not {kind}" + {
            "tensorrt": " (for TensorRT use trtexec --dumpProfile or Nsight Systems)"}.get(kind, ""))
    check_outputs({"json_out": json_out}, {"path": path, "data": data if isinstance(data, (str, Path)) else None})
    result = run_bench(str(path), kind, sizes, seq, warmup, iters, threads=threads, exact=exact,
                       cuda_graph=cuda_graph, data=None if data is None else str(data), profile=profile,
                       precision=precision)
    if json_out is not None:
        write_json(json_out, result)
    return result


@arg.arguments_checked
def analyze(onnx: str | Path, data: Any, out_dir: str | Path, samples: int = 128, heldout: int = 256,
            include_padding: bool = False, labels: str | None = None, engine: str = "ort-cpu") -> dict[str, Any]:
    """Outlier statistics and per-layer sensitivity of an FP32 ONNX; writes analysis.json and PNG plots.
    engine: where each layer, quantized alone, is scored — ort-cpu, or openvino (emitted for its target)."""
    from qbert.artifacts import load_meta, load_onnx
    from qbert.output_checks import check_outputs, output_folder
    from qbert.eval.analyze import ENGINES, PLOTS, analyze as run, save_analysis
    from qbert.exporter.provenance import tokenizer_of

    arg.path("onnx", onnx)
    arg.data("data", data)
    arg.path("out_dir", out_dir)
    check_range("samples", samples, 1)
    check_range("heldout", heldout, 32)
    arg.flag("include_padding", include_padding)
    arg.text("labels", labels)
    arg.choice("engine", engine, ENGINES)
    if engine == "openvino":
        from qbert.ov_session import openvino

        openvino()  # one line if the package is missing, before any work
    with output_folder(out_dir, "out_dir") as out_dir:
        check_outputs({"out_dir": [out_dir / name for name in ("analysis.json", *PLOTS)]},
                      {"onnx": onnx, "data": data if isinstance(data, (str, Path)) else None}, {"out_dir": out_dir})
        fp32, meta = load_onnx(onnx, expect="fp32"), load_meta(onnx)
        if meta.task == "embedding":  # judged by FP32's own neighbours: sentences, no labels
            if labels is not None:
                raise ConfigError("labels", labels, f"{onnx} is a sentence-embedding model, judged by its FP32 "
                                  "model's neighbours without labels; leave it out")
            dataset = load_data(data, None, unlabelled_ok=True)
        else:
            dataset = load_data(data, label_map(meta.label2id, labels)).require_labels(
                "analyze measures per-layer sensitivity as accuracy on labelled rows")
        result = run(fp32, meta, dataset, tokenizer_of(meta, onnx), samples=samples, heldout_rows=heldout,
                     include_padding=include_padding, engine=engine)
        saved = save_analysis(result, out_dir, {"onnx": str(onnx), "data": str(dataset.source)})
    result["plots"] = saved["plots"]
    return result


@arg.arguments_checked
def reproduce(model: str | Path, eval_data: str | Path, calib_data: str | Path, out: str | Path,
              engine: str = "ort-cpu", samples: int = 512, bench_iters: int = 50, analysis_samples: int = 128,
              only: list[str] | None = None, labels: str | None = None, seeds: int = 3,
              exact: bool = False) -> dict[str, Any]:
    """The study's whole table on `model`, resumable; writes report.md and report.json into `out`.

    engine: ort-cpu | openvino | tensorrt (each row emitted for that engine's target). samples: calibration sequences per row. bench_iters: timed runs per latency
    measurement. analysis_samples: sequences for the outlier statistics. only: run only these rows — ids, names,
    or parts of them. labels: the data's label names in id order. seeds: calibration seeds per
    INT8 row. exact: ort-cpu scores, times and chooses with the non-saturating x86 INT8 kernels."""
    from qbert.output_checks import check_outputs, output_folder
    from qbert.reproduction import reproduce as run

    arg.path("model", model)
    for name, value in (("eval_data", eval_data), ("calib_data", calib_data)):
        arg.path(name, value)
        arg.data(name, value)
    arg.path("out", out)
    arg.choice("engine", engine, ("ort-cpu", "openvino", "tensorrt"))
    check_range("samples", samples, 1)
    check_range("bench_iters", bench_iters, 1)
    check_range("analysis_samples", analysis_samples, 1)
    arg.names("only", only)
    arg.text("labels", labels)
    check_range("seeds", seeds, 1)
    arg.flag("exact", exact)
    with output_folder(out, "out"):
        check_outputs({"out": [Path(out) / name for name in ("report.json", "report.md", "analysis.json")]},
                      {"model": Path(model), "eval_data": Path(eval_data), "calib_data": Path(calib_data)},
                      {"out": out})
        return run(str(model), str(eval_data), str(calib_data), Path(out), engine=engine, samples=samples,
                   bench_iters=bench_iters, analysis_samples=analysis_samples, only=list(only) if only else None,
                   labels=labels, seeds=seeds, exact=exact)


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    arg.choice(name, value, allowed)

