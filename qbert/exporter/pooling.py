"""Sentence embeddings: how token states become one vector per sentence, read from a sentence-transformers folder
(`modules.json`, `1_Pooling/config.json`) or given as the pooling argument, and that computation in torch.

A sentence-transformers model is a Hugging Face encoder followed by modules: Pooling (CLS token, mean, max or
mean / √length over the real tokens) and optionally Normalize (L2). qbert reads those files itself rather than
importing sentence-transformers (not a dependency), so it accepts exactly what it can restate: anything else in
the folder (a Dense projection, weighted-mean or last-token pooling, combined modes, a key it does not know) is
refused in one line instead of being exported as a different function. `embed` is that computation as
sentence-transformers writes it (sum of masked states / clamp(token count, 1e-9); max over real tokens, padding
at −∞); export traces it into the graph and the torch engine runs it after the model's own forward.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbert.artifacts import POOLINGS
from qbert.errors import ConfigError

ST = "sentence_transformers.models."
MODULES = {ST + "Transformer": "transformer", ST + "Pooling": "pooling", ST + "Normalize": "normalize"}
LEGACY_MODES = {  # sentence-transformers < 5 writes one boolean per mode
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean-sqrt-len", "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken"}
MODE_NAMES = {"cls": "cls", "mean": "mean", "max": "max", "mean_sqrt_len_tokens": "mean-sqrt-len",
              "weightedmean": "weightedmean", "lasttoken": "lasttoken"}  # sentence-transformers ≥ 5's `pooling_mode`
NOT_YET = {"weightedmean": "weighted-mean pooling (position-weighted tokens)", "lasttoken": "last-token pooling"}
# include_prompt only matters when a prompt is encoded with the sentence, which qbert never does
OTHER_KEYS = ("word_embedding_dimension", "embedding_dimension", "pooling_mode", "include_prompt")


@dataclass(frozen=True)
class Pooling:
    """What turns the encoder's last hidden states into the sentence embedding."""

    mode: str  # one of POOLINGS
    normalize: bool = False
    transformer: str = ""  # the encoder's subfolder inside a sentence-transformers folder ("" = the folder itself)
    max_seq_length: int | None = None  # sentence_bert_config.json: where sentence-transformers truncates
    source: str = "argument"  # argument | sentence-transformers
    dim: int | None = None  # the Pooling config's embedding dimension (the encoder's hidden size), if it says

    def describe(self) -> str:
        return f"{self.mode} pooling" + (", L2-normalised" if self.normalize else "")


def _read_json(path: Path, spec: str, name: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(name, spec, f"cannot read {path} ({e.strerror})") from None
    except ValueError:
        raise ConfigError(name, spec, f"{path} is not valid JSON (corrupt or truncated); restore it from the "
                          "original checkpoint") from None


def read_sentence_transformers(spec: str, name: str = "model_spec") -> Pooling | None:
    """The pooling a local sentence-transformers folder declares, or None for any other folder or hub id. Errors
    name the model argument as `name`."""
    folder = Path(spec).expanduser()
    if not (folder / "modules.json").is_file():
        return None
    modules = _read_json(folder / "modules.json", spec, name)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                for m in modules):
        raise ConfigError(name, spec, f"{folder / 'modules.json'} is not a list of modules with a type each, as "
                          "sentence-transformers writes it")
    unknown = [m["type"] for m in modules if m["type"] not in MODULES]
    if unknown:
        raise ConfigError(name, spec, f"modules.json has {', '.join(unknown)}, which qbert cannot restate in the "
                          "graph; it exports Transformer → Pooling (→ Normalize) only")
    kinds = [MODULES[m["type"]] for m in modules]
    if kinds[:2] != ["transformer", "pooling"] or kinds[2:] not in ([], ["normalize"]):
        raise ConfigError(name, spec, f"modules.json lists {' → '.join(kinds)}; qbert exports Transformer → "
                          "Pooling (→ Normalize) only")
    transformer = str(modules[0].get("path") or "")
    pooling_dir = folder / str(modules[1].get("path") or "")
    config = _read_json(pooling_dir / "config.json", spec, name)
    mode = _pooling_mode(config, pooling_dir / "config.json", spec, name)
    dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    max_len = None
    bert_config = folder / transformer / "sentence_bert_config.json"
    if bert_config.is_file():
        settings = _read_json(bert_config, spec, name)
        if isinstance(settings, dict) and settings.get("do_lower_case"):
            raise ConfigError(name, spec, f"{bert_config} sets do_lower_case, which lowercases text before the "
                              "tokenizer sees it; qbert tokenizes with the tokenizer alone")
        value = settings.get("max_seq_length") if isinstance(settings, dict) else None
        max_len = value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else None
    return Pooling(mode, "normalize" in kinds, transformer, max_len, "sentence-transformers",
                   dim if isinstance(dim, int) and not isinstance(dim, bool) else None)


def _pooling_mode(config: Any, path: Path, spec: str, name: str) -> str:
    """The one pooling mode of a Pooling config, in either of sentence-transformers' spellings."""
    if not isinstance(config, dict):
        raise ConfigError(name, spec, f"{path} is not a JSON object")
    unknown = [k for k in config if k not in OTHER_KEYS and k not in LEGACY_MODES]
    if unknown:
        raise ConfigError(name, spec, f"{path} has key(s) qbert does not know ({', '.join(unknown)}); it reads "
                          f"{', '.join((*OTHER_KEYS, *LEGACY_MODES))}")
    if "pooling_mode" in config:
        given = config["pooling_mode"]
        modes = [given] if isinstance(given, str) else given if isinstance(given, list) else [repr(given)]
        modes = [MODE_NAMES.get(m, m) if isinstance(m, str) else repr(m) for m in modes]
    else:  # legacy booleans; none set means mean, as sentence-transformers reads it
        modes = [mode for key, mode in LEGACY_MODES.items() if config.get(key) is True] or ["mean"]
    refused = [m for m in modes if m not in POOLINGS]
    if refused:
        why = NOT_YET.get(refused[0], f"unknown pooling mode {refused[0]!r}")
        raise ConfigError(name, spec, f"{path}: {why} is not supported; qbert pools by {', '.join(POOLINGS)}")
    if len(modes) != 1:
        raise ConfigError(name, spec, f"{path} concatenates {' + '.join(modes)} pooling; qbert exports one pooling "
                          "mode")
    return modes[0]


def resolve(spec: str, pooling: str | None, normalize: bool, name: str = "model_spec") -> Pooling | None:
    """The embedding computation to export: the folder's own (sentence-transformers), the `pooling` argument's
    (a plain encoder), or None (a classifier). Arguments that contradict the folder are refused, not preferred."""
    declared = read_sentence_transformers(spec, name)
    if pooling is not None and pooling not in POOLINGS:
        raise ConfigError("pooling", pooling, f"choose one of {', '.join(POOLINGS)}")
    if declared is None:
        if pooling is None and normalize:
            raise ConfigError("normalize", normalize, "normalises a sentence embedding: give {pooling} too",
                              pooling="mean")
        return Pooling(pooling, normalize) if pooling is not None else None
    where = Path(spec).expanduser()
    if pooling is not None and pooling != declared.mode:
        raise ConfigError("pooling", pooling, f"{where} is a sentence-transformers model that pools by "
                          f"{declared.mode} (its Pooling config); drop {{pooling}} or give {declared.mode}",
                          pooling=pooling)
    if normalize and not declared.normalize:
        raise ConfigError("normalize", normalize, f"{where} is a sentence-transformers model without a Normalize "
                          "module; drop {normalize}", normalize=normalize)
    return declared


def embed(hidden: Any, attention_mask: Any, pooling: Pooling) -> Any:
    """[batch, seq, d] states and the [batch, seq] mask → [batch, d] sentence embeddings (torch), padding excluded
    as sentence-transformers excludes it. Inputs are right-padded, so the CLS token is token 0."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    else:
        total = (hidden * mask).sum(dim=1)
        count = torch.clamp(mask.sum(dim=1), min=1e-9)
        out = total / (count if pooling.mode == "mean" else torch.sqrt(count))
    return torch.nn.functional.normalize(out, p=2, dim=1) if pooling.normalize else out
