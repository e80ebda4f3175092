"""`eval --engine torch --onnx m.onnx` runs the model the ONNX was exported from — found where export read it,
refused in one line when it moved or changed — and says that it ran the FP32 source, not the ONNX."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

import qbert
from qbert.cli import app
from tests.conftest import build_tiny_bert, signed, write_tsv

runner = CliRunner()


@pytest.fixture
def exported(tmp_path, monkeypatch) -> dict[str, Path]:
    """A model exported by a relative path (`src`) from `tmp/a`; the tests then run from `tmp/b`."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    build_tiny_bert(a / "src")
    monkeypatch.chdir(a)
    qbert.export("src", a / "m.onnx")
    monkeypatch.chdir(b)
    return {"a": a, "b": b, "src": a / "src", "onnx": a / "m.onnx", "tsv": write_tsv(tmp_path / "e.tsv", 24)}


def retrain(e: dict[str, Path]) -> None:
    other = build_tiny_bert(e["a"] / "other", seed=7)
    shutil.copy(other / "model.safetensors", e["src"] / "model.safetensors")


def relabel(e: dict[str, Path]) -> None:
    cfg = json.loads((e["src"] / "config.json").read_text())
    cfg["label2id"] = {"a": 0, "b": 1, "c": 2}
    cfg["id2label"] = {"0": "a", "1": "b", "2": "c"}
    (e["src"] / "config.json").write_text(json.dumps(cfg))


def old_sidecar(e: dict[str, Path]) -> dict:
    """The sidecar as qbert wrote it before it recorded the source's absolute path and file hashes."""
    side = e["onnx"].with_name("m.onnx.json")
    meta = json.loads(side.read_text())
    for key in ("source_path", "source_files", "checksum"):  # before all three
        meta.pop(key, None)
    side.write_text(json.dumps(meta))
    return meta


def hub_id_shadowed(e: dict[str, Path]) -> None:
    side = e["onnx"].with_name("m.onnx.json")
    meta = {**json.loads(side.read_text()), "source_model": "org-model", "tokenizer": "org-model",
            "source_path": None, "source_files": None,
            "source_fingerprint": hashlib.sha256(b"org-model").hexdigest()}
    side.write_text(json.dumps(signed(meta)))
    build_tiny_bert(e["b"] / "org-model")


def other_labels(e: dict[str, Path]) -> None:  # what a hub id (fingerprinted by its name only) still gets checked
    side = e["onnx"].with_name("m.onnx.json")
    meta = json.loads(side.read_text())
    meta.update(source_path=None, source_files=None, tokenizer=str(e["src"]), source_model=str(e["src"]),
                label2id={"x": 0, "y": 1, "z": 2})
    side.write_text(json.dumps(signed(meta)))


# (case, what happens to the source after export, words the one-line error must hold)
CASES: list[tuple[str, Callable[[dict], object], str]] = [
    ("weights re-trained", retrain, "model.safetensors changed"),
    ("another label count", relabel, "config.json changed; 3 labels now, 2 at export"),
    ("a file added", lambda e: (e["src"] / "pytorch_model.bin").write_bytes(b"x"), "pytorch_model.bin added"),
    ("a file removed", lambda e: (e["src"] / "vocab.txt").unlink(), "vocab.txt removed"),
    ("folder moved", lambda e: e["src"].rename(e["a"] / "moved"), "no longer exists (moved or deleted)"),
    ("folder deleted", lambda e: shutil.rmtree(e["src"]), "no longer exists (moved or deleted)"),
    ("old sidecar, weights re-trained", lambda e: (old_sidecar(e), retrain(e)), "fingerprint differs"),
    ("old sidecar, folder deleted", lambda e: (old_sidecar(e), shutil.rmtree(e["src"])), "no longer exists"),
    ("hub id shadowed by a local folder", hub_id_shadowed, "local path of that name"),
    ("the model's labels differ from the sidecar's", other_labels, "label2id"),
]


@pytest.mark.parametrize("case,edit,needle", CASES, ids=[c[0] for c in CASES])
def test_changed_source_is_refused_in_one_line(exported, case, edit, needle):
    edit(exported)
    with pytest.raises(qbert.QbertError) as err:
        qbert.evaluate(exported["onnx"], exported["tsv"], engine="torch")
    assert needle in str(err.value), (case, str(err.value))
    r = runner.invoke(app, ["eval", "--engine", "torch", "--onnx", str(exported["onnx"]),
                            "--data", str(exported["tsv"])])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], (case, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr and "huggingface" not in r.stderr.lower()


def test_runs_the_recorded_folder_not_the_one_at_the_typed_path(exported):
    build_tiny_bert(exported["b"] / "src", seed=3, layers=1)  # another model where the relative path now points
    res = qbert.evaluate(exported["onnx"], exported["tsv"], engine="torch")
    assert res["engine_info"]["model"] == str(exported["src"].resolve())
    assert res["ran"] == f"fp32 source model of {exported['onnx']}"
    assert res["source_model"] == str(exported["src"].resolve()) and res["quantization"] is None
    fp32 = qbert.evaluate(exported["onnx"], exported["tsv"])  # the same model on ORT: the same predictions
    assert fp32["predictions"] == res["predictions"] and "ran" not in fp32


def test_sidecar_records_what_was_typed_and_where_it_is(exported):
    meta = json.loads(exported["onnx"].with_name("m.onnx.json").read_text())
    assert meta["source_model"] == "src" and meta["source_path"] == str(exported["src"].resolve())
    assert set(meta["source_files"]) >= {"config.json", "model.safetensors", "vocab.txt"}
    from qbert.exporter.export import model_fingerprint

    assert meta["source_fingerprint"] == model_fingerprint(str(exported["src"]))


def test_old_sidecar_finds_its_folder_from_another_directory(exported):
    old_sidecar(exported)
    res = qbert.evaluate(exported["onnx"], exported["tsv"], engine="torch")
    assert res["source_model"] == str(exported["src"].resolve())


def test_int8_onnx_says_its_fp32_source_ran(exported):
    q = exported["a"] / "q.onnx"
    recipe = qbert.calibrate(exported["onnx"], qbert.CalibrationConfig(data=str(exported["tsv"]), samples=16))
    qbert.quantize(exported["onnx"], recipe, q)
    r = runner.invoke(app, ["eval", "--engine", "torch", "--onnx", str(q), "--data", str(exported["tsv"]),
                            "--json", str(exported["b"] / "r.json")])
    assert r.exit_code == 0, r.stderr
    res = json.loads((exported["b"] / "r.json").read_text())
    assert res["ran"] == f"fp32 source model of {q} (INT8 ONNX: its quantization did not run)"
    assert res["quantization"] is None
    assert "fp32 source model of" in " ".join(r.stdout.split())


# Commands that read the tokenizer through the sidecar's recorded folder (not the torch engine's source check)
TOKENIZER_READERS = [
    ("eval", lambda e: ["eval", "--onnx", str(e["onnx"]), "--data", str(e["tsv"])]),
    ("calibrate", lambda e: ["calibrate", "--onnx", str(e["onnx"]), "--data", str(e["tsv"]), "--samples", "8",
                             "--out", str(e["b"] / "q.onnx")]),
    ("bench --data", lambda e: ["bench", "--onnx", str(e["onnx"]), "--data", str(e["tsv"]), "--batch", "1",
                                "--iters", "1", "--warmup", "0"]),
    ("analyze", lambda e: ["analyze", "--onnx", str(e["onnx"]), "--data", str(e["tsv"]), "--samples", "8",
                           "--heldout", "32", "--out", str(e["b"] / "an")]),
]


@pytest.mark.parametrize("command,argv", TOKENIZER_READERS, ids=[c[0] for c in TOKENIZER_READERS])
def test_a_moved_source_folder_is_named_by_every_command_that_reads_its_tokenizer(exported, command, argv):
    exported["src"].rename(exported["a"] / "moved")
    r = runner.invoke(app, argv(exported))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "moved or deleted" in lines[0], (command, r.stderr)
    assert not (exported["b"] / "q.onnx").exists()


def uncased(e: dict[str, Path]) -> None:
    """The folder re-saved with a cased tokenizer: the same vocabulary, no lowercasing."""
    for name, key in (("tokenizer.json", None), ("tokenizer_config.json", "do_lower_case")):
        cfg = json.loads((e["src"] / name).read_text())
        if key is None:
            cfg["normalizer"]["lowercase"] = False
        else:
            cfg[key] = False
        (e["src"] / name).write_text(json.dumps(cfg))


# (case, the tokenizer change after export, the file the one line must name)
TOKENIZER_CHANGES = [
    ("lowercasing turned off", uncased, "tokenizer.json, tokenizer_config.json changed"),
    ("a vocabulary word replaced", lambda e: (e["src"] / "vocab.txt").write_text(
        (e["src"] / "vocab.txt").read_text().replace("\ncity\n", "\ntown\n")), "vocab.txt changed"),
]


@pytest.mark.parametrize("command,argv", TOKENIZER_READERS, ids=[c[0] for c in TOKENIZER_READERS])
@pytest.mark.parametrize("case,edit,needle", TOKENIZER_CHANGES, ids=[c[0] for c in TOKENIZER_CHANGES])
def test_a_tokenizer_changed_since_export_is_refused_by_every_command_that_reads_it(exported, command, argv, case,
                                                                                     edit, needle):
    edit(exported)
    r = runner.invoke(app, argv(exported))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (command, case, r.stderr)
    assert needle in lines[0] and "qbert export --model" in lines[0], (command, case, lines[0])
    assert not (exported["b"] / "q.onnx").exists() and not list((exported["b"]).rglob("*.json"))


def test_a_backup_beside_the_tokenizer_is_not_a_tokenizer_change(exported):
    """Nothing reads tokenizer.json.bak: a copy left beside the files must not block every command."""
    (exported["src"] / "tokenizer.json.bak").write_bytes((exported["src"] / "tokenizer.json").read_bytes())
    r = runner.invoke(app, ["eval", "--onnx", str(exported["onnx"]), "--data", str(exported["tsv"])])
    assert r.exit_code == 0, r.stderr


def long_rows(path: Path) -> Path:
    """Rows longer than the tiny model's 64 positions."""
    from tests.conftest import WORDS

    text = " ".join(WORDS[i % len(WORDS)] for i in range(90))
    path.write_text("question\tsentence\tlabel\n" + "".join(f"what {i}?\t{text}.\tentailment\n" for i in range(4)))
    return path


# (case, argv; {src} the model folder, {onnx} its ONNX, {tsv}/{long} rows; exit code, a needle of the output)
TORCH_CASES = [
    ("--model rows longer than its positions", "eval --engine torch --model {src} --data {long}", 0, "accuracy"),
    ("--onnx rows longer than its positions", "eval --engine torch --onnx {onnx} --data {long}", 0, "accuracy"),
    ("--onnx and --model both given", "eval --engine torch --onnx {onnx} --model {src} --data {tsv}", 2, "not both"),
]


@pytest.mark.parametrize("case,argv,code,needle", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_torch_engine_runs_or_refuses_in_one_line(exported, case, argv, code, needle):
    args = argv.format(src=exported["src"], onnx=exported["onnx"], tsv=exported["tsv"],
                       long=long_rows(exported["b"] / "long.tsv")).split()
    r = runner.invoke(app, args)
    assert r.exit_code == code, (case, r.stdout, r.stderr, r.exception)
    assert needle in (r.stdout if code == 0 else r.stderr), (case, r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    if code:
        assert len([l for l in r.stderr.splitlines() if l.strip()]) == 1, r.stderr


def test_library_torch_evaluation_cuts_rows_to_the_models_positions(exported):
    res = qbert.evaluate(exported["src"], long_rows(exported["b"] / "long.tsv"), engine="torch")
    assert res["examples"] == 4 and res["max_length"] == 64


def test_a_torch_run_error_is_one_line(exported):
    import numpy as np

    feeds = {k: np.ones((1, 100), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with qbert.open_engine("torch", exported["src"]) as eng, pytest.raises(qbert.QbertError) as err:
        eng.run(feeds)
    assert "1x100" in str(err.value) and "\n" not in str(err.value), str(err.value)
