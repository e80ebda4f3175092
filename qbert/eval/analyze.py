"""Outlier analysis (`qbert.analyze`): where the outliers are, how heavy-tailed each layer is, and which layers
quantization hurts.

Statistics stream through the same observers as calibration (bounded memory, padding masked by default).
Sensitivity quantizes one layer's activations at a time (minmax, `full` placement, everything else FP32)
and measures logit SQNR and accuracy on held-out rows of the given data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qbert.calibration.scales import per_tensor_scales
from qbert.calibration.emit import emit
from qbert.calibration.judge import DELTA, criterion, judged_embeddings
from qbert.calibration.observe import Observer
from qbert.calibration.placement import sites as placement_sites
from qbert.calibration.recipe import Recipe
from qbert.data import Dataset
from qbert.encoding import batches, encode, encode_texts
from qbert.eval.stats import summarize
from qbert.exporter.graph import parse
from qbert.calibration.select import runner
from qbert.calibration.targets import TARGETS
from qbert.ort_session import logits_with, sqnr_db
from qbert.progress import progress_bar

ROLES = ("x", "h", "y")


def observe_all(model: Any, encoded, include_padding: bool, batch_size: int | None, meta: dict[str, Any]):
    """Statistics (with analysis moments) of every `full`-placement site on the encoded rows."""
    from qbert.calibration.calibrate import auto_batch_size

    all_sites = placement_sites(parse(model), "full")
    max_length, pad_id = meta.max_length, meta.pad_token_id
    batch_size = batch_size or auto_batch_size(all_sites, meta)
    obs = Observer(model, all_sites, histograms=True, include_padding=include_padding, analysis=True)
    with progress_bar("observe", total=len(encoded)) as advance:
        stats = obs.run((f for _, f in batches(encoded, batch_size, pad_id=pad_id,
                                               pad_to=max_length if include_padding else None)), advance)
    return all_sites, stats


def site_sensitivity(model: Any, all_sites, stats, keys_per_unit: dict[str, list[str]], heldout, labels,
                     fp_logits: np.ndarray, pad_id: int, batch_size: int = 32, engine: str = "ort-cpu"
                     ) -> dict[str, dict[str, float]]:
    """For each unit (a set of site keys), quantize only it: output SQNR (dB) and the accuracy drop vs FP32 — or,
    `labels` None (an embedding model), the share of FP32's top-10 neighbours lost (judge.judged_embeddings).
    `engine`: where the quantized units run, emitted for the target that engine runs (ort-cpu or openvino)."""
    scales = per_tensor_scales(all_sites, stats)  # minmax: the sensitivity of each unit alone
    fp_acc = float((fp_logits.argmax(-1) == labels).mean()) if labels is not None else None
    out = {}
    with progress_bar("sensitivity", total=len(keys_per_unit)) as advance:
        for unit, keys in keys_per_unit.items():
            recipe = Recipe(method="minmax", placement="full", sites={k: scales[k] for k in keys})
            q, _ = emit(model, recipe, target_of_engine(engine))
            logits = logits_with(runner(q, engine), heldout, batch_size, pad_id)
            if labels is None:
                lost = judged_embeddings(logits, fp_logits, float("inf"))["drop_points"]
                out[unit] = {"sqnr_db": sqnr_db(fp_logits, logits), "neighbours_lost": lost / 100,
                             "delta_points": 0.0 - lost}
                advance(1)
                continue
            drop = fp_acc - float((logits.argmax(-1) == labels).mean())
            out[unit] = {"sqnr_db": sqnr_db(fp_logits, logits), "accuracy_drop": drop,
                         "delta_points": 0.0 - 100 * drop}  # the sign every table uses (judge.DELTA)
            advance(1)
    return out


def analyze(model: Any, meta: dict[str, Any], dataset: Dataset, tokenizer: Any, samples: int = 128,
            heldout_rows: int = 256, include_padding: bool = False, batch_size: int | None = None,
            seed: int = 0, engine: str = "ort-cpu") -> dict[str, Any]:
    from qbert.errors import ConfigError

    embedding = meta.task == "embedding"  # one sentence at a time, judged by FP32's neighbours (no labels)
    sentences = dataset.sentences() if embedding else None
    available = len(sentences) if embedding else len(dataset.examples)
    what = "distinct sentences" if embedding else "rows"
    if available < samples + 32:
        raise ConfigError("samples", samples, f"analysis observes {samples} {what} and scores 32 more held out, but "
                          f"the data has {available}: give at least {samples + 32} {what}, or lower "
                          "{samples}", samples=samples)
    order = np.random.default_rng(seed).permutation(available)
    max_length, pad_id = meta.max_length, meta.pad_token_id
    if embedding:
        enc_c = encode_texts([sentences[i] for i in sorted(order[:samples])], tokenizer, max_length)
        held_idx = sorted(order[samples:samples + heldout_rows])
        enc_h, held_labels = encode_texts([sentences[i] for i in held_idx], tokenizer, max_length), None
    else:
        pick = lambda idx: Dataset([dataset.examples[i] for i in sorted(idx)], dataset.source)  # noqa: E731
        held = pick(order[samples:samples + heldout_rows])
        enc_c, enc_h = encode(pick(order[:samples]), tokenizer, max_length), encode(held, tokenizer, max_length)
        held_idx, held_labels = held.examples, held.labels
    all_sites, stats = observe_all(model, enc_c, include_padding, batch_size, meta)
    layers = meta.num_layers
    first = "emb.proj" if "emb.proj" in stats else "emb.ln"  # the stream's first tensor (after any projection)
    hidden_keys = [first] + [f"layer.{i}.z" for i in range(layers)]
    table = {"hidden_states": [summarize(stats[k]) for k in hidden_keys]}
    for role in ROLES:
        table[role] = [summarize(stats[f"layer.{i}.{role}"]) for i in range(layers)]
    fp_logits = logits_with(runner(model, engine), enc_h, 32, pad_id)  # FP32 on the engine the units run on
    units = {f"layer.{i}": [s.key for s in all_sites if s.key.startswith(f"layer.{i}.")] for i in range(layers)}
    sens = site_sensitivity(model, all_sites, stats, units, enc_h, held_labels, fp_logits, pad_id, engine=engine)
    worst = max(range(layers), key=lambda i: table["y"][i]["kurtosis"])
    return {"samples": samples, "heldout": len(held_idx), "include_padding": include_padding,
            "criterion": criterion(held_labels), "engine": engine,
            "layers": table, "sensitivity": sens, "worst_layer": worst,
            "worst_channel_amax": stats[f"layer.{worst}.y"].channel_amax.tolist(),
            "worst_channel_energy": stats[f"layer.{worst}.y"].channel_energy.tolist()}


ENGINES = ("ort-cpu", "openvino")  # where analyze runs its quantized layers: the CPU runtimes


def target_of_engine(engine: str) -> str:
    """The target whose artefacts `engine` runs."""
    return next(t.name for t in TARGETS.values() if t.engine == engine)


PLOTS = ("kurtosis.png", "channel_energy.png", "channel_range.png", "sensitivity.png")  # what plot() writes


def save_analysis(result: dict[str, Any], out_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plots and analysis.json (`result` plus `extra`, with the plots' names) appear together or not at
    all: an analysis that fails partway (a full disk) leaves `out_dir` as it was, never plots without their JSON."""
    from qbert.atomic import staged, write_json

    with staged() as stage:
        result = {**(extra or {}), **result, "plots": [p.name for p in plot(result, out_dir, stage)]}
        write_json(out_dir / "analysis.json", result, stage=stage)
    return result


def plot(result: dict[str, Any], out_dir: Path, stage: Any = None) -> list[Path]:
    """Four PNGs: kurtosis by layer, channel-energy curve, per-channel range of the worst layer, sensitivity.
    Written together into `stage` (an atomic.Staged, committed by its owner with the rest of the outputs), or
    in a stage of their own: all four or none."""
    import contextlib

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qbert.atomic import staged

    with contextlib.nullcontext(stage) if stage is not None else staged() as s:
        return _draw(result, out_dir, s, plt)


def _draw(result: dict[str, Any], out_dir: Path, stage: Any, plt: Any) -> list[Path]:
    paths = []

    def save(fig, name: str) -> None:
        path = out_dir / name
        try:
            fig.savefig(stage.path(path), format="png", dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        paths.append(path)

    t = result["layers"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(t["hidden_states"])), [r["kurtosis"] for r in t["hidden_states"]], "o-",
            label="hidden state (0 = embeddings)")
    for role in ROLES:
        ax.plot(range(1, len(t[role]) + 1), [r["kurtosis"] for r in t[role]], ".--", label=role)
    ax.axhline(3, color="grey", lw=0.8)
    ax.set(yscale="log", xlabel="layer", ylabel="Pearson kurtosis (Gaussian = 3)", title="Kurtosis by layer")
    ax.legend(fontsize=7)
    save(fig, "kurtosis.png")

    energy = np.sort(np.asarray(result["worst_channel_energy"]))[::-1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(energy) + 1) / len(energy) * 100, np.cumsum(energy) / energy.sum())
    ax.set(xscale="log", xlabel="% of channels (largest energy first)", ylabel="share of Σx²",
           title=f"Channel energy, layer {result['worst_layer']} y")
    save(fig, "channel_energy.png")

    amax = np.asarray(result["worst_channel_amax"])
    dom = t["y"][result["worst_layer"]].get("dominant_channels", [])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(np.arange(len(amax)), amax, width=1.0)
    for c in dom[:3]:
        ax.annotate(str(c), (c, amax[c]), ha="center", va="bottom", fontsize=8, color="red")
    ax.set(xlabel="channel", ylabel="max |x|", title=f"Per-channel range, layer {result['worst_layer']} y")
    save(fig, "channel_range.png")

    sens = result["sensitivity"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(range(len(sens)), [v["delta_points"] for v in sens.values()])
    what = "" if result.get("criterion", "accuracy") == "accuracy" else ", FP32 top-10 neighbours kept"
    ax.set(xticks=range(len(sens)), xticklabels=[k.split(".")[-1] for k in sens], xlabel="layer quantized alone",
           ylabel=f"{DELTA}{what} (negative = worse)", title="Sensitivity (minmax W8A8, full placement)")
    save(fig, "sensitivity.png")
    return paths
