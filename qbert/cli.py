"""The `qbert` command line: one thin function per command; the work lives in the library."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from qbert.cli_output import (FLAGS, LABELS_HELP, err, fallback_patterns, guarded, integer, outlier_row, print_version,
                               show, show_candidates, show_embedding_result, show_fallback_steps)
from qbert.cli_measure import analyze, bench, reproduce
from qbert.cli_rules import check_flags, out_file, refuse_unread, typed as _typed
from qbert.progress import warn
from qbert.errors import QbertError, check_range

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export BERT-family classifiers and sentence-embedding models to ONNX, quantize them to real "
                       "INT8 (minmax, percentile, MSE, entropy, PEG), build TensorRT engines and measure accuracy "
                       "(or retrieval) and speed.")


@app.callback()
def options(quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output on stderr (results "
                                       "and errors still print)."),
            version: bool = typer.Option(False, "--version", is_eager=True, callback=print_version,
                                         help="Print qbert's version and exit.")) -> None:
    """Global options (before the command: qbert --quiet reproduce …)."""
    if quiet:
        os.environ["QBERT_QUIET"] = "1"


@app.command()
@guarded
def export(
    model: str = typer.Option(..., "--model", "-m", help="Hugging Face hub id or local model folder "
                              "(a *ForSequenceClassification checkpoint, a sentence-transformers folder, or an "
                              "encoder with --pooling)."),
    out_path: Path = typer.Option(..., "--out", "-o", parser=out_file("model.onnx"),
                                  help="ONNX file to write (a folder: model.onnx in it); a sidecar <out>.json goes "
                                  "beside it."),
    opset: int = typer.Option(17, help="ONNX opset (≥ 17 gives one LayerNormalization op per LayerNorm)."),
    tolerance: float = typer.Option(1e-4, help="Fail if ONNX Runtime and PyTorch logits differ by more."),
    max_length: Optional[int] = typer.Option(None, help="Max sequence length recorded for later commands "
                                             "(default: 128 — a sentence-transformers model's own max_seq_length "
                                             "— or the model's positions if fewer)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Export an encoder (AutoModel) as a "
                                          "sentence-embedding model: mean | cls | max | mean-sqrt-len over the real "
                                          "tokens; output embeddings [batch, dim]. A sentence-transformers folder "
                                          "declares its own."),
    normalize: bool = typer.Option(False, "--normalize", help="With --pooling: L2-normalise the embeddings in "
                                   "the graph."),
) -> None:
    """Export a sequence classifier (or a sentence-embedding model) to a clean FP32 ONNX and check parity against
    PyTorch."""
    from qbert.api import export as run_export
    from qbert.output_checks import check_outputs

    check_range("tolerance", tolerance, 0.0, integer=False)
    check_range("max_length", max_length, 2, optional=True)
    folder = Path(model).expanduser()
    check_outputs({"--out": out_path}, {"--model": folder} if folder.is_dir() else {}, kinds={"--out": "onnx"})

    meta = run_export(model, out_path, opset=opset, tolerance=tolerance, max_length=max_length, pooling=pooling,
                      normalize=normalize)
    embedding = meta.task == "embedding"
    parity = meta.parity["max_abs_embedding_diff" if embedding else "max_abs_logit_diff"]
    show(f"exported {out_path}", {"model": model, **({"output": f"embeddings, dim {meta.dim} ({meta.pooling} pooling"
                                                                + (", L2-normalised)" if meta.normalize else ")")}
                                                      if embedding else {}),
                                  "opset": meta.opset, "layers": meta.num_layers, "hidden": meta.hidden_size,
                                  "max length": meta.max_length,
                                  f"parity max |Δ{'embedding' if embedding else 'logit'}|": f"{parity:.2e}",
                                  "sha256": meta.sha256[:16] + "…", "seconds": meta.seconds})


@app.command("eval")
@guarded
def eval_cmd(
    ctx: typer.Context,
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX from qbert export/calibrate (ort-cpu and "
                                        "openvino engines); with --fp32 also another tool's ONNX or an OpenVINO "
                                        "IR (.xml, openvino)."),
    data: str = typer.Option(..., "--data", "-d", help="glue/qnli (needs network), or a local .tsv/.jsonl."),
    engine: str = typer.Option("ort-cpu", help="ort-cpu | openvino | tensorrt | torch."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="TensorRT engine plan (for --engine tensorrt)."),
    model: Optional[str] = typer.Option(None, "--model", help="HF model for --engine torch "
                                        "(default: the ONNX sidecar's source model)."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N rows."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Rows per inference batch (length-sorted, "
                                   "padded to the longest row in the batch)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores)."),
    exact: bool = typer.Option(False, help="ort-cpu: non-saturating x86 INT8 kernels (slower, exact)."),
    labels: Optional[str] = typer.Option(None, "--labels", help=LABELS_HELP),
    json_out: Optional[Path] = typer.Option(None, "--json", parser=out_file("eval.json"),
                                            help="Write the full result (with predictions) here."),
    precision: str = typer.Option("f32", "--precision", help="openvino: inference precision, f32 | bf16 (needs "
                                  "AVX-512 BF16 or AMX; OpenVINO's own default there is bf16, qbert's is f32)."),
    fp32: Optional[Path] = typer.Option(None, "--fp32", help="The qbert FP32 export the model was quantized from "
                                        "(ort-cpu, openvino): also scores a model qbert did not write — NNCF's "
                                        "OpenVINO IR (.xml), another tool's ONNX — with that export's tokenizer, "
                                        "length and labels, and reports FP32's accuracy and the share of its "
                                        "predictions the model changed (an embedding model: agreement with FP32). "
                                        "Such a model must take input_ids, attention_mask, token_type_ids and "
                                        "compute the export's output first (logits over its labels, or embeddings "
                                        "of its width); only that is checked, so a different model with the same "
                                        "outputs is scored as if it were a quantization of this export."),
) -> None:
    """Accuracy of a model on a labelled dataset, with a progress bar and a JSON result."""
    from qbert.api import evaluate
    from qbert.output_checks import check_outputs

    if engine == "torch" and onnx is None and model is None:
        raise QbertError("--engine torch needs --model (or --onnx with a qbert sidecar)")
    if engine == "torch" and onnx is not None and model is not None:  # one would be silently ignored
        raise QbertError("--engine torch runs one PyTorch model: give --onnx (its sidecar's source model runs) or "
                         "--model, not both")
    if engine != "torch" and onnx is None:
        raise QbertError(f"--engine {engine} needs --onnx (the model and its sidecar" +
                         (", or --fp32 for one without)" if engine in ("ort-cpu", "openvino") else ")"))
    if engine == "tensorrt" and plan is None:
        raise QbertError("--engine tensorrt needs --plan (build one with qbert build)")
    check_flags(ctx)
    check_outputs({"--json": json_out}, {"--onnx": onnx, "--plan": plan, "--data": Path(data),
                                         "--model": Path(model) if model else None, "--fp32": fp32})
    source = model if engine == "torch" and model is not None else onnx
    result = evaluate(source, data, engine, plan, limit, batch_size, threads, exact, labels, json_out, precision,
                      fp32)
    if json_out is not None:
        if not getattr(json_out, "folder_note", ""):  # else the folder note says where it went
            err.print(f"wrote {json_out}")
    if result.get("task") == "embedding":
        show_embedding_result(result, data)
        return
    acc = result["accuracy"]
    show(f"eval [{result['engine']}]", {**({"ran": result["ran"]} if "ran" in result else {}),
                                        "data": data, "examples": result["examples"],
                               "accuracy": "n/a (no labels)" if acc is None else f"{acc:.4f} "
                               f"({result['correct']}/{result['labelled']})",
                               **against_fp32(result.get("fp32")),
                               "examples/s": result["examples_per_second"],
                               "predictions sha256": result["predictions_sha256"][:16] + "…"})


def against_fp32(ref: dict | None) -> dict[str, str]:
    """eval's rows for `--fp32`: the FP32 export's accuracy on the same rows, and the predictions changed."""
    if not ref:
        return {}
    acc = {} if ref["accuracy"] is None else {"FP32 accuracy (ort-cpu)": f"{ref['accuracy']:.4f}"}
    return {**acc, "FP32 predictions changed": f"{ref['flips']:.2%}"}


@app.command()
@guarded
def calibrate(
    ctx: typer.Context,
    onnx: Path = typer.Option(..., "--onnx", help="FP32 ONNX from qbert export."),
    out_path: Path = typer.Option(..., "--out", "-o", parser=out_file("model.int8.onnx"),
                                  help="Q/DQ ONNX to write (a folder: model.int8.onnx in it; + <out>.json sidecar)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Calibration data: .tsv/.jsonl or glue/qnli:train. "
                                       "Never your evaluation split."),
    method: str = typer.Option("minmax", help="minmax | percentile | mse | entropy | peg | smoothquant (GEMM "
                               "inputs' outlier ranges moved into the weights; gemm placement) | auto: try every "
                               "method and placement (on the timed CPU targets, ort-cpu and openvino, also "
                               "SmoothQuant with FP32 FFN2 inputs or FFN2 outlier channels) on held-out "
                               "calibration rows and keep the fastest whose drop is within "
                               "--budget (default 0.3 pt) of FP32 with 95 % confidence — of those within 10 % of "
                               "its speed, the most faithful to FP32 (a classifier's class probabilities diverge "
                               "least; an embedding model keeps the most FP32 neighbours); every candidate is "
                               "printed and saved in the recipe."),
    placement: str = typer.Option("gemm", help="gemm: GEMM inputs only (what TensorRT fuses; formerly called trt) "
                                  "| full: the study's "
                                  "W8A8 (also residual sums, LayerNorm in/out, softmax)."),
    target: str = typer.Option("ort-cpu", help="ort-cpu: U8 activations, FP32 elsewhere | trt: S8, FP16 elsewhere "
                               "| openvino: S8, FP32 elsewhere (attention fused in INT8 by OpenVINO)."),
    groups: str = typer.Option("4", help="PEG: channel groups per residual-stream tensor, sized to the measured "
                               "channel ranges (outliers get a small group of their own); auto = per tensor, one "
                               "group (per-tensor speed) where there are no outlier channels, and a GEMM input "
                               "that needs groups is smoothed into its weights (one GEMM, not one per group)."),
    permute: bool = typer.Option(True, "--permute/--no-permute", help="PEG: reorder channels first (outliers share the last group with the smallest ones; "
                                 "folded into the weights, no runtime gather)."),
    percentile: float = typer.Option(99.99, help="percentile: clip |x| at this percentile, in (0, 100]."),
    alpha: float = typer.Option(0.85, help="smoothquant (and peg --groups auto's smoothed GEMM inputs): migration "
                                "strength in [0, 1] (how much of each input channel's range moves into the weight "
                                "rows)."),
    samples: int = typer.Option(512, help="Calibration sequences."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Sequences per observation batch "
                                             "(default: as many as fit ~256 MiB of observed activations)."),
    include_padding: bool = typer.Option(False, "--include-padding", help="Count padding tokens in the "
                                         "statistics (pads to max length, like the study)."),
    fp16_fallback: Optional[str] = typer.Option(None, "--fp16-fallback", help="Comma-separated tensors to keep "
                                                "unquantized: keys (layer.3.x), globs (layer.*.h) or roles (x,h,y); "
                                                "PATTERN:N keeps only the N largest channels of a linear layer's "
                                                "input unquantized, in a small GEMM beside the INT8 one (a:4)."),
    high_precision: Optional[str] = typer.Option(None, help="fp16 | fp32 for everything not INT8 "
                                                 "(default: fp16 for --target trt, fp32 for ort-cpu)."),
    recipe_in: Optional[Path] = typer.Option(None, "--recipe", help="Re-emit from this recipe; no calibration."),
    recipe_out: Optional[Path] = typer.Option(None, "--recipe-out", parser=out_file("recipe.json"),
                                              help="Where to write the recipe "
                                              "(default: <out>.recipe.json)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for calibration."),
    auto_fp16: bool = typer.Option(False, "--auto-fp16", help="Keep the most sensitive tensors in high precision "
                                   "until within --budget of FP32 with 95 % confidence "
                                   "(the drop's one-sided upper bound, on held-out calibration rows)."),
    budget: Optional[float] = typer.Option(None, help="Allowed accuracy loss in points on held-out rows "
                                           "(--auto-fp16: default 0.5; --method auto: default 0.3)."),
    heldout: Optional[int] = typer.Option(None, "--heldout", help="--method auto / --auto-fp16: held-out "
                                          "calibration rows the budget is judged on (default 1000; more "
                                          "rows resolve a smaller budget, at proportionally more time)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="--auto-fp16 and --method auto only (other "
                                         "calibration reads no labels). "
                                         + LABELS_HELP),
    exact: bool = typer.Option(False, "--exact", help="--method auto / --auto-fp16: judge candidates with ONNX "
                               "Runtime's non-saturating x86 INT8 kernels — the numbers an AVX-512 VNNI/AMX CPU "
                               "gives — instead of this CPU's default ones (which saturate without VNNI)."),
    asymmetric: bool = typer.Option(False, "--asymmetric", help="Quantize each activation over the part of its "
                                    "clip range the calibration data reached (UINT8 with its own zero point: a GELU "
                                    "or softmax output gets twice the resolution), at the same speed on ort-cpu and "
                                    "openvino (there on FullyConnected inputs); TensorRT runs symmetric INT8 only."),
) -> None:
    """Calibrate an FP32 ONNX and emit a real INT8 Q/DQ ONNX (plus a reusable recipe JSON)."""
    from qbert.api import CalibrationConfig, calibrate as run_calibrate, quantize
    from qbert.calibration.targets import TARGETS
    from qbert.calibration.methods import AUTO, REGISTRY, Settings
    from qbert.artifacts import load_meta
    from qbert.output_checks import check_outputs
    from qbert.calibration.quantize import int8_warning
    from qbert.calibration.recipe import Recipe
    from qbert.data import label_map

    config = None
    auto_groups = groups.strip().lower() == "auto"
    if recipe_in is not None:  # re-emission: calibration flags would silently do nothing
        given = _typed(ctx, "data", "method", "placement", "groups", "percentile", "alpha", "samples", "batch_size",
                       "include_padding", "fp16_fallback", "threads", "auto_fp16", "budget", "heldout", "labels",
                       "permute", "exact", "asymmetric")
        if given:
            raise QbertError(f"--recipe re-emits a saved calibration, so {', '.join(given)} would do nothing; "
                             f"drop {'it' if len(given) == 1 else 'them'}, or calibrate anew without --recipe")
    elif method == AUTO and _typed(ctx, "placement", "groups", "permute"):
        raise QbertError("--method auto tries both placements, PEG with groups auto and 4, permuted; "
                         "drop --placement/--groups/--no-permute, or choose the method yourself")
    elif _typed(ctx, "labels", "budget", "heldout", "exact") and method != AUTO and not auto_fp16:
        raise QbertError("--labels, --budget, --heldout and --exact apply to --method auto and --auto-fp16 (only "
                         "they run the quantized model on labelled rows)")
    elif method in REGISTRY:
        refuse_unread(ctx, REGISTRY[method], Settings(groups="auto" if auto_groups else 4), groups)
    if asymmetric and target in TARGETS and not TARGETS[target].takes_grids:  # an unknown target: refused below
        raise QbertError(f"--asymmetric: --target {target} runs symmetric INT8 only; drop --asymmetric, or choose "
                         f"--target {' or '.join(t.name for t in TARGETS.values() if t.takes_grids)}")
    check_flags(ctx)
    if recipe_in is None:
        if data is None:
            raise QbertError("--data is required unless --recipe is given")
        config = CalibrationConfig(
            data=data, method=method, placement=placement, samples=samples, percentile=percentile, alpha=alpha,
            groups="auto" if auto_groups else integer("--groups", groups),
            permute=permute, include_padding=include_padding, batch_size=batch_size, threads=threads,
            fallback=fallback_patterns(fp16_fallback),
            auto_fp16=auto_fp16, budget=budget, heldout=heldout, exact=exact, asymmetric=asymmetric,
            target=target if method == AUTO else "ort-cpu").validate()  # else the target is emission's alone
    recipe_path = recipe_out or Path(str(out_path) + ".recipe.json")
    same_recipe = recipe_in is not None and recipe_path.resolve() == recipe_in.resolve()
    check_outputs({"--out": out_path, "--recipe-out": None if same_recipe else recipe_path},
                  {"--onnx": onnx, "--data": Path(data) if data else None, "--recipe": recipe_in}, kinds={"--out": "onnx"})
    if config is None:
        recipe = Recipe.load(recipe_in)
    else:
        if labels:
            config.label2id = label_map(load_meta(onnx).label2id, labels)
        recipe = run_calibrate(onnx, config)
    side = quantize(onnx, recipe, out_path, target, high_precision, recipe_path, write_recipe=not same_recipe)
    summary = side.quantization
    if summary.get("warning"):
        warn(int8_warning(summary, FLAGS["fallback"]) or summary["warning"])  # the warning, naming the flag
    if "auto_method" in recipe.calibration and config is not None:
        show_candidates(recipe.calibration["auto_method"])
    elif "auto_method" in recipe.calibration:  # re-emission: the table belongs to the target it was chosen for
        chose = recipe.calibration["auto_method"]
        if chose.get("target", target) != target:
            warn(f"this recipe's --method auto chose {chose['chosen']} for --target {chose['target']} "
                 f"({chose['speed']}); to choose for --target {target}, calibrate with --method auto "
                 f"--target {target}")
    fallback_report = recipe.calibration.get("auto_fp16")
    if fallback_report and "drop_bound_points" in fallback_report["steps"][-1]:  # recipes before the bound: none
        show_fallback_steps(fallback_report)
    shown = REGISTRY[recipe.method].describe(recipe) if recipe.method in REGISTRY else recipe.method
    show(f"calibrated {out_path}", {"method": shown + (f" alpha={recipe.alpha:g}" if recipe.alpha is not None else ""),
                                    "placement": recipe.placement, "target": target,
                                    "activations": summary["activation_dtype"] + (
                                        f", {summary['asymmetric_sites']} on asymmetric grids"
                                        if summary.get("asymmetric_sites") else ""),
                                    "high precision": summary["high_precision"],
                                    "quantized tensors": summary["quantized_sites"] or "0 (nothing in INT8)",
                                    "quantized GEMMs": summary["quantized_gemms"],
                                    "fp16/fp32 fallback": ", ".join(recipe.fallback) or "none",
                                    **outlier_row(recipe, summary),
                                    "recipe": recipe_path})


@app.command()
@guarded
def build(
    ctx: typer.Context,
    onnx: Path = typer.Option(..., "--onnx", help="Q/DQ ONNX from qbert calibrate --target trt (or any ONNX)."),
    out_path: Path = typer.Option(..., "--out", "-o", parser=out_file("model.plan"),
                                  help="Engine plan to write (a folder: model.plan in it; + <out>.json sidecar)."),
    backend: str = typer.Option("auto", help="auto | tensorrt | tensorrt-rtx. auto picks standard TensorRT when "
                                "installed (it builds only on, and for, the GPU in hand), else TensorRT-RTX (which "
                                "cross-compiles, also on a machine without a GPU)."),
    sm: str = typer.Option("auto", help="Target compute capability: auto = the visible GPU (SM86, RTX 30xx such "
                           "as the RTX 3050, when there is none); a number (75, 80, 86, 89, 120 …) cross-compiles "
                           "with TensorRT-RTX (standard TensorRT refuses any but the visible GPU's). The plan is "
                           "reused when the same request comes again (its sidecar holds the cache key)."),
    shapes: Optional[str] = typer.Option(None, help="Profile min/opt/max as BxS/BxS/BxS (default 1x1/8x128/32x128)."),
    opt_level: int = typer.Option(3, help="Builder optimization level 0-5."),
    timing_cache: Optional[Path] = typer.Option(None, help="Timing cache file to read and update (standard TensorRT; "
                                                "TensorRT-RTX times no tactics ahead of time and refuses it)."),
    force: bool = typer.Option(False, help="Rebuild even if an identical cached plan exists."),
    hw_compat: bool = typer.Option(False, help="Standard TensorRT: Ampere+ hardware compatibility."),
) -> None:
    """Build a strongly typed TensorRT / TensorRT-RTX engine (cached by ONNX hash, backend, target, profile)."""
    from qbert.api import build as run_build
    from qbert.output_checks import check_outputs

    check_flags(ctx)
    check_outputs({"--out": out_path, "--timing-cache": timing_cache}, {"--onnx": onnx}, kinds={"--out": "plan"})  # the cache is also read

    meta = run_build(onnx, out_path, backend=backend, sm=sm, shapes=shapes, opt_level=opt_level,
                     timing_cache=timing_cache, force=force, hw_compat=hw_compat)  # shows the build's phases
    if meta.cache_hit and timing_cache is not None:
        warn(f"the plan was reused (same ONNX and settings), so nothing was timed and no timing cache was written "
             f"to {timing_cache}; add --force to rebuild and write it")
    show(f"engine {out_path}", {"backend": f"{meta.backend} {meta.version}", "target": meta.target,
                                "profile": " / ".join(f"{b}x{s}" for b, s in meta.profile),
                                "plan MiB": round(meta.plan_bytes / 2**20, 1),
                                "cache": "hit (reused)" if meta.cache_hit else "miss (built)",
                                "build s": meta.build_seconds})


for command in (bench, analyze, reproduce):  # the measuring commands (cli_measure.py)
    app.command()(command)


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, other click errors, aborts): typer ≥ 0.25 raises its vendored click's, older typer click's."""
    import importlib

    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            pass

    def pick(attr: str) -> tuple[type, ...]:
        return tuple(getattr(m, attr) for m in mods if hasattr(m, attr))

    return pick("UsageError"), pick("ClickException"), pick("Abort")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    usage, other, abort = _click_exceptions()
    try:
        code = app(standalone_mode=False)  # click's usage errors come back here instead of as a framed box
    except usage as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `qbert` / `qbert calibrate`: the help, as before
            e.show()
            sys.exit(e.exit_code)
        where = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        print(f"error: {' '.join(e.format_message().split())}{where}", file=sys.stderr)
        sys.exit(2)
    except other as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, *abort):  # pragma: no cover - interrupted before a command took over
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
