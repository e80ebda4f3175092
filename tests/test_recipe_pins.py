"""Recipes and emitted graphs of every method, placement and target on the fixture stay what they were
(tests/helpers/recipe_pins.py says how the pins were made and how to renew them when a number is meant to move)."""
import json
import math

import pytest

from tests.conftest import TUNE_TSV, requires_fixture
from tests.helpers.recipe_pins import CASES, PINS, TARGETS, compute

pytestmark = [requires_fixture, pytest.mark.fixture]
RTOL = 1e-4  # ONNX Runtime versions may differ in the last bits of an FP32 activation maximum


def differences(want, got, where="") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing" for k in want if k not in got]
        out += [f"{where}.{k}: unexpected" for k in got if k not in want]
        for k in want:
            if k in got:
                out += differences(want[k], got[k], f"{where}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: {len(want)} entries became {len(got)}"]
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in differences(w, g, f"{where}[{i}]")]
    if isinstance(want, float) or isinstance(got, float):
        if isinstance(want, (int, float)) and isinstance(got, (int, float)) and not isinstance(want, bool) \
                and math.isclose(want, got, rel_tol=RTOL, abs_tol=1e-12):
            return []
        return [f"{where}: {want!r} became {got!r}"]
    return [] if want == got else [f"{where}: {want!r} became {got!r}"]


def test_pins_cover_every_method_and_target():
    from qbert.calibration.methods import METHODS

    pins = json.loads(PINS.read_text())
    assert {kw["method"] for _, kw in CASES} == set(METHODS)
    assert {p for entry in pins.values() for p in entry} == {"recipe", *TARGETS}
    assert set(pins) == {name for name, _ in CASES}


def test_recipes_and_graphs_unchanged(tmp_path):
    from qbert.exporter.export import export
    from tests.conftest import FIXTURE

    onnx_path = tmp_path / "fixture.onnx"
    export(str(FIXTURE), onnx_path)
    got = json.loads(json.dumps(compute(onnx_path, TUNE_TSV)))
    diffs = differences(json.loads(PINS.read_text()), got)
    assert not diffs, f"{len(diffs)} pinned numbers moved, first: " + "; ".join(diffs[:8])
