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
    shutil.copy(d / "m.onnx", d / "other.onnx")  # an ONNX no input of the commands below names
    for suffix in ("", ".json"):  # an FP32 export (with its sidecar) no command below reads
        shutil.copy(f"{d / 'm.onnx'}{suffix}", f"{d / 'fp32b.onnx'}{suffix}")
    write_tsv(d / "small2.tsv", 12, seed=4)
    (d / "othermodel").mkdir()  # files of a model no command below reads
    (d / "othermodel" / "tokenizer.json").write_text('{"version": "1.0"}')
    (d / "othermodel" / "model.safetensors").write_bytes(b"weights")
    (d / "old.plan").write_bytes(b"plan")  # a plan with its qbert sidecar
    (d / "old.plan.json").write_text('{"format": "qbert-plan"}')
    return {"d": d, "tsv": str(tiny_tsv)}


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


# refused as no timing cache (standard TensorRT) or as a flag TensorRT-RTX has no use for: untouched either way
TIMING = ("--timing-cache", "cache")
# (case, argv; {d} = the fixture folder, {m} = its model folder, {o} = an empty output folder, needles in the line)
CASES = [
    ("eval: --json over the tokenizer the sidecar names",
     "eval --onnx {d}/m.onnx --data {tsv} --json {m}/tokenizer.json", ("would overwrite", "tokenizer.json")),
    ("eval: --json over the source model's config",
     "eval --onnx {d}/m.onnx --data {tsv} --json {m}/config.json", ("would overwrite", "config.json")),
    ("eval: --json over the weights behind a Q/DQ ONNX",
     "eval --onnx {d}/q.onnx --data {tsv} --json {m}/model.safetensors", ("would overwrite", "model.safetensors")),
    ("eval: --json over the weights, named as the source model's file",
     "eval --onnx {d}/m.onnx --data {tsv} --json {m}/model.safetensors", ("source model file", "model.safetensors")),
    ("eval: --json over the FP32 ONNX's sidecar a Q/DQ ONNX names",
     "eval --onnx {d}/q.onnx --data {tsv} --json {d}/m.onnx.json", ("would overwrite", "FP32 ONNX")),
    ("eval: --json over the recipe a Q/DQ ONNX names",
     "eval --onnx {d}/q.onnx --data {tsv} --json {d}/q.onnx.recipe.json", ("would overwrite", "recipe")),
    ("bench: --json over the FP32 ONNX a Q/DQ ONNX names",
     "bench --onnx {d}/q.onnx --batch 1 --iters 1 --warmup 0 --json {d}/m.onnx", ("would overwrite", "FP32 ONNX")),
    ("build: --out whose sidecar is the input's recipe", "build --onnx {d}/qt.onnx --out {d}/qt.onnx.recipe",
     ("would overwrite", "recipe")),
    ("export: --out over the model's config", "export --model {m} --out {m}/config.json",
     ("would overwrite", "file config.json")),
    ("build: --timing-cache is a data file", "build --onnx {d}/qt.onnx --out {o}/e.plan --timing-cache {d}/small.tsv",
     TIMING),
    ("build: --timing-cache is another ONNX", "build --onnx {d}/qt.onnx --out {o}/e.plan --timing-cache {d}/other.onnx",
     TIMING),
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
    # files no input names, but which the output would wrongly replace
    ("bench: --json is a data file of no input", "bench --onnx {d}/q.onnx --batch 1 --iters 1 --warmup 0 "
     "--json {d}/small2.tsv", ("--json", "not a JSON result")),
    ("eval: --json is a data file of no input", "eval --onnx {d}/q.onnx --data {tsv} --json {d}/small2.tsv",
     ("--json", "not a JSON result")),
    ("calibrate: --recipe-out is a data file", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out "
     "{o}/x.onnx --recipe-out {d}/small2.tsv", ("--recipe-out", "not a qbert recipe")),
    # an existing file is replaced only by an output of its own kind, whoever reads it
    ("calibrate: --out is a data file", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out {d}/small2.tsv",
     ("--out", "not a qbert ONNX")),
    ("export: --out is a data file", "export --model {m} --out {d}/small2.tsv", ("--out", "not a qbert ONNX")),
    ("export: --out is another model's weights", "export --model {m} --out {d}/othermodel/model.safetensors",
     ("--out", "not a qbert ONNX")),
    ("build: --out is a Q/DQ ONNX", "build --onnx {d}/qt.onnx --out {d}/q.onnx", ("--out", "is a qbert ONNX")),
    ("export: --out is a plan", "export --model {m} --out {d}/old.plan", ("--out", "is a qbert TensorRT plan")),
    ("eval: --json is the sidecar of an ONNX no input names", "eval --onnx {d}/q.onnx --data {tsv} --json "
     "{d}/fp32b.onnx.json", ("--json", "not a JSON result")),
    ("bench: --json is a recipe no input names", "bench --onnx {d}/q.onnx --batch 1 --iters 1 --warmup 0 --json "
     "{d}/qt.onnx.recipe.json", ("--json", "is a qbert recipe")),
    ("calibrate: --recipe-out is another model's tokenizer", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 "
     "--out {o}/x.onnx --recipe-out {d}/othermodel/tokenizer.json", ("--recipe-out", "not a qbert recipe")),
    ("export: --out is another model's FP32 export", "export --model {d}/othermodel --out {d}/fp32b.onnx",
     ("--out", "holds the FP32 export of")),
    ("eval: --json inside the source model's folder", "eval --onnx {d}/m.onnx --data {tsv} --json {m}/",
     ("--json", "inside the model folder")),
    ("calibrate: --out is another FP32 export", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 16 --out "
     "{d}/fp32b.onnx", ("FP32 export", "another path")),
]


@pytest.mark.parametrize("case,argv,needles", CASES, ids=[c[0] for c in CASES])
def test_cli_output_on_an_indirect_input(env, tmp_path, case, argv, needles):
    if needles == TIMING:  # recognised by what the installed TensorRT writes
        needs_tensorrt()
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


def needs_tensorrt() -> None:
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx")):
        pytest.skip("no TensorRT or TensorRT-RTX installed")


def test_a_timing_cache_tensorrt_wrote_is_read(tmp_path):
    """What the refusal must let through: a new file, an empty one, and a cache TensorRT serialised."""
    needs_tensorrt()
    from qbert.engines.tensorrt import import_trt, read_timing_cache

    trt, name = import_trt()
    config = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_builder_config()
    (tmp_path / "empty.cache").write_bytes(b"")
    (tmp_path / "trt.cache").write_bytes(bytes(config.create_timing_cache(b"").serialize()))
    for f in ("new.cache", "empty.cache", "trt.cache"):
        assert read_timing_cache(config, tmp_path / f, name) is not None, f


def test_a_timing_cache_is_refused_where_it_would_do_nothing(env, tmp_path, monkeypatch):
    """TensorRT-RTX times no tactics (its timing-cache calls are no-ops): the flag is refused, the file untouched.
    A standard-TensorRT plan reused from the cache times nothing either, which the command says."""
    needs_tensorrt()
    from qbert.artifacts import PlanMeta
    from qbert.engines import tensorrt

    argv = ["build", "--onnx", str(env["d"] / "qt.onnx"), "--out", str(tmp_path / "e.plan"), "--sm", "86",
            "--timing-cache", str(tmp_path / "t.cache")]
    if tensorrt.import_trt()[1] == "tensorrt-rtx":
        r = runner.invoke(app, argv)
        assert r.exit_code == 2 and "--timing-cache is a standard-TensorRT setting" in r.stderr, r.stderr
        assert not (tmp_path / "t.cache").exists() and not (tmp_path / "e.plan").exists()
    hit = PlanMeta(onnx_sha256="0", backend="tensorrt", version="10", trt_major=10, sm=86, profile=[[1, 8]],
                   opt_level=3, hw_compat=False, cache_key="k", plan_sha256="0", plan_bytes=1, onnx="qt.onnx",
                   build_seconds=0.0, target="SM86", device=None, cache_hit=True)
    monkeypatch.setattr(tensorrt, "build", lambda *a, **k: hit)
    r = runner.invoke(app, argv)
    assert r.exit_code == 0 and any(l.startswith("warning:") and "no timing cache was written" in l and "--force" in l
                                    for l in r.stderr.splitlines()), r.stderr


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
    ("evaluate: json_out over the recipe a Q/DQ ONNX names",
     lambda d, m, o: qbert.evaluate(d / "q.onnx", d / "small.tsv", json_out=d / "q.onnx.recipe.json"), ("recipe",)),
    ("bench: json_out over the FP32 ONNX's sidecar", lambda d, m, o: qbert.bench(
        d / "q.onnx", batch=[1], iters=1, warmup=0, json_out=d / "m.onnx.json"), ("FP32 ONNX",)),
    ("build: out whose sidecar is the input's recipe", lambda d, m, o: qbert.build(d / "qt.onnx", d / "qt.onnx.recipe"),
     ("recipe",)),
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


def test_a_recipe_out_never_replaces_another_calibrations_recipe(env, tmp_path):
    """--recipe-out may replace this output's own recipe (a re-run), never another calibration's."""
    d = env["d"]
    other = tmp_path / "other.recipe.json"
    shutil.copy(d / "qt.onnx.recipe.json", other)
    before = other.read_bytes()
    argv = ["calibrate", "--onnx", str(d / "m.onnx"), "--data", env["tsv"], "--samples", "16",
            "--out", str(tmp_path / "x.onnx"), "--recipe-out", str(other)]
    r = runner.invoke(app, argv)
    assert r.exit_code == 2 and "--recipe-out" in r.stderr and "another calibration" in r.stderr, r.stderr
    assert other.read_bytes() == before
    own = tmp_path / "own.recipe.json"
    for _ in range(2):  # written, then replaced by the same command run again
        r = runner.invoke(app, [*argv[:-1], str(own)])
        assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("rows,label2id,needle", [
    ([("only one sentence", "entailment")], {"entailment": 0, "not_entailment": 1}, "is a label name"),
    ([("a", "b", "entailment")], None, "label2id"),
    ([("", " ", "entailment")], {"entailment": 0, "not_entailment": 1}, "both texts are empty"),
], ids=["a label read as a sentence", "labels with nothing to map them", "a row with no text"])
def test_in_memory_rows_are_read_one_way_or_refused(rows, label2id, needle):
    with pytest.raises(qbert.QbertError, match=needle):
        qbert.load_data(rows, label2id)
