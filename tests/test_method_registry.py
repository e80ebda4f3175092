"""The method registry: every built-in method answers through it, and a new method is one class plus one registry
entry — calibrate, recipe checks, re-emission and the command line take it without other changes (the walk-through
in docs/architecture.md)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

import qbert
from qbert.calibration.methods import AUTO, METHODS, REGISTRY, PerTensor, Settings, method, readers
from qbert.calibration.placement import PLACEMENTS
from qbert.cli import app
from qbert.errors import ConfigError

runner = CliRunner()


class HalfRange(PerTensor):
    """A deliberately crude method: half of each tensor's observed range."""
    name = "halfrange"

    def clip(self, stats, settings):
        return stats.amax / 2


@pytest.fixture
def halfrange(monkeypatch):
    monkeypatch.setitem(REGISTRY, HalfRange.name, HalfRange())


def test_every_method_is_registered_and_declares_itself():
    assert METHODS == ("minmax", "percentile", "mse", "entropy", "peg", "smoothquant")
    for name in METHODS:
        m = method(name)
        assert m.name == name and set(m.placements) <= set(PLACEMENTS)
        assert m.weight_rows(Settings()) in (None, "all", "unshared")
    assert [m for m in METHODS if method(m).histograms] == ["percentile", "mse", "entropy"]
    assert [r for r, _ in readers("alpha")] == ["smoothquant", "peg"]  # unconditional reader first
    assert dict(readers("alpha"))["peg"] == {"groups": "auto"}
    with pytest.raises(ConfigError, match=f"choose one of {', '.join(METHODS)}, {AUTO}"):
        method("minmix")


def test_a_method_reads_only_its_settings():
    assert method("peg").reads_field("alpha", Settings(groups="auto"))
    assert not method("peg").reads_field("alpha", Settings(groups=4))
    assert not method("minmax").reads_field("percentile", Settings())
    with pytest.raises(ConfigError, match="gemm placement only"):
        method("smoothquant").validate(Settings(placement="full"))
    with pytest.raises(ConfigError, match=r"percentile=0"):
        method("percentile").validate(Settings(percentile=0))


def test_a_registered_method_runs_through_the_whole_flow(halfrange, tiny_onnx, tiny_tsv, tmp_path):
    base = qbert.calibrate(tiny_onnx, qbert.CalibrationConfig(data=str(tiny_tsv), samples=16))
    half = qbert.calibrate(tiny_onnx, qbert.CalibrationConfig(data=str(tiny_tsv), samples=16, method="halfrange"))
    assert half.method == "halfrange" and set(half.sites) == set(base.sites)
    for key, site in half.sites.items():
        assert site.amax == pytest.approx(base.sites[key].amax / 2)
    qbert.quantize(tiny_onnx, half, tmp_path / "half.onnx")
    again = qbert.Recipe.load(tmp_path / "half.onnx.recipe.json")  # its own checks: no groups, alpha, percentile
    assert again.sites.keys() == half.sites.keys()
    r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "16",
                            "--method", "halfrange", "--out", str(tmp_path / "cli.onnx")])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--data", str(tiny_tsv), "--samples", "16",
                            "--method", "halfrange", "--percentile", "99", "--out", str(tmp_path / "p.onnx")])
    assert r.exit_code == 2 and "--percentile applies to --method percentile, not halfrange" in r.stderr


def test_an_unregistered_method_is_refused_everywhere(tiny_onnx, tiny_tsv):
    with pytest.raises(ConfigError, match="halfrange"):
        qbert.CalibrationConfig(data=str(tiny_tsv), method="halfrange").validate()
