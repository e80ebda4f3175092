"""The measuring commands of the command line — bench, analyze, reproduce — registered on `qbert.cli.app`:
each one function that maps its flags onto the library and prints the result."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from qbert.cli_output import LABELS_HELP, MAX_BENCH_BATCH, OPENVINO_CENSUS, err, guarded, integer, out, show
from qbert.cli_rules import check_flags, out_file
from qbert.errors import QbertError, check_range


@guarded
def bench(
    ctx: typer.Context,
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX to time on the CPU (ONNX Runtime or OpenVINO; "
                                        "with --engine openvino also an OpenVINO IR .xml, e.g. NNCF's)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="TensorRT plan to time on the GPU."),
    engine_kind: Optional[str] = typer.Option(None, "--engine", help="ort-cpu | openvino | tensorrt | torch, as in "
                                              "eval (default: ort-cpu for --onnx, tensorrt for --plan)."),
    batch: str = typer.Option("1,8", help="Comma-separated batch sizes."),
    seq: Optional[int] = typer.Option(None, help="Sequence length (inputs are padded/truncated to it; default 128, "
                                      "or the model's maximum if shorter)."),
    warmup: int = typer.Option(20, help="Untimed warm-up runs per shape."),
    iters: int = typer.Option(200, help="Timed runs per shape."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (ort-cpu, openvino; default: all cores)."),
    exact: bool = typer.Option(False, help="ort-cpu: non-saturating x86 INT8 kernels (slower, exact)."),
    cuda_graph: bool = typer.Option(False, help="tensorrt: replay one captured CUDA graph per iteration."),
    data: Optional[str] = typer.Option(None, "--data", help="Use real tokenized rows (else random ids)."),
    profile: bool = typer.Option(False, help="Where the time goes, at the first batch size: kernel time per "
                                 "operator type (ort-cpu, ONNX Runtime's profiler) or per executed layer type and "
                                 "kernel (openvino, its performance counters)."),
    json_out: Optional[Path] = typer.Option(None, "--json", parser=out_file("bench.json"),
                                            help="Write the result JSON here."),
    precision: str = typer.Option("f32", "--precision", help="openvino: inference precision, f32 | bf16 (needs "
                                  "AVX-512 BF16 or AMX; OpenVINO's own default there is bf16, qbert's is f32)."),
) -> None:
    """Latency (p50/p90/p99), throughput, memory and the integer-kernel census of a deployed model."""
    from qbert.api import bench as run_bench

    if (onnx is None) == (plan is None):
        raise QbertError("give exactly one of --onnx (ONNX Runtime CPU) or --plan (TensorRT)")
    kind = engine_kind or ("ort-cpu" if onnx is not None else "tensorrt")
    if kind == "tensorrt" and plan is None:
        raise QbertError("--engine tensorrt runs a plan: build one with qbert build and pass it as --plan")
    if kind in ("ort-cpu", "openvino") and onnx is None:
        raise QbertError(f"--engine {kind} runs an ONNX: pass it as --onnx")
    check_flags(ctx)
    try:
        sizes = [integer("--batch", b) for b in batch.split(",")]
    except QbertError:
        sizes = []
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_BENCH_BATCH:
        raise QbertError(f"--batch {batch!r}: expected integers in [1, {MAX_BENCH_BATCH}] separated by commas, "
                         "like 1,8")
    if len(set(sizes)) < len(sizes):
        raise QbertError(f"--batch {batch!r}: a batch size is repeated (each is timed once)")
    check_range("seq", seq, 1, optional=True)
    check_range("iters", iters, 1)
    check_range("warmup", warmup, 0)
    from qbert.output_checks import check_outputs

    check_range("threads", threads, 1, optional=True)
    check_outputs({"--json": json_out}, {"--onnx": onnx, "--plan": plan, "--data": Path(data) if data else None})
    if profile and kind in ("tensorrt", "torch"):  # (an unknown engine gets its own error when it is opened)
        raise QbertError(f"--profile works with ort-cpu and openvino, not {kind}" + (
            "; for TensorRT use trtexec --dumpProfile or Nsight Systems" if kind == "tensorrt" else ""))
    path = str(onnx if onnx is not None else plan)
    result = run_bench(path, kind, sizes, seq, warmup, iters, json_out=json_out, threads=threads, exact=exact,
                       cuda_graph=cuda_graph, data=data, profile=profile, precision=precision)
    if json_out is not None:
        if not getattr(json_out, "folder_note", ""):  # else the folder note says where it went
            err.print(f"wrote {json_out}")
    table = Table(title=escape(f"bench [{kind}] {path}"), title_justify="left")
    for col in ("batch", "seq", "p50 ms", "p90 ms", "p99 ms", "seq/s"):
        table.add_column(col, justify="right")
    for r in result["shapes"]:
        table.add_row(str(r["batch"]), str(r["seq"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", f"{r['sequences_per_s']:.1f}")
    out.print(table)
    if profile:
        ops = result["profile"]["ms_per_run"]
        total = ops["(kernels)"]
        table = Table(title=f"where the time goes ({result['profile']['source']}, b={sizes[0]}, seq={result['seq']}; "
                      "kernel ms per run)", title_justify="left")
        for i, col in enumerate(("operator" if kind == "ort-cpu" else "layer (kernel)", "ms", "share")):
            table.add_column(col, justify="right" if i else "left")
        for op in ["(gemm)"] + sorted((k for k in ops if not k.startswith("(")), key=lambda k: -ops[k])[:10]:
            table.add_row(escape(op), f"{ops[op]:.2f}", f"{ops[op] / total:.1%}" if total else "")
        table.add_row("(all kernels)", f"{total:.2f}", "100.0%")
        out.print(table)
    census = result["census"]
    if census.get("opaque_fused_layers"):
        out.print(f"[yellow]note:[/] {census['opaque_fused_layers']} fused TensorRT layers hide their GEMMs "
                  "from the census")
    show("memory and kernels", {"model on disk MiB": round(result["model_bytes"] / 2**20, 1),
                                "peak RSS MiB": round(result["peak_rss_bytes"] / 2**20, 1),
                                "integer GEMMs": census.get("integer_gemms", census.get("gemm_layers", "n/a")),
                                "float GEMMs": census.get("float_gemms", "n/a"),
                                f"integer share of GEMM MACs (b={sizes[0]}, seq={result['seq']})": "{:.2%}".format(
                                    census.get("integer_mac_share", 0.0)),
                                **{label: census[key] for key, label in OPENVINO_CENSUS if key in census}})


@guarded
def analyze(
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="FP32 ONNX from qbert export."),
    model: Optional[str] = typer.Option(None, "--model", help="HF model folder or id (exported on the fly)."),
    data: str = typer.Option(..., "--data", "-d", help="Data to observe (.tsv/.jsonl or glue/qnli:train)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for analysis.json and the PNG plots."),
    samples: int = typer.Option(128, help="Sequences for the statistics."),
    heldout: int = typer.Option(256, help="Further rows for per-layer sensitivity."),
    include_padding: bool = typer.Option(False, "--include-padding", help="Count padding (pads to max length, "
                                         "as the study did)."),
    labels: Optional[str] = typer.Option(None, "--labels", help=LABELS_HELP),
    engine: str = typer.Option("ort-cpu", "--engine", help="Where each layer, quantized alone, is scored: ort-cpu "
                               "| openvino (emitted for --target openvino; FP32 also run there)."),
) -> None:
    """Outlier statistics per layer (kurtosis, energy shares, dominant channels), sensitivity, and plots."""
    from qbert.api import analyze as run_analyze
    from qbert.artifacts import load_meta
    from qbert.output_checks import check_outputs, output_folder
    from qbert.calibration.judge import DELTA, delta_text

    if (onnx is None) == (model is None):
        raise QbertError("give exactly one of --onnx or --model")
    check_range("samples", samples, 1)  # before a --model export, not after it
    check_range("heldout", heldout, 32)
    with output_folder(out_dir, "--out"):
        check_outputs({"--out": out_dir / "analysis.json", "--out ": out_dir / "fp32.onnx" if model else None},
                      {"--onnx": onnx, "--data": Path(data), "--model": Path(model) if model else None},
                      {"--out": out_dir}, kinds={"--out": "result", "--out ": "onnx"})
        if onnx is None:
            from qbert.api import export

            onnx = out_dir / "fp32.onnx"
            export(str(model), onnx)
        meta = load_meta(onnx)
        result = run_analyze(onnx, data, out_dir, samples=samples, heldout=heldout, include_padding=include_padding,
                             labels=labels, engine=engine)
    table = Table(title=f"outliers per layer ({'with' if include_padding else 'without'} padding)",
                  title_justify="left")
    judged = "" if result.get("criterion", "accuracy") == "accuracy" else " top-10 kept"
    for col in ("layer", "kurt hidden", "kurt y", "top1% elem E", "top1% chan E (y)", "max/σ (y)",
                "dominant ch (y)", f"{DELTA}{judged} if quantized alone"):
        table.add_column(col, justify="right")
    t = result["layers"]
    for i in range(meta.num_layers):
        y = t["y"][i]
        table.add_row(str(i), f"{t['hidden_states'][i + 1]['kurtosis']:.1f}", f"{y['kurtosis']:.1f}",
                      f"{t['hidden_states'][i + 1]['top1pct_element_energy']:.2f}",
                      f"{y['top1pct_channel_energy']:.2f}", f"{y['max_over_std']:.0f}",
                      ",".join(map(str, y.get("dominant_channels", [])[:3])),
                      delta_text(result["sensitivity"][f"layer.{i}"]["delta_points"], 1))
    out.print(table)
    err.print(f"wrote {out_dir}/analysis.json and {', '.join(result['plots'])}")


@guarded
def reproduce(
    model: str = typer.Option(..., "--model", help="HF sequence classifier (folder or hub id)."),
    eval_data: str = typer.Option(..., "--eval-data", help="Labelled evaluation data (.tsv/.jsonl/glue/qnli)."),
    calib_data: str = typer.Option(..., "--calib-data", help="Calibration data — a different split."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for report.md, report.json, plots and cache."),
    engine: str = typer.Option("ort-cpu", help="ort-cpu | openvino (rows emitted for --target openvino) | tensorrt "
                               "(needs a GPU)."),
    samples: int = typer.Option(512, help="Calibration sequences per row."),
    bench_iters: int = typer.Option(50, help="Timed runs per latency measurement (batch 1; batch 8 uses 1/4)."),
    only: Optional[str] = typer.Option(None, help="Run only these rows, comma-separated: ids (fp32, fp16, "
                                       "w8a8-minmax-gemm, smoothquant-gemm, peg-k4-permuted, method-auto …; an "
                                       "unknown one lists them all), exact row names, or a part of ids or names "
                                       "of at least 3 characters (every row containing it)."),
    seeds: int = typer.Option(3, help="Calibration seeds per INT8 row (other calibration rows each): accuracy is "
                              "reported as mean and range; seed 0's model is the one timed."),
    labels: Optional[str] = typer.Option(None, "--labels", help=LABELS_HELP),
    exact: bool = typer.Option(False, "--exact", help="ort-cpu: score, time and let --method auto / auto mixed "
                               "precision choose with ONNX Runtime's non-saturating x86 INT8 kernels — the numbers "
                               "an AVX-512 VNNI/AMX CPU gives, on any x86 CPU (slower without VNNI)."),
) -> None:
    """Run the study's whole table (FP32, W8A8, mixed precision, PEG, percentile, MSE, auto) and write a report."""
    from qbert.api import reproduce as run_reproduce
    from qbert.output_checks import check_outputs, output_folder
    from qbert.reproduction import score, select_rows

    check_range("samples", samples, 1)
    check_range("bench_iters", bench_iters, 1)
    check_range("seeds", seeds, 1)
    with output_folder(out_dir, "--out"):
        check_outputs({"--out": [out_dir / "report.json", out_dir / "report.md"]},
                      {"--eval-data": Path(eval_data), "--calib-data": Path(calib_data), "--model": Path(model)},
                      {"--out": out_dir})
        report = run_reproduce(model, eval_data, calib_data, out_dir, engine=engine, samples=samples,
                               bench_iters=bench_iters, labels=labels, seeds=seeds, exact=exact,
                               only=[r.id for r in select_rows(only)] if only else None)  # ids: one way to read them
    # (the library's checks run again inside, under the API's names; these ran first, under the flags')
    table = Table(title=f"reproduce [{engine}]", title_justify="left")
    embedding = report.get("task") == "embedding"  # scored by recall@1 (report.md adds FP32 agreement)
    for col in ("setting", f"{'recall@1' if embedding else 'accuracy'} (seed range)", "p50 b=1 ms",
                "int/float GEMMs", "cached"):
        table.add_column(col)
    for r in report["rows"]:
        accs = r.get("seed_recall@1" if embedding else "seed_accuracies") or [score(r)]
        table.add_row(escape(r["name"]), f"{100 * sum(accs) / len(accs):.2f}%" + (
                          f" ({100 * min(accs):.2f}–{100 * max(accs):.2f})" if len(accs) > 1 else ""),
                      f"{r['latency']['1']['p50_ms']:.1f}",
                      f"{r['census']['integer_gemms']}/{r['census']['float_gemms']}", "yes" if r["cached"] else "")
    out.print(table)
    err.print(f"wrote {out_dir}/report.md and report.json")
