"""Atomic outputs: every artefact is written to a temp file beside its target and renamed into place.

A Ctrl-C or an error mid-write therefore leaves either the previous file or nothing, never half a file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from qbert.errors import QbertError


def ensure_dir(folder: Path | str, what: str = "--out") -> Path:
    """`mkdir -p folder`, with one clear line when a path component is a file or cannot be created."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            raise QbertError(f"{what}: {p} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QbertError(f"{what}: cannot create folder {folder} ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise QbertError(f"{what}: folder {folder} is not writable; choose another path")
    return folder


def check_output_dir(path: Path | str, what: str = "--out") -> None:
    """Fail early (before any expensive work) when an output file cannot be written; create missing parent
    folders as `mkdir -p` would."""
    path = Path(path)
    if path.is_dir():
        raise QbertError(f"{what} {path} is a folder; give a file name")
    ensure_dir(path.resolve().parent, what)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    check_output_dir(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain write would
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: Path | str, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def external_data_threshold() -> int:
    """Models larger than this are saved with their tensors in one `<name>.data` file (protobuf caps a
    single file at 2 GB). QBERT_EXTERNAL_DATA_BYTES lowers it, so tests can force the large-model path."""
    return int(os.environ.get("QBERT_EXTERNAL_DATA_BYTES", 2**31 - 2**24))


def save_onnx(model: Any, path: Path | str) -> None:
    """Save an ONNX model atomically, the external-data file included (both renamed into place)."""
    import onnx

    path = Path(path)
    large = _proto_size(model) > external_data_threshold()
    with atomic_path(path) as tmp:
        if large:
            data_name = path.name + ".data"
            with atomic_path(path.with_name(data_name)) as tmp_data:
                onnx.save(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                          location=tmp_data.name, size_threshold=1024)
                _relink_external(tmp, tmp_data.name, data_name)
        else:
            onnx.save(model, str(tmp))
            stale = path.with_name(path.name + ".data")
            if stale.exists():
                stale.unlink()


def _proto_size(model: Any) -> int:
    """Serialized size without serializing (ByteSize fails past 2 GB on some protobuf builds)."""
    try:
        return model.ByteSize()
    except Exception:
        return 2**62


def _relink_external(model_path: Path, old: str, new: str) -> None:
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location" and e.value == old:
                e.value = new
    onnx.save(m, str(model_path))


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_onnx(path: Path | str) -> str:
    """Hash of an ONNX model including its external-data file, if it has one."""
    data = Path(str(path) + ".data")
    if not data.is_file():
        return sha256_file(path)
    return hashlib.sha256((sha256_file(path) + sha256_file(data)).encode()).hexdigest()


def sidecar_path(onnx_path: Path | str) -> Path:
    """`model.onnx` → `model.onnx.json`: metadata that lets later commands need only the ONNX path."""
    return Path(str(onnx_path) + ".json")


def read_json(path: Path | str, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise QbertError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QbertError(f"{what} {path} is not valid JSON ({e.__class__.__name__}); regenerate it") from None


def _jsonable(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
