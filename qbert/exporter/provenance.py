"""Which model an ONNX came from, and whether it is still there. `evaluate("m.onnx", data, engine="torch")` runs
the sidecar's source model: it must be found where it was exported from (not wherever the current folder makes a
relative path point) and be the same files, or accuracy is reported for a model the ONNX never was."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qbert.artifacts import ModelMeta
from qbert.atomic import sha256_file
from qbert.encoding import is_tokenizer_file
from qbert.errors import QbertError, Step

# qbert's own outputs and temp files may be written into a model folder; they are not the model
ARTEFACT_SUFFIXES = (".onnx", ".onnx.json", ".onnx.data", ".recipe.json", ".plan", ".plan.json", ".engine")


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of each file directly in `folder`, by name (sorted)."""
    return {f.name: sha256_file(f) for f in sorted(p for p in folder.iterdir() if p.is_file())}


def fingerprint_of(hashes: dict[str, str]) -> str:
    """One hash over a folder's file hashes (the sidecar's `source_fingerprint`; reproduce's resume key)."""
    h = hashlib.sha256()
    for name, digest in sorted(hashes.items()):
        h.update(name.encode() + b"\0" + digest.encode())
    return h.hexdigest()


def model_files(hashes: dict[str, str]) -> dict[str, str]:
    """The files that make the model (config, weights, tokenizer): not qbert's artefacts or hidden temp files."""
    return {n: d for n, d in hashes.items() if not n.startswith(".") and not n.endswith(ARTEFACT_SUFFIXES)}


def recorded_folder(meta: ModelMeta) -> Path | None:
    """The local folder the ONNX was exported from, or None for a hub id. Sidecars before `source_path` record
    the folder's resolved path as their tokenizer (export resolved it exactly when the model was local)."""
    if meta.source_path:
        return Path(meta.source_path)
    return Path(meta.tokenizer) if Path(meta.tokenizer).is_absolute() else None


def source_model(meta: ModelMeta, onnx: str | Path) -> str:
    """The source model to load for `onnx`, refused (one line: what changed, how to fix) unless it is the model
    the ONNX was exported from."""
    folder = recorded_folder(meta)
    what = "was exported from" if meta.kind == "fp32" else "was quantized from an FP32 export of"
    # never advise writing over `onnx` itself: for an INT8 model that would replace it with an FP32 one
    fix = ("run the model itself (the torch engine with {model} alone, no ONNX), or re-export it to a new path "
           "and quantize that again")
    if folder is None:  # a hub id: its fingerprint is the id; a local folder of that name would shadow it
        spec = meta.source_model
        if Path(spec).expanduser().exists():
            raise QbertError(f"{onnx} {what} the hub model {spec}, but {Path(spec).expanduser()} here is a local "
                             f"path of that name, which would run instead; {fix}", model=spec)
        return spec
    if not folder.is_dir():
        raise QbertError(f"{onnx} {what} the model folder {folder}, which no longer exists (moved or deleted); run "
                         "the moved folder itself with the torch engine ({model} alone, no ONNX)", model="<new folder>")
    changed = _changes(meta, folder)
    if changed:
        raise QbertError(f"{onnx} {what} {folder}, whose files have changed since ({changed}); {fix}",
                         model=folder)
    return str(folder)


def _changes(meta: ModelMeta, folder: Path) -> str | None:
    """What differs from export time, in words, or None. Without per-file hashes (older sidecars) only the
    fingerprint can tell, and then not which file."""
    hashes = file_hashes(folder)
    if meta.source_files is None:
        if meta.source_fingerprint is None or fingerprint_of(hashes) == meta.source_fingerprint:
            return None
        return "the folder's fingerprint differs" + _labels_note(meta, folder)
    changed = _diff(meta.source_files, model_files(hashes))
    return changed + _labels_note(meta, folder) if changed else None


def _diff(was: dict[str, str], now: dict[str, str]) -> str | None:
    """`a changed; b removed; c added`, or None when the two hash maps agree."""
    parts = [f"{', '.join(names)} {verb}" for names, verb in (
        ([n for n in was if n in now and now[n] != was[n]], "changed"),
        ([n for n in was if n not in now], "removed"),
        ([n for n in now if n not in was], "added")) if names]
    return "; ".join(parts) or None


def tokenizer_of(meta: ModelMeta, onnx: str | Path) -> Any:
    """The tokenizer `onnx` was exported with, from the folder its sidecar names — refused in one line when one
    of that folder's tokenizer files changed since export (the sidecar holds their hashes): the ONNX would then
    quietly see token ids its parity check never saw (a tokenizer that stopped lowercasing moved accuracy with
    exit 0). The one place every command that tokenizes through a sidecar loads its tokenizer. Loaded first, so
    a corrupt or unreadable file is named as such rather than as changed."""
    from qbert.exporter.hf import load_tokenizer

    tokenizer = load_tokenizer(meta.tokenizer)
    folder = recorded_folder(meta)
    if folder is not None and meta.source_files is not None and folder.is_dir() and \
            Path(meta.tokenizer).resolve() == folder.resolve():
        changed = _diff({n: d for n, d in meta.source_files.items() if is_tokenizer_file(n)},
                        {n: d for n, d in model_files(file_hashes(folder)).items() if is_tokenizer_file(n)})
        if changed:
            fix = "re-export it: {export}" if meta.kind == "fp32" else \
                "re-export its FP32 model ({export}) and quantize it again"
            export = Step("export", model_spec=folder, out=onnx if meta.kind == "fp32" else meta.fp32_onnx)
            raise QbertError(f"{onnx}: the tokenizer it was exported with ({folder}) has changed since ({changed}); "
                             + fix, export=export)
    return tokenizer


def _labels_note(meta: ModelMeta, folder: Path) -> str:
    """`, 3 labels now, 2 at export` when the config's label count moved (the commonest silent mismatch)."""
    import json

    if meta.task == "embedding":
        return ""

    try:
        labels = json.loads((folder / "config.json").read_text()).get("label2id") or {}
    except (OSError, ValueError, AttributeError):
        return ""
    return f"; {len(labels)} labels now, {len(meta.label2id)} at export" if len(labels) != len(meta.label2id) else ""


def check_loaded(meta: ModelMeta, config: Any, onnx: str | Path) -> None:
    """The loaded source model has the ONNX's labels and shape — the check a hub id (fingerprinted by its name
    only) gets, and a last guard for a folder."""
    from qbert.exporter.arch import sizes

    now = {"label2id": {str(k): int(v) for k, v in config.label2id.items()}, "vocab_size": int(config.vocab_size),
           **sizes(config)}
    if meta.task == "embedding":  # an encoder's config carries placeholder labels no output depends on
        del now["label2id"]
    was = {name: getattr(meta, name) for name in now}
    diff = [f"{name} {was[name]} at export, {now[name]} now" for name in now if now[name] != was[name]]
    if diff:
        raise QbertError(f"{onnx}: its source model {meta.source_model} is not the model it was exported from "
                         f"({'; '.join(diff)}); re-export it, or give the model itself as {{model}}",
                         model=meta.source_model)
