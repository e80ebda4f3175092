"""Loading Hugging Face sequence classifiers and plain encoders (local folder or hub id) with clear errors."""
from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path
from typing import Any, Callable

from qbert.errors import ConfigError, QbertError
from qbert.exporter.arch import check_supported


def _looks_like_hub_id(spec: str) -> bool:
    return not spec.startswith((".", "/", "~")) and spec.count("/") <= 1 and not Path(spec).exists()


def check_folder_files(folder: Path, error: Callable[[str], QbertError]) -> None:
    """Read a local model folder's files before Hugging Face does, so that an unreadable or corrupt one is named
    in one line: HF's own errors name neither the file nor the cause (a permission error, a JSON decode error
    deep in the tokenizer) or escape as KeyError / SafetensorError. `error` turns the problem into the caller's
    error, which names the folder as the caller knows it."""
    import json

    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        try:
            with open(f, "rb") as handle:
                head = handle.read() if f.suffix == ".json" else handle.read(1)
                if f.suffix == ".safetensors":  # 8 bytes of header length, then the JSON header
                    handle.seek(0)
                    size = int.from_bytes(handle.read(8), "little")
                    head = handle.read(size) if 2 <= size <= f.stat().st_size - 8 else b""
        except OSError as e:
            raise error(f"cannot read {f} ({e.strerror}); check its permissions") from None
        if f.suffix in (".json", ".safetensors"):
            try:
                json.loads(head)
            except ValueError:  # UnicodeDecodeError included
                kind = "JSON" if f.suffix == ".json" else "safetensors"
                raise error(f"{f} is not valid {kind} (corrupt or truncated); restore it from the original "
                            "checkpoint") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text.splitlines()[0]}" if text else e.__class__.__name__


VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model")  # a fast, WordPiece, BPE or SentencePiece one


def load_config(spec: str, name: str = "model") -> Any:
    """The model's config. Errors name the model argument as `name` (export calls it `model_spec`)."""
    from transformers import AutoConfig

    path = Path(spec).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(name, spec, "expected a Hugging Face model folder or hub id, got a file")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ConfigError(name, spec, "folder has no config.json, so it is not a Hugging Face model")
    if not path.exists() and not _looks_like_hub_id(spec):
        raise ConfigError(name, spec, "no such folder")
    if path.is_dir():
        check_folder_files(path, lambda problem: ConfigError(name, spec, problem))
    try:
        config = AutoConfig.from_pretrained(str(path) if path.exists() else spec)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a bad config
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") and not path.exists() else ""
        raise ConfigError(name, spec, f"could not load a config{offline}: {_first_line(e)}") from None
    return config


def is_classifier(config: Any) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in config.architectures or [])


def check_classifier(config: Any, spec: str, name: str = "model", embedding_hint: bool = False) -> None:
    """A supported sequence classifier, or a ConfigError naming the model argument; `embedding_hint` (export)
    adds that an encoder can be exported as a sentence-embedding model instead."""
    archs = config.architectures or []
    check_supported(config.model_type, spec, name)
    if getattr(config, "problem_type", None) == "regression" or getattr(config, "num_labels", 2) < 2:
        raise ConfigError(name, spec, f"a regression head (num_labels={config.num_labels}); qbert measures "
                          "classification accuracy, so it needs a classifier with ≥ 2 labels")
    if not is_classifier(config):
        hint = ", or export it as a sentence-embedding model with {pooling=}" if embedding_hint else ""
        raise ConfigError(name, spec, f"not a sequence classifier (architectures={archs}); "
                          "fine-tune it with a classification head first" + hint, pooling="mean")


def classifier_config(spec: str, name: str = "model") -> Any:
    """The config of a supported sequence classifier (checked without loading its weights)."""
    config = load_config(spec, name)
    check_classifier(config, spec, name)
    return config


def encoder_config(spec: str, name: str = "model") -> Any:
    """The config of a supported plain encoder (checked without loading its weights). A classifier is refused:
    its head, not pooling, makes its output."""
    config = load_config(spec, name)
    check_supported(config.model_type, spec, name)
    if is_classifier(config):
        raise ConfigError(name, spec, f"a sequence classifier (architectures={config.architectures}) is exported "
                          "with its head, as logits; pooling applies to sentence-embedding encoders")
    return config


def load_classifier(spec: str, name: str = "model") -> tuple[Any, Any]:
    """Return (model in eval mode with eager attention, tokenizer); errors name the model argument as `name`."""
    from transformers import AutoModelForSequenceClassification

    return _load(spec, name, AutoModelForSequenceClassification, classifier_config(spec, name))


def load_encoder(spec: str, name: str = "model") -> tuple[Any, Any]:
    """A plain encoder (the body of a sentence-embedding model, no head) and its tokenizer: (model in eval mode
    with eager attention, tokenizer)."""
    from transformers import AutoModel

    return _load(spec, name, AutoModel, encoder_config(spec, name))


def _load(spec: str, name: str, auto: Any, config: Any) -> tuple[Any, Any]:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # qbert reports its own progress; tqdm's \r bars garble logs
    src = str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec
    folder = Path(src)
    if folder.is_dir() and not any(any(folder.glob(pattern)) for pattern in VOCABULARIES):
        # transformers 4.x fails on it with a TypeError, 5.x maps every word to the unknown token
        raise ConfigError(name, spec, f"the folder has no tokenizer vocabulary ({', '.join(VOCABULARIES)}); "
                          "restore the tokenizer files from the original checkpoint")
    try:
        model = auto.from_pretrained(src, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(src)
    except Exception as e:  # noqa: BLE001 - safetensors, tokenizers and transformers raise many types
        if "ignore_mismatched_sizes" in str(e) or "size mismatch" in str(e):  # the config disagrees with the weights
            raise ConfigError(name, spec, f"config.json does not fit the weights (num_labels={config.num_labels} "
                              "or a layer size differs from the checkpoint's tensors); restore config.json from "
                              "the checkpoint, or fine-tune a head with that many labels") from None
        raise ConfigError(name, spec, f"could not load weights/tokenizer ({_first_line(e)}); its files are "
                          "corrupt or incomplete — restore them from the original checkpoint") from None
    return model.eval(), tokenizer


def forward_inputs(model: Any, feeds: dict[str, Any]) -> dict[str, Any]:
    """The feeds the model's forward names: DistilBERT takes no token_type_ids (transformers 4.x rejects them)."""
    accepted = _forward_names(type(model))
    return {k: v for k, v in feeds.items() if k in accepted}


@functools.lru_cache(maxsize=None)
def _forward_names(cls: type) -> frozenset[str]:  # per class, once: the torch engine calls this per batch
    return frozenset(inspect.signature(cls.forward).parameters)


def load_tokenizer(location: str) -> Any:
    from transformers import AutoTokenizer

    if Path(location).is_dir():
        check_folder_files(Path(location), lambda problem: QbertError(f"tokenizer {location}: {problem}"))
    elif Path(location).exists():
        raise QbertError(f"tokenizer {location} is a file, not a tokenizer folder")
    elif Path(location).is_absolute() or not _looks_like_hub_id(location):
        # sidecars record a local tokenizer by its absolute path: gone means moved or deleted, not a hub id
        raise QbertError(f"tokenizer folder {location} is gone (moved or deleted since export); restore it, or "
                         "re-export the model from where it is now")
    try:
        return AutoTokenizer.from_pretrained(location)
    except Exception as e:  # noqa: BLE001 - tokenizers raises KeyError, Exception … for a malformed file
        raise QbertError(f"could not load the tokenizer from {location} ({_first_line(e)}); its tokenizer.json "
                         "or tokenizer_config.json is corrupt or incomplete — restore it from the original "
                         "checkpoint") from None
