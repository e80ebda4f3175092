"""Atomic outputs: every artefact is written to a temp file beside its target and renamed into place.

A Ctrl-C or an error mid-write therefore leaves either the previous file or nothing, never half a file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from qbert.errors import InternalError, QbertError


def ensure_dir(folder: Path | str, what: str = "out", create: bool = True) -> Path:
    """`mkdir -p folder`, with one clear line when a path component is a file or cannot be created. Without
    `create`, only check that it could be: a command checks its outputs before its work but creates their
    folders when it writes, so a refused or failed run leaves no empty folder behind."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            raise QbertError(f"{what}: {p} is a file, not a folder; choose another path")
    if not create and not folder.exists():
        base = next(p for p in folder.absolute().parents if p.exists())
        if not os.access(base, os.W_OK | os.X_OK):
            raise QbertError(f"{what}: cannot create folder {folder} ({base} is not writable); choose another path")
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QbertError(f"{what}: cannot create folder {folder} ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise QbertError(f"{what}: folder {folder} is not writable; choose another path")
    try:  # some folders pass access() and still hold no files (/proc, read-only mounts)
        fd, probe = tempfile.mkstemp(prefix=".qbert-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise QbertError(f"{what}: cannot write files in {folder} ({e.strerror}); choose another path") from None
    return folder


class EmptyPath(QbertError, ValueError):
    """An empty output path; a ValueError too, so that a command-line parser reports it as the flag's bad value."""


def check_output_dir(path: Path | str, what: str = "out") -> None:
    """Fail early (before any expensive work) when an output file cannot be written; its missing parent folders
    are created (as `mkdir -p` would) only when the file is written."""
    if not str(path).strip():
        raise QbertError(f"{what}: the path is empty; give a file name")
    path = Path(path)
    if path.is_dir():
        raise QbertError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not path.is_file():  # renaming onto it would replace the device or pipe itself
        raise QbertError(f"{what} {path} is not a regular file (a device, pipe or socket); give a file path")
    ensure_dir(path.resolve().parent, what, create=False)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class Staged:
    """The outputs of one command, each written to a temp file beside its target and renamed into place only
    when all of them were written: a failure or Ctrl-C leaves every previous file exactly as it was."""

    def __init__(self) -> None:
        self._temps: dict[Path, Path] = {}  # target → temp file
        self._real: dict[Path, Path] = {}  # target → the file it names (itself, or where its link points)
        self._stale: list[Path] = []  # files to delete at commit (a large model's old .data, say)

    def path(self, target: Path | str) -> Path:
        """A fresh temp path in `target`'s folder (created as `mkdir -p` would)."""
        target = Path(target)
        check_output_dir(target)
        real = target.resolve()  # a link is written through: the temp file sits beside the file it names
        ensure_dir(real.parent)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
        except OSError as e:
            raise (write_error(e, target) or e) from None
        os.close(fd)
        self._temps[target] = Path(tmp)
        self._real[target] = real
        return Path(tmp)

    def temp(self, target: Path | str) -> Path | None:
        """The temp file staged for `target`, if any (to hash what is about to be committed)."""
        return self._temps.get(Path(target))

    def remove_at_commit(self, path: Path) -> None:
        self._stale.append(path)

    def commit(self) -> None:
        mode = 0o666 & ~_umask()  # mkstemp makes 0600; give the mode a plain write would
        for target, tmp in self._temps.items():
            os.chmod(tmp, mode)
            os.replace(tmp, self._real.get(target, target))
        for path in self._stale:
            if path.exists() and path not in self._temps:
                path.unlink()
        self._temps.clear()

    def discard(self) -> None:
        for tmp in self._temps.values():
            with contextlib.suppress(OSError):  # best effort: never hide the error that got us here
                tmp.unlink(missing_ok=True)
        self._temps.clear()

    def target_of(self, e: OSError) -> Path | None:
        """The output a write error hit: the one its file names, else (an errno only writes raise, reported
        without a file name, as a full disk is by write()) the one staged last."""
        names = {str(e.filename), str(e.filename2)}
        for target, tmp in reversed(self._temps.items()):
            if str(tmp) in names or str(target) in names:
                return target
        if e.errno in WRITE_ONLY_ERRNOS and self._temps:
            return next(reversed(self._temps))
        return None


WRITE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large", errno.EROFS: "read-only file system",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
WRITE_ONLY_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def write_error(e: OSError, target: Path) -> QbertError | None:
    """The one line for an environment fault while writing `target` (None: not one of those, let it rise)."""
    if e.errno not in WRITE_ERRNOS:
        return None
    fix = ("free some space or write elsewhere" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else
           "choose a folder you can write to")
    return QbertError(f"{WRITE_ERRNOS[e.errno]} writing {target}; {fix}")


@contextlib.contextmanager
def staged() -> Iterator[Staged]:
    """`with staged() as s: write to s.path(a), s.path(b)` — a and b appear together or not at all."""
    stage = Staged()
    try:
        yield stage
        stage.commit()
    except OSError as e:  # the environment's faults (full disk, read-only folder) are reported here, for every writer
        target = stage.target_of(e)
        error = write_error(e, target) if target is not None else None
        if error is None:
            raise
        raise error from None
    finally:
        stage.discard()


@contextlib.contextmanager
def write_errors_as(target: Path | str) -> Iterator[None]:
    """Report an environment fault inside the block as one writing `target`: for scratch files another library
    writes (torch's exporter), whose own error would be a traceback naming a temp file."""
    try:
        yield
    except OSError as e:
        error = write_error(e, Path(target))
        if error is None:
            raise
        raise error from None


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto `path` only if the block succeeds."""
    with staged() as stage:
        yield stage.path(path)


def _in(stage: Staged | None) -> contextlib.AbstractContextManager[Staged]:
    return contextlib.nullcontext(stage) if stage is not None else staged()


def write_json(path: Path | str, data: Any, stage: Staged | None = None) -> None:
    with _in(stage) as s:
        s.path(path).write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_bytes(path: Path | str, data: bytes, stage: Staged | None = None) -> None:
    with _in(stage) as s:
        s.path(path).write_bytes(data)


def external_data_threshold() -> int:
    """Models larger than this are saved with their tensors in one `<name>.data` file (protobuf caps a
    single file at 2 GB). QBERT_EXTERNAL_DATA_BYTES lowers it, so tests can force the large-model path."""
    return int(os.environ.get("QBERT_EXTERNAL_DATA_BYTES", 2**31 - 2**24))


def save_onnx(model: Any, path: Path | str, stage: Staged | None = None) -> None:
    """Save an ONNX model atomically, the external-data file included (both renamed into place)."""
    import onnx

    path = Path(path)
    data_path = path.with_name(path.name + ".data")
    with _in(stage) as s:
        tmp = s.path(path)
        if proto_size(model) > external_data_threshold():
            tmp_data = s.path(data_path)
            onnx.save(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=tmp_data.name, size_threshold=1024)
            _relink_external(tmp, tmp_data.name, data_path.name)
        else:
            onnx.save(model, str(tmp))
            s.remove_at_commit(data_path)  # a stale .data of an earlier, larger model


def staged_sha256_onnx(stage: Staged, path: Path | str) -> str:
    """sha256_onnx of what `stage` is about to commit at `path` (for the sidecar written beside it)."""
    path = Path(path)
    onnx_tmp = stage.temp(path)
    if onnx_tmp is None:
        raise InternalError(f"{path} is not staged")
    return sha256_onnx(onnx_tmp, stage.temp(path.with_name(path.name + ".data")))


def proto_size(model: Any) -> int:
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


def sha256_onnx(path: Path | str, data: Path | str | None = None) -> str:
    """Hash of an ONNX model including its external-data file (`<path>.data` unless given), if it has one."""
    data = Path(data) if data is not None else Path(str(path) + ".data")
    if not data.is_file():
        return sha256_file(path)
    return hashlib.sha256((sha256_file(path) + sha256_file(data)).encode()).hexdigest()


def sidecar_path(onnx_path: Path | str) -> Path:
    """`model.onnx` → `model.onnx.json`: metadata that lets later commands need only the ONNX path."""
    return Path(str(onnx_path) + ".json")


def sidecar_json(path: Path | str) -> dict[str, Any] | None:
    """The JSON object beside `path` (`<path>.json`), or None when there is none, it is unreadable, oversized or
    not an object: for checks that only consult a sidecar (what kind of file this is, what it names). Reading one
    as the artefact's description is `load_meta`'s, with its errors."""
    side = sidecar_path(path)
    try:
        data = json.loads(side.read_text()) if side.is_file() and side.stat().st_size < 2**20 else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def require_file(path: Path | str, what: str) -> Path:
    """`path` as a regular file, or one line saying it is missing or is something else (a folder, a pipe, a
    device): "not found" for a file that exists would send the user looking in the wrong place."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise QbertError(f"{what} {path} is a folder, not a file")
    if path.exists():
        raise QbertError(f"{what} {path} is not a regular file (a pipe, socket or device); give a file")
    raise QbertError(f"{what} {path} not found")


def read_json(path: Path | str, what: str = "JSON file") -> Any:
    path = require_file(path, what)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if isinstance(e, UnicodeDecodeError):  # a binary file (an ONNX, a plan) given where JSON belongs
            raise QbertError(f"{path} is a binary file, not a {what} (JSON); give the {what} itself") from None
        raise QbertError(f"{what} {path} is not valid JSON ({e.__class__.__name__}); regenerate it") from None


def content_checksum(data: dict[str, Any]) -> str:
    """sha256 of a JSON document's content (its `checksum` field aside), as it reads back from disk: lets a reader
    tell a document qbert wrote from one edited since, whose fields may no longer describe what was computed."""
    plain = json.loads(json.dumps({k: v for k, v in data.items() if k != "checksum"}, default=_jsonable))
    return hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _jsonable(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
