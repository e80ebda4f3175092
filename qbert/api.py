"""The library API: the whole flow as functions and config objects, each writing its artefacts itself. The CLI
is flags → these functions → a table; scripts call them directly (re-exported from `qbert`).

    import qbert
    qbert.export("../shared/fixtures/minilm-l6-qnli", "runs/api/fp32.onnx")
    recipe = qbert.calibrate("runs/api/fp32.onnx", qbert.CalibrationConfig(data="tune.tsv", method="peg", groups=4))
    qbert.quantize("runs/api/fp32.onnx", recipe, "runs/api/peg4.onnx", target="ort-cpu")
    print(qbert.evaluate("runs/api/peg4.onnx", "eval.tsv", limit=200)["accuracy"])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from qbert.artifacts import PlanMeta
from qbert.calibration.quantize import quantize
from qbert.calibration.recipe import Recipe
from qbert.data import Dataset, label_map, load_dataset_spec, rows_dataset
from qbert.engines import open_engine
from qbert.errors import ConfigError, QbertError, check_range
from qbert.exporter.export import export

__all__ = ["CalibrationConfig", "ConfigError", "Dataset", "QbertError", "Recipe", "analyze", "bench", "build",
           "calibrate", "evaluate", "export", "load_data", "open_engine", "quantize", "reproduce"]

def load_data(source: Any, label2id: Mapping[str, int] | None = None, limit: int | None = None) -> Dataset:
    """Sentence pairs from a `.tsv`/`.jsonl` file, a `datasets` spec (`glue/qnli[:split]`), a `Dataset`, or
    in-memory rows (`{"question", "sentence", "label"}` dicts or `(first, second[, label])` tuples).
    `label2id=None` reads no labels (what calibration wants)."""
    if isinstance(source, Dataset):
        return source.head(limit)
    if isinstance(source, (str, Path)):
        return load_dataset_spec(str(source), label2id, limit)
    return rows_dataset(list(source)[:limit] if limit else list(source), label2id)


@dataclass
class CalibrationConfig:
    """How to calibrate. Every field is checked by `validate()`, whose errors name the field.

    data: calibration rows (anything `load_data` takes) — never the evaluation split.
    method: minmax | percentile | mse | entropy | peg, or auto: try them all × both placements on held-out
    calibration rows and keep the fastest whose drop's one-sided 95 % upper bound is within `budget` points
    (default 0.3) of FP32 — for `target` (ort-cpu: timed here; trt: fewest INT8 GEMMs).
    placement: gemm (GEMM inputs, what TensorRT fuses) or full (the study's W8A8). groups/permute: PEG.
    alpha: smoothquant's migration strength (0: none, 1: all of each input channel's range into the weights); also
        for the GEMM inputs that peg with groups "auto" smooths instead of splitting into one GEMM per group.
    fallback: site keys, globs or roles kept in high precision.
    auto_fp16/budget: keep the most sensitive sites in high precision until the drop's one-sided 95 % upper bound
    is within `budget` points (default 0.5) of FP32 on held-out calibration rows. heldout: how many (more rows
    shrink the noise a small budget must clear: the SE of a paired difference is ≈ √(flip rate / rows)). Both
    need labels; `label2id` maps them, default the model's own. exact: those two judge candidates with ORT's
    non-saturating x86 INT8 kernels (what an AVX-512 VNNI / AMX CPU computes) instead of this CPU's default ones."""

    data: Any
    method: str = "minmax"
    placement: str = "gemm"
    samples: int = 512
    percentile: float = 99.99
    groups: int | str = 4  # PEG: K groups per stream tensor, or "auto" (K per tensor from its channel ranges)
    permute: bool = True
    alpha: float = 0.85  # smoothquant, and peg groups="auto" (smooth.ALPHA)
    include_padding: bool = False
    fallback: list[str] = field(default_factory=list)
    batch_size: int | None = None
    threads: int | None = None
    seed: int = 0
    auto_fp16: bool = False
    budget: float | None = None
    heldout: int | None = None  # rows the budget is judged on (default 1,000)
    label2id: dict[str, int] | None = None
    target: str = "ort-cpu"
    exact: bool = False

    def validate(self) -> "CalibrationConfig":
        from qbert.calibration.methods import METHODS
        from qbert.calibration.placement import PLACEMENTS, placement_name

        if self.data is None or isinstance(self.data, (int, float)):
            raise ConfigError("data", self.data, "give a .tsv/.jsonl path, a datasets spec, a Dataset or rows")
        _choice("method", self.method, (*METHODS, "auto"))
        _choice("target", self.target, ("ort-cpu", "trt"))
        self.placement = placement_name(self.placement)
        _choice("placement", self.placement, PLACEMENTS)
        check_range("samples", self.samples, 1)
        if self.groups != "auto":
            check_range("groups", self.groups, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("threads", self.threads, 1)
        check_range("heldout", self.heldout, 1)
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError("percentile", self.percentile, "must be in (0, 100]")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError("alpha", self.alpha, "must be a number in [0, 1]")
        if self.method == "smoothquant" and self.placement != "gemm":
            raise ConfigError("placement", self.placement, "smoothquant applies to the gemm placement only")
        if self.budget is not None and (not math.isfinite(self.budget) or self.budget < 0):
            raise ConfigError("budget", self.budget, "must be a finite number ≥ 0 (accuracy points)")
        if not isinstance(self.exact, bool):
            raise ConfigError("exact", self.exact, "must be True or False")
        if self.exact and not (self.method == "auto" or self.auto_fp16):
            raise ConfigError("exact", self.exact, "applies to method auto and auto_fp16 (the only steps that run "
                              "an INT8 model while calibrating)")
        if isinstance(self.fallback, str) or not all(isinstance(f, str) for f in self.fallback):
            raise ConfigError("fallback", self.fallback, "must be a list of site keys, globs or roles")
        return self


def calibrate(onnx: str | Path, config: CalibrationConfig) -> Recipe:
    """Observe the FP32 ONNX (from `export`) on `config.data` and choose scales: a `Recipe` that `quantize`
    turns into a Q/DQ ONNX for any target."""
    from qbert.artifacts import load_meta, load_onnx
    from qbert.calibration.calibrate import calibrate as run

    config.validate()
    load_onnx(onnx, expect="fp32")
    meta = load_meta(onnx)
    label2id = config.label2id or meta.label2id
    data = str(config.data) if isinstance(config.data, (str, Path)) else \
        load_data(config.data, label2id if config.auto_fp16 or config.method == "auto" else None)
    options = {f.name: getattr(config, f.name) for f in fields(config)
               if f.name not in ("data", "label2id", "heldout")}
    return run(Path(onnx), meta, None, data, label2id=label2id, heldout_rows=config.heldout, **options)


def build(onnx: str | Path, out: str | Path, **options: Any) -> PlanMeta:
    """A TensorRT / TensorRT-RTX plan (+ sidecar) for the GPU in hand, or `sm=86`… to cross-compile; see
    `qbert.engines.tensorrt.build` for the options."""
    from qbert.engines.tensorrt import build as run

    return run(Path(onnx), Path(out), **options)


def evaluate(model: str | Path, data: Any, engine: str = "ort-cpu", plan: str | Path | None = None,
             limit: int | None = None, batch_size: int = 32, threads: int | None = None, exact: bool = False,
             labels: str | None = None, json_out: str | Path | None = None) -> dict[str, Any]:
    """Accuracy on labelled data. `model` is a qbert ONNX (ort-cpu; tensorrt runs its `plan`), or for
    engine torch a Hugging Face model or a qbert ONNX whose FP32 source model then runs — the folder export read
    (by absolute path), refused if it moved or its files changed; the result's `ran` says so. `labels` maps the
    data's label names to ids ("entailment,not_entailment"); `json_out` writes the full result."""
    from qbert.artifacts import load_meta
    from qbert.atomic import check_outputs, sidecar_path, write_json
    from qbert.eval.accuracy import evaluate as run
    from qbert.exporter.hf import load_tokenizer
    from qbert.exporter.provenance import check_loaded, source_model

    check_range("limit", limit, 1)
    check_range("batch_size", batch_size, 1)
    check_range("threads", threads, 1)
    check_outputs({"json_out": json_out}, {"model": model, "plan": plan,
                                           "data": data if isinstance(data, (str, Path)) else None})
    if str(model).endswith(".json"):
        raise QbertError(f"{model} is a JSON file (a sidecar or recipe?); give the .onnx it belongs to")
    is_onnx = str(model).endswith(".onnx") or sidecar_path(model).is_file()
    meta = load_meta(model) if is_onnx or engine != "torch" else None
    if engine == "tensorrt" and plan is None:
        raise ConfigError("plan", None, "engine tensorrt needs a plan (build one with qbert build)")
    source = str(model) if meta is None else source_model(meta, model) if engine == "torch" else None
    target = {"torch": source, "tensorrt": str(plan)}.get(engine, str(model))
    with open_engine(engine, target, threads=threads, exact=exact) as eng:
        if meta is not None and engine == "torch":
            check_loaded(meta, eng.model.config, model)
        label2id = meta.label2id if meta else eng.label2id
        dataset = load_data(data, label_map(label2id, labels), limit)
        result = run(eng, dataset, load_tokenizer(source if engine == "torch" else meta.tokenizer),
                     batch_size=batch_size, max_length=meta.max_length if meta else 128)
    if meta is not None:  # torch runs the FP32 source model: never label it with the ONNX's quantization
        result.update(onnx=str(model), quantization=meta.quantization if engine != "torch" else None)
        if engine == "torch":
            result.update(source_model=source, ran=f"fp32 source model of {model}" + (
                " (INT8 ONNX: its quantization did not run)" if meta.kind == "qdq" else ""))
    if json_out is not None:
        write_json(json_out, result)
    return result


def bench(path: str | Path, engine: str | None = None, batch: Sequence[int] = (1, 8), seq: int | None = None,
          warmup: int = 20, iters: int = 200, json_out: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Latency percentiles, throughput, memory and the integer-kernel census of a deployed ONNX or plan."""
    from qbert.atomic import check_outputs, write_json
    from qbert.eval.bench import run_bench

    data = options.get("data")
    check_outputs({"json_out": json_out}, {"path": path, "data": data if isinstance(data, (str, Path)) else None})
    kind = engine or ("tensorrt" if str(path).endswith((".plan", ".engine")) else "ort-cpu")
    result = run_bench(str(path), kind, list(batch), seq, warmup, iters, **options)
    if json_out is not None:
        write_json(json_out, result)
    return result


def analyze(onnx: str | Path, data: Any, out_dir: str | Path, samples: int = 128, heldout: int = 256,
            include_padding: bool = False, labels: str | None = None) -> dict[str, Any]:
    """Outlier statistics and per-layer sensitivity of an FP32 ONNX; writes analysis.json and PNG plots."""
    from qbert.artifacts import load_meta, load_onnx
    from qbert.atomic import check_outputs, ensure_dir, write_json
    from qbert.eval.analyze import PLOTS, analyze as run, plot
    from qbert.exporter.hf import load_tokenizer

    check_range("samples", samples, 1)
    check_range("heldout", heldout, 32)
    out_dir = ensure_dir(out_dir)
    check_outputs({"out_dir": [out_dir / name for name in ("analysis.json", *PLOTS)]},
                  {"onnx": onnx, "data": data if isinstance(data, (str, Path)) else None}, {"out_dir": out_dir})
    fp32, meta = load_onnx(onnx, expect="fp32"), load_meta(onnx)
    dataset = load_data(data, label_map(meta.label2id, labels)).require_labels(
        "analyze measures per-layer sensitivity as accuracy on labelled rows")
    result = run(fp32, meta, dataset, load_tokenizer(meta.tokenizer), samples=samples, heldout_rows=heldout,
                 include_padding=include_padding)
    result["plots"] = [p.name for p in plot(result, out_dir)]
    write_json(out_dir / "analysis.json", {"onnx": str(onnx), "data": str(dataset.source), **result})
    return result


def reproduce(model: str, eval_data: str, calib_data: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """The study's whole table on `model`, resumable; writes report.md and report.json into `out`."""
    from qbert.atomic import check_outputs
    from qbert.reproduction import reproduce as run

    check_outputs({"out": [Path(out) / name for name in ("report.json", "report.md", "analysis.json")]},
                  {"model": Path(model), "eval_data": Path(eval_data), "calib_data": Path(calib_data)}, {"out": out})
    return run(model, eval_data, calib_data, Path(out), **options)


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(name, value, f"choose one of {', '.join(allowed)}")

