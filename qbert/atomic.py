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
from typing import Any, Iterator, Mapping, Sequence

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


PathSpec = Path | str | Sequence[Path | str] | None  # one path, several (an output folder's files), or none


def check_outputs(outputs: Mapping[str, PathSpec], inputs: Mapping[str, PathSpec],
                  folders: Mapping[str, Path | str | None] | None = None) -> None:
    """Before any work: refuse an output that would overwrite a file the command reads — an input, the sidecar
    and data file beside it, and whatever it leads to (`implied_reads`: the tokenizer and source-model folders an
    ONNX's sidecar names, a model folder's files) — that is an existing folder or not a regular file, or that
    names the same file as another output. Keys are the flags, for the message; a value may list several files.
    Every output's `.json` sidecar and `.data` file count as written too. `folders` are output folders (analyze,
    reproduce): never a model folder the command reads, whose files (and fingerprint) would change under it."""
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
        _check_replaceable(flag, Path(p))  # after the input checks, whose message says more


JSON_OUTPUTS = ("json", "recipe")  # flags whose file is a JSON document


def _check_replaceable(flag: str, p: Path) -> None:
    """An existing file a JSON output would replace must be a JSON document: a data file named by mistake (`rows.tsv`
    as the JSON output) is refused, not turned into JSON."""
    if not p.is_file() or p.stat().st_size == 0:
        return
    if any(k in flag for k in JSON_OUTPUTS):
        with open(p, "rb") as f:
            head = f.read(64).lstrip()
        if not head.startswith((b"{", b"[")):
            raise QbertError(f"{flag} {p} exists and is not a JSON document (it would be replaced); choose another "
                             "path")


def sidecar_kind(p: Path | str) -> str | None:
    """fp32 or qdq for an ONNX with a qbert sidecar, else None (no sidecar, or not one of qbert's)."""
    try:
        meta = json.loads(sidecar_path(p).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) and meta.get("format") == "qbert-onnx" else None


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
    side = sidecar_path(p)
    try:
        meta = json.loads(side.read_text()) if side.is_file() and side.stat().st_size < 2**20 else None
    except (OSError, ValueError):  # a broken sidecar is the command's own error to report, later
        meta = None
    if isinstance(meta, dict) and meta.get("format") == "qbert-onnx":
        from qbert.data import is_tokenizer_file

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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class Staged:
    """The outputs of one command, each written to a temp file beside its target and renamed into place only
    when all of them were written: a failure or Ctrl-C leaves every previous file exactly as it was."""

    def __init__(self) -> None:
        self._temps: dict[Path, Path] = {}  # target → temp file
        self._stale: list[Path] = []  # files to delete at commit (a large model's old .data, say)

    def path(self, target: Path | str) -> Path:
        """A fresh temp path in `target`'s folder (created as `mkdir -p` would)."""
        target = Path(target)
        check_output_dir(target)
        ensure_dir(target.resolve().parent)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.resolve().parent)
        except OSError as e:
            raise (write_error(e, target) or e) from None
        os.close(fd)
        self._temps[target] = Path(tmp)
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
            os.replace(tmp, target)
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
