"""Outputs never land on a file a command reads, however it finds that file: through an ONNX's sidecar (the
tokenizer and source-model folder it names), a model folder's files, a plan and its sidecar, the timing cache
(read and written), or an output folder that is the model folder itself. CLI and library alike."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import qbert
from qbert.atomic import sha256_file
from qbert.cli import app
from tests.conftest import write_tsv

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tiny_model, tiny_tsv, tmp_path_factory):
    """A model folder of its own, an ONNX exported from it (its sidecar names the folder), Q/DQ models for
    ort-cpu and TensorRT, and their recipes."""
    d = tmp_path_factory.mktemp("indirect")
    shutil.copytree(tiny_model, d / "model")
    qbert.export(str(d / "model"), d / "m.onnx")
    for name, target in (("q", "ort-cpu"), ("qt", "trt")):
        r = runner.invoke(app, ["calibrate", "--onnx", str(d / "m.onnx"), "--data", str(tiny_tsv), "--samples", "16",
                                "--target", target, "--out", str(d / f"{name}.onnx")])
        assert r.exit_code == 0, r.output
    write_tsv(d / "small.tsv", 12, seed=3)
    write_tsv(d / "small2.tsv", 12, seed=4)
    return {"d": d, "tsv": str(tiny_tsv)}


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


# (case, argv; {d} = the fixture folder, {m} = its model folder, {o} = an empty output folder, needles in the line)
CASES = [
    ("eval: --json over the tokenizer the sidecar names",
     "eval --onnx {d}/m.onnx --data {tsv} --json {m}/tokenizer.json", ("would overwrite", "tokenizer.json")),
    ("eval: --json over the source model's config",
     "eval --onnx {d}/m.onnx --data {tsv} --json {m}/config.json", ("would overwrite", "config.json")),
    ("eval: --json over the weights behind a Q/DQ ONNX",
     "eval --onnx {d}/q.onnx --data {tsv} --json {m}/model.safetensors", ("would overwrite", "model.safetensors")),
    ("eval: torch --model folder, --json over its config",
     "eval --engine torch --model {m} --data {tsv} --json {m}/config.json", ("would overwrite", "--model")),
    ("calibrate: --out over the source model's weights",
     "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {m}/model.safetensors",
     ("would overwrite", "model.safetensors")),
    ("calibrate: --recipe-out over the tokenizer's vocabulary",
     "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {o}/q.onnx --recipe-out {m}/vocab.txt",
     ("would overwrite", "vocab.txt")),
    ("calibrate: re-emission --out over the tokenizer config",
     "calibrate --onnx {d}/m.onnx --recipe {d}/q.onnx.recipe.json --out {m}/tokenizer_config.json",
     ("would overwrite", "tokenizer_config.json")),
    ("bench: --json over the tokenizer the sidecar names",
     "bench --onnx {d}/m.onnx --batch 1 --iters 1 --warmup 0 --json {m}/tokenizer.json",
     ("would overwrite", "tokenizer.json")),
    ("build: --timing-cache is the input ONNX",
     "build --onnx {d}/qt.onnx --out {o}/e.plan --timing-cache {d}/qt.onnx", ("--timing-cache", "would overwrite")),
    ("build: --timing-cache is the input's sidecar",
     "build --onnx {d}/qt.onnx --out {o}/e.plan --timing-cache {d}/qt.onnx.json", ("--timing-cache", "would overwrite")),
    ("build: --timing-cache is the plan", "build --onnx {d}/qt.onnx --out {o}/e.plan --timing-cache {o}/e.plan",
     ("--timing-cache", "own path")),
    ("build: --timing-cache is the plan's sidecar",
     "build --onnx {d}/qt.onnx --out {o}/e.plan --timing-cache {o}/e.plan.json", ("--timing-cache", "own path")),
    ("analyze: --out is the model folder the sidecar names",
     "analyze --onnx {d}/m.onnx --data {tsv} --samples 16 --heldout 32 --out {m}", ("--out", "model folder")),
    ("analyze: --out is the --model folder",
     "analyze --model {m} --data {tsv} --samples 16 --heldout 32 --out {m}", ("--out", "model folder")),
    ("reproduce: --out is the --model folder",
     "reproduce --model {m} --eval-data {tsv} --calib-data {d}/small.tsv --only FP32 --out {m}",
     ("--out", "model folder")),
]


@pytest.mark.parametrize("case,argv,needles", CASES, ids=[c[0] for c in CASES])
def test_cli_output_on_an_indirect_input(env, tmp_path, case, argv, needles):
    d, out = env["d"], tmp_path / "out"
    out.mkdir()
    before = snapshot(d)
    args = argv.format(d=d, m=d / "model", o=out, tsv=env["tsv"]).split()
    r = runner.invoke(app, args)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2, (case, r.exit_code, r.stderr, r.stdout)
    assert len(lines) == 1 and all(n in lines[0] for n in needles), (case, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    assert snapshot(d) == before, case  # no input touched, nothing written beside them
    assert [p.name for p in out.rglob("*")] == [], case


def _recipe(d: Path) -> qbert.Recipe:
    return qbert.Recipe.load(d / "q.onnx.recipe.json")


# (case, call(d, model folder, output folder), needles): the library checks what the CLI checks
API_CASES = [
    ("evaluate: json_out over the tokenizer",
     lambda d, m, o: qbert.evaluate(d / "m.onnx", d / "small.tsv", json_out=m / "tokenizer.json"), ("tokenizer.json",)),
    ("bench: json_out over the ONNX", lambda d, m, o: qbert.bench(d / "m.onnx", batch=[1], iters=1, warmup=0,
                                                                  json_out=d / "m.onnx"), ("json_out",)),
    ("bench: json_out over the model config", lambda d, m, o: qbert.bench(d / "m.onnx", batch=[1], iters=1, warmup=0,
                                                                          json_out=m / "config.json"), ("config.json",)),
    ("quantize: out over the weights", lambda d, m, o: qbert.quantize(d / "m.onnx", _recipe(d),
                                                                       m / "model.safetensors"), ("model.safetensors",)),
    ("quantize: recipe_out over the input ONNX", lambda d, m, o: qbert.quantize(d / "m.onnx", _recipe(d), o / "q.onnx",
                                                                                recipe_out=d / "m.onnx"), ("m.onnx",)),
    ("export: out over the model's config", lambda d, m, o: qbert.export(str(m), m / "config.json"), ("config.json",)),
    ("build: timing_cache over the input ONNX", lambda d, m, o: qbert.build(d / "qt.onnx", o / "e.plan",
                                                                          timing_cache=d / "qt.onnx"), ("timing_cache",)),
    ("analyze: out_dir is the model folder", lambda d, m, o: qbert.analyze(d / "m.onnx", d / "small.tsv", m,
                                                                           samples=8, heldout=32), ("model folder",)),
    ("reproduce: out is the model folder", lambda d, m, o: qbert.reproduce(str(m), str(d / "small.tsv"),
                                                                           str(d / "small2.tsv"), m), ("model folder",)),
]


@pytest.mark.parametrize("case,call,needles", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_output_on_an_indirect_input(env, tmp_path, case, call, needles):
    d, out = env["d"], tmp_path / "out"
    out.mkdir()
    before = snapshot(d)
    with pytest.raises(qbert.QbertError) as e:
        call(d, d / "model", out)
    assert all(n in str(e.value) for n in needles) and "\n" not in str(e.value), (case, str(e.value))
    assert snapshot(d) == before, case
    assert [p.name for p in out.rglob("*")] == [], case
