"""Faults of the machine rather than of the flags: a full disk, a read-only or forbidden folder, unreadable or
corrupt model files, a folder, pipe or device where a data file belongs. Each is one line naming the cause,
exit 2, no traceback, and no partial output: the previous output stays as it was, no temp file is left."""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qbert.atomic import sha256_file
from qbert.cli import app
from tests.conftest import signed

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tiny_model, tiny_onnx, tiny_tsv, tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    shutil.copy(tiny_onnx, d / "m.onnx")
    shutil.copy(str(tiny_onnx) + ".json", d / "m.onnx.json")
    return {"d": d, "tsv": str(tiny_tsv), "model": tiny_model}


@pytest.fixture(autouse=True)
def no_hang():
    """Reading a pipe nobody writes to blocks forever: fail the test instead."""
    def alarm(*_):
        raise TimeoutError("blocked (reading a pipe?)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def invoke(argv: str, **fmt) -> tuple[int, list[str], str]:
    r = runner.invoke(app, argv.format(**fmt).split())
    text = r.stdout + r.stderr + (repr(r.exception) if r.exception and not isinstance(r.exception, SystemExit) else "")
    return r.exit_code, [l for l in r.stderr.splitlines() if l.strip()], text


# --- writing: the disk fills, the folder is read-only, the temp file may not be created -------------------------

def disk_full(monkeypatch):
    """Every staged temp file is a link to /dev/full: the kernel's own ENOSPC on the first write that reaches it."""
    real = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        fd, tmp = real(suffix=suffix, prefix=prefix, dir=dir, text=text)
        if suffix != ".tmp":
            return fd, tmp
        os.close(fd)
        os.unlink(tmp)
        os.symlink("/dev/full", tmp)
        return os.open(tmp, os.O_WRONLY), tmp

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def read_only(monkeypatch):
    def replace(src, dst, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", replace)


def forbidden(monkeypatch):
    real = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if suffix == ".tmp":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real(suffix=suffix, prefix=prefix, dir=dir, text=text)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def disk_full_everywhere(monkeypatch):
    """A disk with no room at all: a file another library opens for writing by name (torch's exporter writes its
    scratch ONNX so, not through qbert's staged files) fails too."""
    disk_full(monkeypatch)
    real = builtins.open

    def opener(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", opener)
    monkeypatch.setattr(io, "open", opener)


FAULTS = {"disk full": (disk_full, "no space left on device"),
          "disk full everywhere": (disk_full_everywhere, "no space left on device"), "read-only": (read_only, "read-only file system"),
          "forbidden": (forbidden, "permission denied")}

# (fault, argv; {o} = the output folder, with an old output the command would replace)
WRITE_CASES = [
    ("disk full", "eval --onnx {d}/m.onnx --data {tsv} --json {o}/r.json", "{o}/r.json"),
    ("disk full", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {o}/q.onnx", "{o}/q.onnx"),
    ("disk full", "export --model {model} --out {o}/x.onnx", "{o}/"),  # export's scratch file beside it comes first
    ("disk full everywhere", "export --model {model} --out {o}/x.onnx", "{o}/x.onnx"),
    ("disk full", "bench --onnx {d}/m.onnx --batch 1 --iters 2 --warmup 0 --json {o}/b.json", "{o}/b.json"),
    ("disk full", "analyze --onnx {d}/m.onnx --data {tsv} --samples 16 --heldout 32 --out {o}", "{o}/"),
    ("read-only", "eval --onnx {d}/m.onnx --data {tsv} --json {o}/r.json", "{o}/r.json"),
    ("read-only", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {o}/q.onnx", "{o}/q.onnx"),
    ("forbidden", "eval --onnx {d}/m.onnx --data {tsv} --json {o}/r.json", "{o}/r.json"),
    ("forbidden", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {o}/q.onnx", "{o}/q.onnx"),
]


@pytest.mark.parametrize("fault,argv,target", WRITE_CASES, ids=[f"{c[0]}: {c[1].split()[0]}" for c in WRITE_CASES])
def test_a_failed_write_is_one_line_and_leaves_the_old_output(env, tmp_path, monkeypatch, fault, argv, target):
    out = tmp_path / "out"
    out.mkdir()
    old = {name: f'{{"old": "{name}"}}' if name.endswith(".json") else f"old {name}"  # a JSON output replaces JSON
           for name in ("r.json", "q.onnx", "x.onnx", "b.json", "analysis.json")}
    for onnx_name in ("q.onnx", "x.onnx"):  # an ONNX output replaces only a qbert ONNX: these are, by their sidecar
        old[f"{onnx_name}.json"] = '{"format": "qbert-onnx", "old": true}'
    for name, text in old.items():
        (out / name).write_text(text)
    simulate, needle = FAULTS[fault]
    simulate(monkeypatch)
    code, lines, text = invoke(argv, d=env["d"], tsv=env["tsv"], model=env["model"], o=out)
    monkeypatch.undo()
    assert code == 2, (argv, code, text)
    assert len(lines) == 1 and needle in lines[0] and target.format(o=out) in lines[0], (argv, lines)
    assert "Traceback" not in text
    assert {p.name: p.read_text() for p in out.iterdir()} == old, argv  # no temp file, nothing replaced


# --- reading the model: unreadable or corrupt files of the folder an ONNX's sidecar names, or of --model ----------

def unreadable(path: Path, monkeypatch) -> None:
    """chmod 000; as root (whom chmod does not stop) every Python-level open of the file fails the same way."""
    os.chmod(path, 0)
    if os.geteuid() != 0:
        return
    target = path.resolve()

    def guard(real):
        def opener(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == target:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return real(file, *args, **kwargs)
        return opener

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(io, "open", guard(io.open))


BREAK = {
    "deleted, with the vocabulary": lambda p, mp: [f.unlink() for f in (p, p.parent / "tokenizer.json")],
    "garbage": lambda p, mp: p.write_bytes(bytes(range(256)) * 4),
    "cut to its special tokens": lambda p, mp: ((p.parent / "tokenizer.json").unlink(),  # loads, knows no word
                                                p.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")),
    "invalid JSON": lambda p, mp: p.write_text('{"model_type": "bert", '),
    "JSON of another shape": lambda p, mp: p.write_text('{"a": 1}'),
    "unreadable": unreadable,
    "given three labels": lambda p, mp: p.write_text(json.dumps({**json.loads(p.read_text()), "id2label": {
        "0": "a", "1": "b", "2": "c"}, "label2id": {"a": 0, "b": 1, "c": 2}})),  # the head has two
}

# (how the file is broken, which file, the command: eval reads the folder through the ONNX's sidecar, export
# reads --model; needles in the one line)
MODEL_CASES = [
    ("garbage", "tokenizer.json", "eval", ("tokenizer.json", "not valid JSON")),
    ("JSON of another shape", "tokenizer.json", "eval", ("could not load the tokenizer", "tokenizer.json")),
    ("unreadable", "tokenizer.json", "eval", ("cannot read", "tokenizer.json")),
    ("invalid JSON", "config.json", "export", ("config.json", "not valid JSON")),
    ("garbage", "config.json", "export", ("config.json", "not valid JSON")),
    ("unreadable", "config.json", "export", ("cannot read", "config.json")),
    ("garbage", "model.safetensors", "export", ("model.safetensors", "not valid safetensors")),
    ("unreadable", "model.safetensors", "export", ("cannot read", "model.safetensors")),
    ("garbage", "tokenizer.json", "export", ("tokenizer.json", "not valid JSON")),
    ("deleted, with the vocabulary", "vocab.txt", "export", ("no tokenizer vocabulary", "vocab.txt", "restore")),
    ("cut to its special tokens", "vocab.txt", "export", ("unknown token", "vocab.txt", "restore")),
    ("given three labels", "config.json", "export", ("config.json does not fit the weights", "num_labels=3")),
]


@pytest.mark.parametrize("how,name,command,needles", MODEL_CASES,
                         ids=[f"{c[2]}: {c[1]} {c[0]}" for c in MODEL_CASES])
def test_a_broken_model_file_is_named_in_one_line(env, tmp_path, monkeypatch, how, name, command, needles):
    folder = shutil.copytree(env["model"], tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(env["d"] / "m.onnx", tmp_path / "m.onnx")
    side = json.loads((env["d"] / "m.onnx.json").read_text())
    side.update({k: str(folder) for k in ("tokenizer", "source_model", "source_path") if k in side})
    (tmp_path / "m.onnx.json").write_text(json.dumps(signed(side)))
    BREAK[how](folder / name, monkeypatch)
    argv = {"eval": "eval --onnx {m} --data {tsv} --json {o}/r.json",
            "export": "export --model {folder} --out {o}/x.onnx"}[command]
    code, lines, text = invoke(argv, m=tmp_path / "m.onnx", tsv=env["tsv"], o=out, folder=folder)
    monkeypatch.undo()
    if (folder / name).exists():
        os.chmod(folder / name, 0o644)
    assert code == 2, (how, name, code, text)
    assert len(lines) == 1 and all(n in lines[0] for n in needles), (how, name, lines)
    assert "Traceback" not in text
    assert list(out.iterdir()) == []


# --- --data that is not a regular file ----------------------------------------------------------------------------

def fifo(tmp: Path) -> Path:
    """What `--data <(zcat rows.tsv.gz)` hands over: a pipe, named without a suffix."""
    os.mkfifo(tmp / "rows")
    return tmp / "rows"


def folder(tmp: Path) -> Path:
    (tmp / "rows.d").mkdir()
    (tmp / "rows.d" / "a.tsv").write_text("question\tsentence\tlabel\nq\ts\tentailment\n")
    return tmp / "rows.d"


def unreadable_tsv(tmp: Path) -> Path:
    p = tmp / "locked.tsv"
    p.write_text("question\tsentence\tlabel\nq?\ts.\tentailment\n")
    return p


DATA_CASES = [
    ("eval: a folder", "eval --onnx {d}/m.onnx --data {data} --json {o}/r.json", folder, "is a folder"),
    ("eval: a pipe", "eval --onnx {d}/m.onnx --data {data} --json {o}/r.json", fifo, "not a regular file"),
    ("eval: /dev/null", "eval --onnx {d}/m.onnx --data {data} --json {o}/r.json", lambda t: Path("/dev/null"),
     "not a regular file"),
    ("calibrate: a pipe", "calibrate --onnx {d}/m.onnx --data {data} --samples 16 --out {o}/q.onnx", fifo,
     "not a regular file"),
    ("calibrate: a pipe named .tsv", "calibrate --onnx {d}/m.onnx --data {data} --samples 16 --out {o}/q.onnx",
     lambda t: (os.mkfifo(t / "rows.tsv"), t / "rows.tsv")[1], "not a regular file"),
    ("calibrate: a folder", "calibrate --onnx {d}/m.onnx --data {data} --samples 16 --out {o}/q.onnx", folder,
     "is a folder"),
    ("bench: /dev/null", "bench --onnx {d}/m.onnx --batch 1 --iters 1 --warmup 0 --data {data} --json {o}/b.json",
     lambda t: Path("/dev/null"), "not a regular file"),
    ("eval: an unreadable file", "eval --onnx {d}/m.onnx --data {data} --json {o}/r.json", unreadable_tsv,
     "cannot read"),
]


@pytest.mark.parametrize("case,argv,make,needle", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_that_is_not_a_readable_file(env, tmp_path, monkeypatch, case, argv, make, needle):
    out = tmp_path / "out"
    out.mkdir()
    data = make(tmp_path)
    if data.name == "locked.tsv":
        unreadable(data, monkeypatch)
    code, lines, text = invoke(argv, d=env["d"], data=data, o=out)
    monkeypatch.undo()
    assert code == 2, (case, code, text)
    assert len(lines) == 1 and needle in lines[0] and str(data) in lines[0], (case, lines)
    assert "Traceback" not in text
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("make", [fifo, lambda t: (t / "null").symlink_to("/dev/null") or t / "null"],
                         ids=["a pipe", "a link to /dev/null"])
def test_an_output_that_is_not_a_regular_file_is_refused(env, tmp_path, make):
    target = make(tmp_path)
    code, lines, text = invoke("eval --onnx {d}/m.onnx --data {tsv} --json {t}", d=env["d"], tsv=env["tsv"], t=target)
    assert code == 2 and len(lines) == 1 and "not a regular file" in lines[0], text
    assert not target.is_file() and Path("/dev/null").is_char_device()


# --- a failed command leaves the tree as it found it: no empty output folder ------------------------------------

FOLDER_CASES = [
    ("calibrate: bad data", "calibrate --onnx {d}/m.onnx --data {o}/missing.tsv --samples 16 --out {o}/new/sub/q.onnx"),
    ("eval: bad data", "eval --onnx {d}/m.onnx --data {o}/missing.tsv --json {o}/new/r.json"),
    ("export: no model", "export --model {o}/no-model --out {o}/new/m.onnx"),
    ("bench: bad onnx", "bench --onnx {o}/missing.onnx --batch 1 --iters 1 --json {o}/new/b.json"),
    ("analyze: bad data", "analyze --onnx {d}/m.onnx --data {o}/missing.tsv --out {o}/new/a"),
    ("analyze: no labels", "analyze --onnx {d}/m.onnx --data {unlabelled} --out {o}/new/a"),
    ("reproduce: no model", "reproduce --model {o}/no-model --eval-data {tsv} --calib-data {tsv} --out {o}/new/r"),
]


@pytest.mark.parametrize("case,argv", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_a_failed_command_leaves_no_new_folder(env, tmp_path, case, argv):
    unlabelled = tmp_path / "u.tsv"
    unlabelled.write_text("question\tsentence\n" + "what is it?\tit is a test.\n" * 40)
    before = sorted(tmp_path.rglob("*"))
    code, lines, text = invoke(argv, d=env["d"], o=tmp_path, tsv=env["tsv"], unlabelled=unlabelled)
    assert code == 2 and len(lines) == 1 and "Traceback" not in text, (case, code, text)
    assert sorted(tmp_path.rglob("*")) == before, (case, sorted(set(tmp_path.rglob("*")) - set(before)))


def test_an_output_through_a_link_is_written_where_the_link_points(env, tmp_path):
    """A --json path that is a symlink (to another folder, possibly another filesystem, such as /dev/shm or
    /dev/stdout redirected to a file) writes through to the file it names: no cross-device rename, no link replaced."""
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        (elsewhere / "r.json").write_text("{}")
        (tmp_path / "link.json").symlink_to(elsewhere / "r.json")
        code, lines, text = invoke("eval --onnx {d}/m.onnx --data {tsv} --limit 8 --json {o}/link.json", d=env["d"],
                                   tsv=env["tsv"], o=tmp_path)
        assert code == 0, text
        assert (tmp_path / "link.json").is_symlink() and json.loads((elsewhere / "r.json").read_text())["examples"] == 8
        assert [p.name for p in elsewhere.iterdir()] == ["r.json"]  # no temp file left there
    finally:
        shutil.rmtree(elsewhere)
