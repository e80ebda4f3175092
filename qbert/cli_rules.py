"""Cross-flag rules of the command line: a flag that would do nothing in the combination given (or would quietly
undo what the command is for) is refused — one line naming the flag and the fix, exit 2 — before any work, so a
user never believes a setting took effect when it was silently ignored.

Rules read `ctx.params` (every option's value) and only fire for flags the user typed, also at their default
value: `--permute` typed with `--method minmax` does nothing either. A boolean flag typed at its off value
(`--no-exact`, `--no-permute`) is left alone: it asks for what happens anyway, so it misleads nobody."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import typer

from qbert.output_checks import file_in_folder
from qbert.errors import QbertError


def typed(ctx: typer.Context, *names: str) -> list[str]:
    """The flags among `names` the user typed — also at their default value, which would otherwise pass unseen."""
    params = {p.name: p for p in ctx.command.params}
    return [("/".join(params[n].opts + params[n].secondary_opts) if params[n].secondary_opts else params[n].opts[0])
            for n in names if ctx.get_parameter_source(n) is not None and
            ctx.get_parameter_source(n).name in ("COMMANDLINE", "ENVIRONMENT")]


def bench_kind(p: dict[str, Any]) -> str:
    """The engine `qbert bench` runs: --engine, else ort-cpu for --onnx and tensorrt for --plan."""
    return p["engine_kind"] or ("ort-cpu" if p["onnx"] is not None else "tensorrt")


@dataclass(frozen=True)
class Rule:
    """`param` (a command's parameter name) does something only when `applies(params)`; else `why(params)`."""
    command: str
    param: str
    applies: Callable[[dict[str, Any]], bool]
    why: Callable[[dict[str, Any]], str]


RULES = [
    Rule("eval", "plan", lambda p: p["engine"] == "tensorrt",
         lambda p: f"runs on --engine tensorrt, not {p['engine']}; drop --plan or add --engine tensorrt"),
    Rule("eval", "exact", lambda p: p["engine"] == "ort-cpu",
         lambda p: f"selects ONNX Runtime's x86 INT8 kernels; --engine {p['engine']} has none: drop --exact"),
    Rule("eval", "threads", lambda p: p["engine"] in ("ort-cpu", "openvino", "torch"),
         lambda p: f"sets CPU threads; --engine {p['engine']} runs on the GPU: drop --threads"),
    Rule("eval", "model", lambda p: p["engine"] == "torch",
         lambda p: f"is the PyTorch model of --engine torch; --engine {p['engine']} runs --onnx/--plan: "
                   "drop --model or add --engine torch"),
    Rule("bench", "cuda_graph", lambda p: bench_kind(p) == "tensorrt",
         lambda p: f"replays a CUDA graph on the GPU; --engine {bench_kind(p)} runs on the CPU: drop --cuda-graph"),
    Rule("bench", "exact", lambda p: bench_kind(p) == "ort-cpu",
         lambda p: f"selects ONNX Runtime's x86 INT8 kernels; --engine {bench_kind(p)} has none: drop --exact"),
    Rule("bench", "threads", lambda p: bench_kind(p) in ("ort-cpu", "openvino"),
         lambda p: f"sets CPU threads; --engine {bench_kind(p)} runs on the GPU: drop --threads"),
    Rule("eval", "fp32", lambda p: p["engine"] in ("ort-cpu", "openvino"),
         lambda p: f"scores an ONNX or OpenVINO IR against its FP32 export on the CPU; --engine {p['engine']} "
                   "runs neither: drop --fp32"),
    Rule("eval", "precision", lambda p: p["engine"] == "openvino",
         lambda p: f"sets OpenVINO's inference precision; --engine {p['engine']} runs the model's own dtypes: "
                   "drop --precision or add --engine openvino"),
    Rule("bench", "precision", lambda p: bench_kind(p) == "openvino",
         lambda p: f"sets OpenVINO's inference precision; --engine {bench_kind(p)} runs the model's own dtypes: "
                   "drop --precision or add --engine openvino"),
    Rule("build", "hw_compat", lambda p: p["backend"] != "tensorrt-rtx",
         lambda p: "is a standard-TensorRT setting; TensorRT-RTX targets one compute capability (--sm): "
                   "drop --hw-compat or use --backend tensorrt"),
    # Refused, not warned: ORT CPU then fuses few Q/DQ pairs into integer GEMMs — on the 2-layer test BERT 4 of
    # 18 GEMMs (33 % of GEMM MACs) ran on integer kernels, against 16 of 18 (99.9 %) with fp32.
    Rule("calibrate", "high_precision",
         lambda p: not (p["target"] in ("ort-cpu", "openvino") and str(p["high_precision"]).lower() == "fp16"),
         lambda p: f"{p['high_precision']} with --target {p['target']} leaves GEMMs on the CPU runtime's float "
                   "kernels (the Q/DQ pairs around FP16 tensors are not fused into integer GEMMs): use fp32 (the "
                   f"default for {p['target']}), or --target trt for FP16"),
    Rule("calibrate", "permute", lambda p: p["method"] in ("peg", "auto"),
         lambda p: f"reorders PEG's channel groups; --method {p['method']} has no groups: drop it or use "
                   "--method peg"),
]


def check_flags(ctx: typer.Context) -> None:
    """Refuse every typed flag that does nothing with the others given, all named in one line."""
    p = ctx.params
    bad = [(flag, rule.why(p)) for rule in RULES if rule.command == ctx.command.name and p[rule.param] is not False
           for flag in typed(ctx, rule.param) if not rule.applies(p)]
    if bad:
        raise QbertError("; ".join(f"{flag} {why}" for flag, why in bad))


class FolderOutput(type(Path())):  # type: ignore[misc]
    """The file inside a folder the user gave as a file output, carrying the line that tells them so."""
    folder_note: str = ""


def out_file(default_name: str) -> Callable[[str], Path]:
    """A typer `parser` for a file output: a path naming a folder (ending with a separator, or an existing
    folder) means `default_name` inside it — what `cp x dir/` does — rather than a file named like the folder.
    The command says where the file went once it succeeded (`folder_notes`), so an error stays one line."""
    def parse(raw: str) -> Path:
        try:
            path = file_in_folder(raw, default_name)
        except QbertError as e:  # typer would prefix a ValueError's text with "Value error,"
            raise typer.BadParameter(str(e)) from None
        if path == Path(raw):
            return path
        inside = FolderOutput(path)
        inside.folder_note = f"{raw} is a folder: wrote {path}"
        return inside

    return parse


def folder_notes(values: dict[str, Any]) -> list[str]:
    """The lines to print after a command succeeded: one per output given as a folder."""
    return [v.folder_note for v in values.values() if isinstance(v, FolderOutput) and v.folder_note]


def refuse_unread(ctx: typer.Context, method: Any, settings: Any, groups: str) -> None:
    """A method flag (--percentile, --groups, --alpha) given to a method that would not read it: one line naming
    the methods that do (methods.readers), in flags."""
    from qbert.calibration.methods import readers

    for name in ("percentile", "groups", "alpha"):
        if typed(ctx, name) and not method.reads_field(name, settings):
            who = " and ".join(f"--method {m}" + "".join(f" --{k} {v}" for k, v in when.items())
                               for m, when in readers(name))
            given = f" --groups {groups}" if "groups" in method.reads else ""
            raise QbertError(f"--{name} applies to {who}, not {method.name}{given}")
