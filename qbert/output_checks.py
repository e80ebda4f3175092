"""Which files a command may write: every output is checked, before any work, against every file the command
reads — directly or through what it leads to (an ONNX's sidecar names its tokenizer, source-model folder, recipe
and FP32 ONNX) — and output folders are created so that a failed command leaves none behind.

The writing itself (staged temp files renamed together) is `qbert.atomic`'s.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from qbert.atomic import EmptyPath, check_output_dir, ensure_dir, sidecar_json, sidecar_path
from qbert.errors import QbertError


@contextlib.contextmanager
def output_folder(folder: Path | str, what: str = "out") -> Iterator[Path]:
    """`ensure_dir`, undone if the work inside fails: the folders this call created are removed again while
    they are still empty, so a refused or failed command leaves the tree as it found it (no empty output folder)."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    ensure_dir(folder, what)
    try:
        yield folder
    except BaseException:
        if created:
            for root, _, _ in sorted(os.walk(created[0]), key=lambda w: -len(w[0])):  # empty subfolders too
                with contextlib.suppress(OSError):
                    os.rmdir(root)
            for p in created[1:]:
                with contextlib.suppress(OSError):  # holds files now: leave it
                    p.rmdir()
        raise


def file_in_folder(raw: str | Path, default_name: str) -> Path:
    """The file an output path names: `raw` itself, or `default_name` inside it when `raw` names a folder (ends
    with a path separator, or is an existing folder), as `cp x dir/` would; every command then names the file
    it wrote. The folder itself is created (or refused, if it is a file) later, with the other output checks."""
    text = str(raw)
    if not text.strip():  # Path("") is the current folder: the file would land in it, under the default name
        raise EmptyPath("the path is empty; give a file name")
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return Path(text) / default_name
    return Path(text)


PathSpec = Path | str | Sequence[Path | str] | None  # one path, several (an output folder's files), or none


def check_outputs(outputs: Mapping[str, PathSpec], inputs: Mapping[str, PathSpec],
                  folders: Mapping[str, Path | str | None] | None = None,
                  kinds: Mapping[str, str] | None = None) -> None:
    """Before any work: refuse an output that would overwrite a file the command reads — an input, the sidecar
    and data file beside it, and whatever it leads to (`implied_reads`: the tokenizer and source-model folders an
    ONNX's sidecar names, a model folder's files) — that is an existing folder or not a regular file, or that
    names the same file as another output. Keys are the flags, for the message; a value may list several files.
    Every output's `.json` sidecar and `.data` file count as written too. `folders` are output folders (analyze,
    reproduce): never a model folder the command reads, whose files (and fingerprint) would change under it.
    `kinds` says what each output is (`onnx`, `plan`, `recipe`, `result`; JSON flags default to `result`, recipe
    flags to `recipe`): an existing file is replaced only by one of its own kind (`_check_replaceable`)."""
    read: dict[Path, str] = {}
    read_dirs: dict[Path, str] = {}
    for flag, p in _each(inputs):
        files, dirs = implied_reads(flag, p)
        for f, why in files.items():
            read.setdefault(f, why)
        for f, why in dirs.items():
            read_dirs.setdefault(f, why)
    for flag, folder in (folders or {}).items():
        if folder is not None and Path(folder).resolve() in read_dirs:
            raise QbertError(f"{flag} {folder} is the model folder of {read_dirs[Path(folder).resolve()]}: writing "
                             "into it would change that model; choose another folder")
    written: dict[Path, str] = {}
    for flag, p in _each(outputs):
        check_output_dir(p, flag)
        for f, why in _family(p).items():
            if f in read:
                raise QbertError(f"{flag} {p}{why} would overwrite {read[f]}; choose another path")
            if f in written and not why:
                raise QbertError(f"{flag} {p} is also {written[f]}; give each output its own path")
            written.setdefault(f, f"{flag} {p}{why}")
        inside = next((d for d in read_dirs if d in Path(p).resolve().parents), None)
        if inside is not None:  # a file added to a model folder changes the folder's fingerprint
            raise QbertError(f"{flag} {p} is inside the model folder of {read_dirs[inside]}: writing into it would "
                             "change that model; choose another folder")
        _check_replaceable(flag, Path(p), (kinds or {}).get(flag) or _kind_of_flag(flag))  # after the input checks


# what an existing file must already be for an output of each kind to replace it
KIND_NAMES = {"onnx": "a qbert ONNX (with its qbert sidecar)", "plan": "a qbert TensorRT plan (with its sidecar)",
              "recipe": "a qbert recipe", "result": "a JSON result (not a qbert artefact or a model's file)"}
MODEL_FILES = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
               "added_tokens.json", "generation_config.json", "modules.json", "sentence_bert_config.json",
               "config_sentence_transformers.json"}


def _kind_of_flag(flag: str) -> str | None:
    name = flag.lstrip("-").replace("-", "_")
    return "recipe" if "recipe" in name else "result" if "json" in name else None


def _check_replaceable(flag: str, p: Path, kind: str | None) -> None:
    """An existing file is replaced only by an output of its own kind — a qbert ONNX by a qbert ONNX, a plan by a
    plan, a recipe by a recipe, a JSON result by a JSON result — so a data file, another model's weights or
    tokenizer, a sidecar or a recipe named by mistake is refused, not silently turned into something else."""
    if kind is None or not p.is_file() or p.stat().st_size == 0:
        return
    found = _existing_kind(p)
    if found != kind:
        what = KIND_NAMES.get(found or "", "not " + KIND_NAMES[kind].split(" (")[0])
        raise QbertError(f"{flag} {p} exists and is {what}; it would be replaced by {KIND_NAMES[kind].split(' (')[0]}:"
                         " choose another path, or delete it first")


def _existing_kind(p: Path) -> str | None:
    """onnx / plan (a file with a qbert sidecar of that format), recipe, result (any other JSON document that is not
    a model folder's file or a qbert artefact), or None."""
    side = sidecar_json(p)
    if side is not None and side.get("format") in ("qbert-onnx", "qbert-plan"):
        return "onnx" if side["format"] == "qbert-onnx" else "plan"
    with open(p, "rb") as f:
        head = f.read(64).lstrip()
    if not head.startswith((b"{", b"[")) or p.name in MODEL_FILES:
        return None
    try:
        data = json.loads(p.read_text()) if p.stat().st_size < 2**26 else None
    except (OSError, ValueError):
        return None
    fmt = data.get("format") if isinstance(data, dict) else None
    if isinstance(fmt, str) and fmt.startswith("qbert-recipe"):
        return "recipe"
    return None if isinstance(fmt, str) and fmt.startswith("qbert") else "result"


def sidecar_kind(p: Path | str) -> str | None:
    """fp32 or qdq for an ONNX with a qbert sidecar, else None (no sidecar, or not one of qbert's)."""
    meta = sidecar_json(p)
    return meta.get("kind") if meta is not None and meta.get("format") == "qbert-onnx" else None


SIDECAR_FOLDERS = {"source_path": "source model", "source_model": "source model", "tokenizer": "tokenizer"}


def implied_reads(flag: str, p: Path | str) -> tuple[dict[Path, str], dict[Path, str]]:
    """(files, model folders) that reading input `p` reads, each with how the message names it: `p`, its sidecar
    and data file; a folder's files; and the files of each local folder an ONNX's qbert sidecar names (the
    tokenizer and the source model, which eval, calibrate, bench and analyze load through it), and the FP32 ONNX
    (with its sidecar) and recipe a Q/DQ ONNX's sidecar names, which re-emission and build hints read. Never
    opens `p` itself (it may be a pipe)."""
    p = Path(p).expanduser()
    files: dict[Path, str] = {}
    dirs: dict[Path, str] = {}
    if p.is_dir():
        dirs[p.resolve()] = f"{flag} {p}"
        files.update({f.resolve(): f"{flag} {p}'s file {f.name}" for f in _files_in(p)})
        return files, dirs
    if not (p.exists() or sidecar_path(p).exists()):
        return files, dirs
    files.update({f: f"{flag} {p}{why}" for f, why in _family(p).items()})
    meta = sidecar_json(p)  # a broken sidecar is the command's own error to report, later
    if meta is not None and meta.get("format") == "qbert-onnx":
        from qbert.encoding import is_tokenizer_file

        for field, name in SIDECAR_FOLDERS.items():
            folder = Path(meta[field]).expanduser() if isinstance(meta.get(field), str) else None
            if folder is not None and folder.is_dir():
                dirs.setdefault(folder.resolve(), f"{flag} {p}'s {name}")
                for f in _files_in(folder):  # named by what the file is, not by which field led to it
                    kind = "tokenizer" if is_tokenizer_file(f.name) else "source model"
                    files.setdefault(f.resolve(), f"{flag} {p}'s {kind} file {f}")
        quant = meta.get("quantization")
        for field, name in (("fp32_onnx", "FP32 ONNX"), ("recipe", "recipe")):
            value = (quant if field == "recipe" and isinstance(quant, dict) else meta).get(field)
            for f in _recorded(value, p):  # a Q/DQ ONNX's source and recipe, which later commands re-read
                for g, why in (_family(f) if field == "fp32_onnx" else {f.resolve(): ""}).items():
                    files.setdefault(g, f"{flag} {p}'s {name} {f}{why}")
    return files, dirs


def _recorded(value: Any, onnx: Path) -> list[Path]:
    """A file a sidecar names, as written (relative to where that command ran) and relative to the ONNX's own
    folder: whichever exists."""
    if not isinstance(value, str) or not value.strip():
        return []
    named = Path(value).expanduser()
    return [f for f in dict.fromkeys((named, onnx.parent / named)) if f.is_file()]


def _files_in(folder: Path) -> list[Path]:
    try:
        return [f for f in folder.iterdir() if f.is_file()]
    except OSError:  # an unreadable folder is reported by whatever loads it
        return []


def _family(p: Path | str) -> dict[Path, str]:
    p = Path(p)
    return {p.resolve(): "", sidecar_path(p).resolve(): " (its sidecar)",
            p.with_name(p.name + ".data").resolve(): " (its external data)"}


def _each(paths: Mapping[str, PathSpec]) -> Iterator[tuple[str, Path | str]]:
    for flag, value in paths.items():
        for p in value if isinstance(value, (list, tuple)) else [value]:
            if p is not None:
                yield flag, p
