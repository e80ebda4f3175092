"""Asymmetric activation grids (calibration/grids.py): the range each site gets, how each target emits it, the
recipe checks, the refusals, and — on the real fixture — that they bring the quantized model closer to FP32."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qbert.artifacts import load_meta
from qbert.calibration.config import CalibrationConfig
from qbert.calibration.emit import emit
from qbert.calibration.grids import grid_of, qparams, with_grids
from qbert.calibration.observe import TensorStats
from qbert.calibration.recipe import Recipe
from qbert.calibration.site_scale import SiteScale
from qbert.errors import ConfigError, QbertError
from tests.helpers.calibration import calibrate
from tests.conftest import EVAL_TSV, FIXTURE, TUNE_TSV, requires_fixture
from tests.test_cli import invoke


def stats(lo: float, hi: float, channels: tuple[np.ndarray, np.ndarray] | None = None) -> TensorStats:
    st = TensorStats(amax=max(-lo, hi), vmin=lo, vmax=hi)
    if channels is not None:
        st.channel_min, st.channel_max = channels
    return st


def test_grid_is_the_reached_part_of_the_clip_range():
    gelu = SiteScale("t", amax=4.0)  # a method clipped at 4; the data reached [-0.17, 9]
    assert grid_of(gelu, stats(-0.17, 9.0)) == [-0.17, 4.0]
    softmax = SiteScale("p", amax=1.0)
    assert grid_of(softmax, stats(0.0, 0.98)) == [0.0, 0.98]
    positive = SiteScale("t", amax=3.0)  # zero stays on the grid even where the data never reached it
    assert grid_of(positive, stats(0.5, 3.0)) == [0.0, 3.0]
    assert grid_of(SiteScale("g", amax=2.0, group_amax=[1.0, 2.0], bounds=[[0, 2], [2, 4]]), stats(-1, 2)) is None


def test_smoothed_grid_reads_each_channel_divided_by_its_factor():
    m = [2.0, 0.5]
    st = stats(-8.0, 1.0, (np.array([-8.0, -0.1]), np.array([1.0, 0.5])))
    # x/m: channel 0 in [-4, 0.5], channel 1 in [-0.2, 1.0]
    assert grid_of(SiteScale("t", amax=4.0, smooth=m), st) == [-4.0, 1.0]


def test_a_constant_tensor_keeps_the_symmetric_grid():
    assert grid_of(SiteScale("t", amax=1e-8), stats(0.0, 1e-9)) is None  # (hi − lo)/255 below the least scale


def test_zero_is_exactly_a_level():
    for grid in ([-0.17, 4.0], [0.0, 1.0], [-3.0, 0.01], [-1e-3, 7.5]):
        scale, zp = qparams(grid)
        assert 0 <= zp <= 255 and abs(scale * (255 - zp) - grid[1]) <= scale * 0.5 + 1e-9
        assert abs(-zp * scale - grid[0]) <= scale * 0.5 + 1e-9


@pytest.fixture(scope="module")
def asym_recipe(tiny_onnx, tiny_tsv):
    model, meta = onnx.load(str(tiny_onnx)), load_meta(tiny_onnx)
    sym = calibrate(tiny_onnx, meta, model, str(tiny_tsv), placement="full", samples=32)
    asym = calibrate(tiny_onnx, meta, model, str(tiny_tsv), placement="full", samples=32, asymmetric=True)
    return model, sym, asym


def _activation_qs(q):
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    return {n.input[0]: (float(inits[n.input[1]]), inits[n.input[2]]) for n in q.graph.node
            if n.op_type == "QuantizeLinear"}


def test_ort_cpu_emits_every_grid_as_uint8_with_its_zero_point(asym_recipe):
    model, sym, asym = asym_recipe
    assert all(s.grid is None for s in sym.sites.values())
    assert all(s.grid is not None for s in asym.sites.values() if s.bounds is None)
    q, summary = emit(model, asym, "ort-cpu")
    assert summary["asymmetric_sites"] == summary["quantized_sites"] > 0
    qs = _activation_qs(q)
    assert all(zp.dtype == np.uint8 for _, zp in qs.values())
    softmax = [v for k, v in qs.items() if "Softmax" in k]
    assert softmax and all(int(zp) == 0 for _, zp in softmax)  # a softmax output is ≥ 0: no level below zero
    assert len({int(zp) for _, zp in qs.values()}) > 2
    sym_q, _ = emit(model, sym, "ort-cpu")
    assert {int(zp) for _, zp in _activation_qs(sym_q).values()} == {128}  # the default is unchanged


def test_openvino_takes_grids_on_fullyconnected_inputs_only(asym_recipe):
    model, _, asym = asym_recipe
    q, summary = emit(model, asym, "openvino")
    qs = _activation_qs(q)
    attention = [v for k, v in qs.items() if "Softmax" in k or "Transpose" in k]
    assert attention and all(zp.dtype == np.int8 and int(zp) == 0 for _, zp in attention)
    linear = [v for v in qs.values() if v[1].dtype == np.uint8]
    assert linear and summary["asymmetric_sites"] == len(linear)


def test_trt_refuses_a_recipe_with_grids(asym_recipe):
    model, _, asym = asym_recipe
    with pytest.raises(QbertError, match="symmetric INT8 only"):
        emit(model, asym, "trt")


def test_quantization_error_on_the_calibration_data_is_smaller(asym_recipe, tiny_onnx, tiny_tsv):
    from qbert.encoding import encode
    from qbert.data import load_dataset_spec
    from qbert.exporter.provenance import tokenizer_of
    from qbert.ort_session import logits_of, sqnr_db

    model, sym, asym = asym_recipe
    meta = load_meta(tiny_onnx)
    rows = encode(load_dataset_spec(str(tiny_tsv), meta.label2id), tokenizer_of(meta, tiny_onnx), meta.max_length)
    fp = logits_of(model, rows, 16, meta.pad_token_id)
    db = {k: sqnr_db(fp, logits_of(emit(model, r, "ort-cpu")[0], rows, 16, meta.pad_token_id))
          for k, r in (("sym", sym), ("asym", asym))}
    assert db["asym"] > db["sym"]


def test_recipe_keeps_and_checks_grids(asym_recipe, tmp_path):
    _, _, asym = asym_recipe
    path = tmp_path / "r.json"
    asym.save(path)
    assert Recipe.load(path).sites == asym.sites
    key = next(k for k, s in asym.sites.items() if s.grid is not None)
    for bad in ([0.1, 1.0], [-1.0, -0.5], [-1.0, asym.sites[key].amax * 2], [0.0, 0.0], "x", [1],
                [0.0, 1e-44], [-1e-45, 0.0], [0.0, 1e-9]):  # too narrow: a zero or subnormal scale in the graph
        data = json.loads(path.read_text())
        data["sites"][key]["grid"] = bad
        data.pop("checksum", None)
        path.write_text(json.dumps(data))
        with pytest.raises(QbertError, match="grid"):
            Recipe.load(path)


def test_with_grids_leaves_sites_without_stats_alone():
    sites = {"a": SiteScale("a", amax=1.0), "b": SiteScale("b", amax=1.0)}
    out = with_grids(sites, {"a": stats(-0.5, 1.0)})
    assert out["a"].grid == [-0.5, 1.0] and out["b"].grid is None and sites["a"].grid is None


def test_refusals(tiny_onnx, tiny_tsv, tmp_path):
    with pytest.raises(ConfigError, match="asymmetric"):
        CalibrationConfig(data="x.tsv", method="auto", target="trt", asymmetric=True).validate()
    with pytest.raises(ConfigError, match="asymmetric"):
        CalibrationConfig(data="x.tsv", asymmetric="yes").validate()
    r = invoke("calibrate", "--onnx", tiny_onnx, "--data", tiny_tsv, "--asymmetric", "--target", "trt",
               "--out", tmp_path / "q.onnx")
    assert r.exit_code != 0 and "symmetric INT8 only" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "q.onnx").exists()
    r = invoke("calibrate", "--onnx", tiny_onnx, "--samples", 16, "--data", tiny_tsv, "--asymmetric",
               "--out", tmp_path / "a.onnx")
    assert r.exit_code == 0, r.output
    assert "on asymmetric grids" in r.output
    r = invoke("calibrate", "--onnx", tiny_onnx, "--recipe", tmp_path / "a.onnx.recipe.json", "--asymmetric",
               "--out", tmp_path / "b.onnx")
    assert r.exit_code != 0 and "asymmetric" in r.output and not (tmp_path / "b.onnx").exists()
    r = invoke("calibrate", "--onnx", tiny_onnx, "--recipe", tmp_path / "a.onnx.recipe.json", "--target", "trt",
               "--out", tmp_path / "c.onnx")
    assert r.exit_code != 0 and "symmetric INT8 only" in r.output and not (tmp_path / "c.onnx").exists()
    assert "--method auto --target trt" in r.output and "without --asymmetric" in r.output  # a fix that works
    r = invoke("build", "--onnx", tmp_path / "a.onnx", "--out", tmp_path / "a.plan")  # not "re-emit for trt"
    assert r.exit_code != 0 and "asymmetric grids" in r.output and "--method auto --target trt" in r.output
    assert "re-emit" not in r.output and not (tmp_path / "a.plan").exists()


@requires_fixture
@pytest.mark.fixture
def test_fixture_flips_fewer_fp32_predictions(tmp_path):
    """The real outlier model: minmax on asymmetric grids changes fewer of FP32's predictions than on symmetric
    ones (on eval.tsv: 2.26 % vs 4.58 % of the rows; here its first 400 rows, after 128 calibration rows)."""
    from qbert.data import load_dataset_spec
    from qbert.encoding import encode
    from qbert.exporter.export import export
    from qbert.exporter.provenance import tokenizer_of
    from qbert.ort_session import logits_of

    path = tmp_path / "fp32.onnx"
    export(str(FIXTURE), path)
    model, meta = onnx.load(str(path)), load_meta(path)
    rows = encode(load_dataset_spec(str(EVAL_TSV), meta.label2id, limit=400), tokenizer_of(meta, path), 128)
    fp = logits_of(model, rows, 32, 0).argmax(-1)
    flips = {}
    for asymmetric in (False, True):
        recipe = calibrate(path, meta, model, str(TUNE_TSV), samples=128, asymmetric=asymmetric)
        flips[asymmetric] = (logits_of(emit(model, recipe, "ort-cpu")[0], rows, 32, 0).argmax(-1) != fp).mean()
    assert flips[True] < flips[False]
