"""Recipe + FP32 ONNX → the Q/DQ ONNX, its recipe and its sidecar, written together: the one writer of these
artefacts for the CLI, `reproduce` and scripts alike, so a Q/DQ ONNX never lacks the sidecar later commands
need, and a failure leaves every previous file as it was."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from qbert.artifacts import ModelMeta, load_meta, load_onnx
from qbert.atomic import (external_data_threshold, proto_size, save_onnx, sidecar_json, staged, staged_sha256_onnx,
                          write_json)
from qbert.calibration.emit import emit
from qbert.calibration.placement import sites as placement_sites
from qbert.calibration.methods import NONE
from qbert.calibration.recipe import Recipe
from qbert.errors import ConfigError, QbertError
from qbert.exporter.graph import parse
from qbert.output_checks import check_outputs, sidecar_kind


def quantize(fp32_onnx: Path | str, recipe: Recipe, out: Path | str, target: str = "ort-cpu",
             high_precision: str | None = None, recipe_out: Path | str | None = None, write_recipe: bool = True,
             model: Any | None = None) -> ModelMeta:
    """Emit `recipe` on `fp32_onnx` for `target` and write `out`, `out.json` (sidecar) and the recipe
    (`recipe_out`, default `<out>.recipe.json`). The recipe is checked first: valid values, and computed on
    this very model. `model` (the loaded FP32 ONNX) is copied, not consumed; without it the file is loaded and
    rewritten in place. Returns the sidecar."""
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    recipe_path = Path(recipe_out) if recipe_out is not None else Path(f"{out}.recipe.json")
    check_outputs({"out": out, "recipe_out": recipe_path if write_recipe else None}, {"fp32_onnx": fp32_onnx},
                  kinds={"out": "onnx"})
    if sidecar_kind(out) == "fp32":  # other quantized models and their recipes name it as their source
        raise QbertError(f"{out} is an FP32 export that quantized models and recipes are computed from; write the "
                         "quantized model to another path")
    if write_recipe:
        _check_recipe_replaceable(recipe_path, out)
    meta = load_meta(fp32_onnx)
    recipe.validate()
    owned = model is None
    if owned:
        model = load_onnx(fp32_onnx, expect="fp32")
    all_sites = placement_sites(parse(model), recipe.placement)
    recipe.check_fits(meta, [s.key for s in all_sites], [s.key for s in all_sites if s.stream],
                      f"recipe ({recipe.method})", {s.key: s.tensor for s in all_sites})
    qmodel, summary = emit(model, recipe, target, high_precision, copy=not owned)
    if proto_size(qmodel) <= external_data_threshold():
        import onnx

        onnx.checker.check_model(qmodel)  # larger models are checked by ORT/TensorRT when loaded
    quant = {"method": recipe.method, "placement": recipe.placement, "groups": recipe.groups,
             "permute": recipe.permute, "percentile": recipe.percentile,
             "recipe": str(recipe_path) if write_recipe or recipe_out is not None else None, **summary}
    if recipe.method != NONE and (warning := int8_warning(summary)):
        quant["warning"] = warning
    with staged() as stage:
        save_onnx(qmodel, out, stage)
        if write_recipe:
            write_json(recipe_path, recipe.to_json(), stage)
        sidecar = replace(meta, kind="qdq", sha256=staged_sha256_onnx(stage, out), fp32_onnx=str(fp32_onnx),
                          quantization=quant)
        sidecar.write(out, stage)
    return sidecar


def int8_warning(summary: dict[str, Any], fallback: str = "fallback") -> str | None:
    """What an emission that quantizes nothing (or no GEMM) should say: the user asked for INT8 and would
    otherwise get a high-precision model that looks like a quantized one. `summary` is the sidecar's
    quantization; `fallback` names the setting to narrow as the reader knows it (the CLI: its flag)."""
    if summary["quantized_sites"] == 0:
        return ("the fallback keeps every quantized tensor in high precision: nothing is left in INT8 (no integer "
                f"kernels, no INT8 speed-up); narrow {fallback}")
    if summary["quantized_gemms"] == 0:
        return ("the fallback keeps every GEMM input in high precision: no GEMM runs on integer kernels (no INT8 "
                f"speed-up); narrow {fallback}")
    return None


def _check_recipe_replaceable(recipe_path: Path, out: Path) -> None:
    """An existing recipe at `recipe_path` is replaced only when it is this output's own (its default
    `<out>.recipe.json`, or the one `out`'s sidecar names): any other is another model's calibration, which
    nothing could recompute from the graph it leaves behind."""
    if not recipe_path.is_file() or recipe_path.resolve() == Path(f"{out}.recipe.json").resolve():
        return
    quant = (sidecar_json(out) or {}).get("quantization")
    named = quant.get("recipe") if isinstance(quant, dict) else None
    if not isinstance(named, str) or Path(named).resolve() != recipe_path.resolve():
        raise ConfigError("recipe_out", recipe_path, "holds another calibration's recipe (not this output's); "
                          "choose a new path, or delete it first")
