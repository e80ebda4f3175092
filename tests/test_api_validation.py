"""Every public library function checks its arguments like the CLI checks its flags: a wrong type, an
out-of-range number or an unknown name is a ConfigError naming the argument — never a TypeError, IndexError or
KeyError from deep inside, and never a silent default (bench's seq=0 timed 128 tokens)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qbert
from qbert.errors import ConfigError, QbertError


@pytest.fixture(scope="module")
def recipe(tiny_onnx, tiny_tsv) -> qbert.Recipe:
    return qbert.calibrate(tiny_onnx, qbert.CalibrationConfig(data=str(tiny_tsv), samples=16))


def base_kwargs(name: str, paths: dict[str, Any]) -> dict[str, Any]:
    """Valid arguments for each function (the table overrides one at a time)."""
    onnx, tsv, out = str(paths["onnx"]), str(paths["tsv"]), paths["out"]
    return {
        "export": dict(model_spec=str(paths["model"]), out=out / "x.onnx"),
        "calibrate": dict(onnx=onnx, config=qbert.CalibrationConfig(data=tsv, samples=16)),
        "quantize": dict(fp32_onnx=onnx, recipe=paths["recipe"], out=out / "q.onnx"),
        "evaluate": dict(model=onnx, data=tsv),
        "bench": dict(path=onnx, iters=2, warmup=0),
        "analyze": dict(onnx=onnx, data=tsv, out_dir=out / "an"),
        "build": dict(onnx=onnx, out=out / "e.plan"),
        "reproduce": dict(model=str(paths["model"]), eval_data=tsv, calib_data=str(paths["calib"]), out=out / "r"),
        "open_engine": dict(kind="ort-cpu", path=onnx),
        "load_data": dict(source=tsv),
    }[name]


def config(**kw: Any) -> qbert.CalibrationConfig:
    return qbert.CalibrationConfig(**{"data": "x.tsv", **kw})


# (function, the overriding arguments, the argument the ConfigError must name)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("export", {"model_spec": 123}, "model_spec"),
    ("export", {"out": None}, "out"),
    ("export", {"opset": "17"}, "opset"),
    ("export", {"opset": 13}, "opset"),
    ("export", {"opset": True}, "opset"),
    ("export", {"tolerance": -1.0}, "tolerance"),
    ("export", {"tolerance": "small"}, "tolerance"),
    ("export", {"max_length": 1}, "max_length"),
    ("export", {"max_length": 64.0}, "max_length"),
    ("export", {"opset": None}, "opset"),
    ("export", {"tolerance": None}, "tolerance"),
    ("calibrate", {"config": {"data": "x.tsv"}}, "config"),
    ("calibrate", {"onnx": 5}, "onnx"),
    ("calibrate", {"config": config(placement=["gemm"])}, "placement"),
    ("calibrate", {"config": config(percentile="99")}, "percentile"),
    ("calibrate", {"config": config(budget="1", auto_fp16=True)}, "budget"),
    ("calibrate", {"config": config(fallback=None)}, "fallback"),
    ("calibrate", {"config": config(permute="yes", method="peg")}, "permute"),
    ("calibrate", {"config": config(include_padding=1)}, "include_padding"),
    ("calibrate", {"config": config(auto_fp16="yes")}, "auto_fp16"),
    ("calibrate", {"config": config(seed=-1)}, "seed"),
    ("calibrate", {"config": config(label2id=["a", "b"])}, "label2id"),
    ("calibrate", {"config": config(groups=True, method="peg")}, "groups"),
    ("calibrate", {"config": config(samples=None)}, "samples"),
    ("calibrate", {"config": config(seed=None)}, "seed"),
    ("calibrate", {"config": config(percentile=None)}, "percentile"),
    ("quantize", {"recipe": "r.json"}, "recipe"),
    ("quantize", {"target": "gpu"}, "target"),
    ("quantize", {"high_precision": "int4"}, "high_precision"),
    ("quantize", {"out": 3}, "out"),
    ("quantize", {"recipe_out": 3}, "recipe_out"),
    ("quantize", {"write_recipe": "yes"}, "write_recipe"),
    ("quantize", {"write_recipe": False, "recipe_out": "r.json"}, "recipe_out"),
    ("quantize", {"high_precision": "fp16"}, "high_precision"),  # ort-cpu: most GEMMs would fall to float kernels
    ("quantize", {"target": "openvino", "high_precision": "fp16"}, "high_precision"),
    ("evaluate", {"engine": "onnx"}, "engine"),
    ("evaluate", {"model": None}, "model"),
    ("evaluate", {"data": None}, "data"),
    ("evaluate", {"data": 42}, "data"),
    ("evaluate", {"plan": 5, "engine": "tensorrt"}, "plan"),
    ("evaluate", {"batch_size": "32"}, "batch_size"),
    ("evaluate", {"batch_size": None}, "batch_size"),
    ("evaluate", {"plan": "x.plan"}, "plan"),
    ("evaluate", {"plan": "x.plan", "engine": "torch"}, "plan"),
    ("evaluate", {"limit": 0}, "limit"),
    ("evaluate", {"threads": True}, "threads"),
    ("evaluate", {"exact": "no"}, "exact"),
    ("evaluate", {"labels": 5}, "labels"),
    ("evaluate", {"json_out": 5}, "json_out"),
    ("bench", {"batch": 1}, "batch"),
    ("bench", {"batch": [0]}, "batch"),
    ("bench", {"batch": []}, "batch"),
    ("bench", {"batch": ["1"]}, "batch"),
    ("bench", {"batch": [1, 1]}, "batch"),
    ("bench", {"batch": [100000]}, "batch"),
    ("bench", {"iters": 0}, "iters"),
    ("bench", {"seq": 0}, "seq"),
    ("bench", {"warmup": -1}, "warmup"),
    ("bench", {"warmup": None}, "warmup"),
    ("bench", {"iters": None}, "iters"),
    ("bench", {"threads": 0}, "threads"),
    ("bench", {"engine": "gpu"}, "engine"),
    ("bench", {"exact": "y"}, "exact"),
    ("bench", {"cuda_graph": 1}, "cuda_graph"),
    ("bench", {"profile": "y"}, "profile"),
    ("bench", {"data": 5}, "data"),
    ("bench", {"json_out": 5}, "json_out"),
    ("bench", {"path": None}, "path"),
    ("analyze", {"samples": 0}, "samples"),
    ("analyze", {"heldout": 10}, "heldout"),
    ("analyze", {"samples": None}, "samples"),
    ("analyze", {"include_padding": "yes"}, "include_padding"),
    ("analyze", {"labels": 3}, "labels"),
    ("analyze", {"out_dir": None}, "out_dir"),
    ("analyze", {"onnx": None}, "onnx"),
    ("analyze", {"data": None}, "data"),
    ("build", {"backend": "trt"}, "backend"),
    ("build", {"sm": "sm86"}, "sm"),
    ("build", {"sm": True}, "sm"),
    ("build", {"opt_level": 9}, "opt_level"),
    ("build", {"opt_level": "3"}, "opt_level"),
    ("build", {"opt_level": None}, "opt_level"),
    ("build", {"shapes": 5}, "shapes"),
    ("build", {"shapes": "8x128"}, "shapes"),
    ("build", {"timing_cache": 5}, "timing_cache"),
    ("build", {"force": "y"}, "force"),
    ("build", {"hw_compat": "y"}, "hw_compat"),
    ("build", {"onnx": None}, "onnx"),
    ("build", {"out": None}, "out"),
    ("reproduce", {"engine": "torch"}, "engine"),
    ("reproduce", {"samples": 0}, "samples"),
    ("reproduce", {"bench_iters": 0}, "bench_iters"),
    ("reproduce", {"analysis_samples": "128"}, "analysis_samples"),
    ("reproduce", {"seeds": 0}, "seeds"),
    ("reproduce", {"seeds": None}, "seeds"),
    ("reproduce", {"only": "peg"}, "only"),
    ("reproduce", {"only": [1]}, "only"),
    ("reproduce", {"labels": 5}, "labels"),
    ("reproduce", {"exact": "y"}, "exact"),
    ("reproduce", {"model": None}, "model"),
    ("reproduce", {"eval_data": None}, "eval_data"),
    ("reproduce", {"calib_data": 3}, "calib_data"),
    ("reproduce", {"out": None}, "out"),
    ("open_engine", {"kind": "gpu"}, "kind"),
    ("open_engine", {"path": None}, "path"),
    ("open_engine", {"threads": 0}, "threads"),
    ("open_engine", {"exact": "y"}, "exact"),
    ("load_data", {"source": None}, "source"),
    ("load_data", {"source": 5}, "source"),
    ("load_data", {"limit": 0}, "limit"),
    ("load_data", {"label2id": "ab"}, "label2id"),
    ("load_data", {"label2id": {"a": "0"}}, "label2id"),
]


@pytest.fixture
def paths(tiny_model, tiny_onnx, tiny_tsv, recipe, tmp_path) -> dict[str, Any]:
    from tests.conftest import write_tsv

    (tmp_path / "out").mkdir()
    return {"model": tiny_model, "onnx": tiny_onnx, "tsv": tiny_tsv, "recipe": recipe, "out": tmp_path / "out",
            "calib": write_tsv(tmp_path / "calib.tsv", 32, seed=5)}


@pytest.mark.parametrize("fn,override,field", CASES, ids=[f"{c[0]}-{c[2]}-{c[1][c[2]]!r}"[:60] if c[2] in c[1]
                                                          else f"{c[0]}-{c[2]}" for c in CASES])
def test_bad_argument_is_a_config_error_naming_it(paths, fn, override, field):
    kwargs = {**base_kwargs(fn, paths), **override}
    with pytest.raises(ConfigError) as e:
        getattr(qbert, fn)(**kwargs)
    assert e.value.field == field, (fn, override, str(e.value))
    assert str(e.value).startswith(f"{field}=") and "\n" not in str(e.value)
    assert list(paths["out"].iterdir()) == []  # refused before anything was written


# An engine's census runs the model at batch × seq: (engine, the overriding arguments, the argument named)
CENSUS_CASES = [(engine, override, field) for engine in ("ort-cpu", "openvino") for override, field in (
    ({"batch": 0}, "batch"), ({"batch": None}, "batch"), ({"batch": "1"}, "batch"), ({"seq": "8"}, "seq"),
    ({"seq": 0}, "seq"), ({"seq": 100_000}, "seq"))]  # the tiny model has 64 positions; bench refuses 100,000


@pytest.mark.parametrize("engine,override,field", CENSUS_CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[1][c[2]]!r}" for c in CENSUS_CASES])
def test_bad_census_shape_is_a_config_error_naming_it(tiny_onnx, engine, override, field):
    if engine == "openvino":
        pytest.importorskip("openvino")
    with qbert.open_engine(engine, tiny_onnx) as eng, pytest.raises(ConfigError) as e:
        eng.census(**{"batch": 1, "seq": 8, **override})
    assert e.value.field == field and "\n" not in str(e.value), (engine, override, str(e.value))


RUN_CASES = [(engine, feeds) for engine in ("ort-cpu", "openvino", "torch") for feeds in (
    None, [[1, 2, 3]], {"input_ids": [[1, 2]]}, {"input_ids": np.ones(4, dtype=np.int64)},
    {"input_ids": np.ones((1, 4), dtype=np.int64), "attention_mask": np.ones((1, 3), dtype=np.int64)})]


@pytest.mark.parametrize("engine,feeds", RUN_CASES, ids=[f"{c[0]}-{i % 5}" for i, c in enumerate(RUN_CASES)])
def test_an_engine_run_with_bad_feeds_is_a_config_error(tiny_model, tiny_onnx, engine, feeds):
    if engine == "openvino":
        pytest.importorskip("openvino")
    with qbert.open_engine(engine, tiny_model if engine == "torch" else tiny_onnx) as eng, \
            pytest.raises(ConfigError) as e:
        eng.run(feeds)
    assert e.value.field == "feeds" and "\n" not in str(e.value)


def test_census_defaults_to_the_models_length(tiny_onnx):
    with qbert.open_engine("ort-cpu", tiny_onnx) as eng:
        assert eng.census()["gemm_macs"]["shape"] == [1, 64]  # 128, cut to the tiny model's 64 positions


def test_every_public_function_is_in_the_table():
    assert {c[0] for c in CASES} == {n for n in qbert.__all__ if n[0].islower() and n != "__version__"}


@pytest.mark.parametrize("fn,override", [
    ("calibrate", {"onnx": "missing.onnx"}),
    ("quantize", {"fp32_onnx": "missing.onnx"}),
    ("evaluate", {"model": "missing.onnx"}),
    ("bench", {"path": "missing.onnx"}),
    ("analyze", {"onnx": "missing.onnx"}),
    ("build", {"onnx": "missing.onnx"}),
    ("open_engine", {"path": "missing.onnx"}),
    ("load_data", {"source": "missing.tsv"}),
    ("evaluate", {"data": "missing.tsv"}),
    ("reproduce", {"eval_data": "missing.tsv"}),
])
def test_missing_path_is_a_qbert_error_naming_it(paths, fn, override, monkeypatch):
    monkeypatch.chdir(paths["out"].parent)
    with pytest.raises(QbertError) as e:
        getattr(qbert, fn)(**{**base_kwargs(fn, paths), **override})
    assert "missing." in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_bench_runs_with_explicit_options(paths):
    res = qbert.bench(paths["onnx"], batch=[2], seq=16, warmup=0, iters=2, threads=1, data=str(paths["tsv"]))
    assert [r["batch"] for r in res["shapes"]] == [2] and res["seq"] == 16 and res["inputs"] == "data"


@pytest.mark.parametrize("args,kwargs,field", [
    ((), {"data": "x.tsv", "bogus": 1}, "bogus"),
    ((), {"data": "x.tsv", "heldouts": 256}, "heldouts"),
    ((), {"method": "peg"}, "data"),
    (("x.tsv",) + (None,) * 30, {}, "asymmetric"),  # the last field
], ids=["unknown field", "misspelt field", "no data", "too many values"])
def test_a_config_built_with_a_wrong_field_is_a_config_error(args, kwargs, field):
    with pytest.raises(ConfigError) as e:
        qbert.CalibrationConfig(*args, **kwargs)
    assert e.value.field == field and "CalibrationConfig" in str(e.value)


@pytest.mark.parametrize("override,field", [
    ({"groups": 8}, "groups"), ({"percentile": 50.0}, "percentile"),
    ({"alpha": 0.3}, "alpha"), ({"budget": 0.1}, "budget"), ({"heldout": 50}, "heldout"),
    ({"label2id": {"a": 0, "b": 1}}, "label2id"), ({"target": "trt"}, "target"),
    ({"method": "auto", "placement": "full"}, "placement"),
], ids=lambda v: str(v))
def test_a_config_field_the_method_would_not_read_is_refused(override, field):
    """As the CLI refuses the flag: a silently ignored setting reads like one that took effect."""
    with pytest.raises(ConfigError) as e:
        qbert.CalibrationConfig(**{"data": "x.tsv", "method": "minmax", **override}).validate()
    assert e.value.field == field
