"""Recipes are checked field against field, not only for shape: a hand-edited or truncated recipe is refused on
load with one line naming the field, never emitted into a quietly wrong graph or a Python traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

import qbert
from qbert.calibration.recipe import Recipe
from qbert.cli import app
from qbert.errors import QbertError

BASES = {  # name: CalibrationConfig fields
    "minmax": dict(method="minmax"),
    "peg": dict(method="peg", groups=4, placement="full"),
    "pegauto": dict(method="peg", groups="auto", placement="full"),
    "smoothquant": dict(method="smoothquant"),
    "percentile": dict(method="percentile", percentile=99.9),
}


@pytest.fixture(scope="module")
def good(tiny_onnx, tiny_tsv) -> dict[str, dict[str, Any]]:
    return {name: qbert.calibrate(tiny_onnx, qbert.CalibrationConfig(data=str(tiny_tsv), samples=16, **kw)).to_json()
            for name, kw in BASES.items()}


def grouped(r: dict) -> str:
    return next(k for k, v in r["sites"].items() if v["bounds"])


def smoothed(r: dict) -> str:
    return next(k for k, v in r["sites"].items() if v["smooth"])


def first(r: dict) -> str:
    return next(iter(r["sites"]))


def drop_groups(r: dict) -> None:
    for site in r["sites"].values():
        site.update(bounds=None, group_amax=None)


def drop_smoothing(r: dict) -> None:
    for site in r["sites"].values():
        site["smooth"] = None


def three_groups(r: dict) -> None:
    k = grouped(r)
    width = r["sites"][k]["bounds"][-1][1]
    r["sites"][k].update(bounds=[[0, 8], [8, 16], [16, width]], group_amax=[1.0, 1.0, 1.0])


def swap_tensors(r: dict) -> None:
    a, b = list(r["sites"].values())[:2]
    a["tensor"], b["tensor"] = b["tensor"], a["tensor"]


# (case, base recipe, edit, words the one-line error must hold)
CASES: list[tuple[str, str, Callable[[dict], Any], str]] = [
    # keys: unknown or missing ones are named, not a Python TypeError
    ("unknown top-level key", "minmax", lambda r: r.update(groupz=4), "unknown key 'groupz'"),
    ("missing sites", "minmax", lambda r: r.pop("sites"), "missing key 'sites'"),
    ("missing method", "minmax", lambda r: r.pop("method"), "missing key 'method'"),
    ("unknown key in a site", "minmax", lambda r: r["sites"][first(r)].update(scale=0.1), "unknown key 'scale'"),
    ("site without its clip value", "minmax", lambda r: r["sites"][first(r)].pop("amax"), "missing key 'amax'"),
    ("sites not an object", "minmax", lambda r: r.update(sites=[1, 2]), "sites must be a JSON object"),
    ("a site not an object", "minmax", lambda r: r["sites"].update({first(r): 3.0}), "must be a JSON object"),
    # types that used to reach Python
    ("placement not a string", "minmax", lambda r: r.update(placement={"gemm": 1}), "placement"),
    ("permute not a boolean", "peg", lambda r: r.update(permute="yes"), "permute must be true or false"),
    ("group clip values not a list", "peg", lambda r: r["sites"][grouped(r)].update(group_amax=5.0),
     "group_amax must be a list"),
    # permute vs permutation
    ("permute true without a permutation", "peg", lambda r: r.update(permutation=None),
     "permute true but no permutation"),
    ("permutation narrower than the groups", "peg", lambda r: r.update(permutation=list(range(16))),
     "permutation of 16 channels"),
    ("permutation on a minmax recipe", "minmax", lambda r: r.update(permute=True, permutation=list(range(32))),
     "permute applies to method peg"),
    # groups vs each site's group bounds
    ("groups 4 but a site with 3 groups", "peg", three_groups, "groups 4 but site"),
    ("peg groups 4 without any PEG groups", "peg", drop_groups, "method peg with groups 4 but no site has PEG groups"),
    ("minmax with groups 4", "minmax", lambda r: r.update(groups=4), "groups 4 applies to method peg"),
    # method vs the fields it implies
    ("smoothquant without smoothing factors", "smoothquant", drop_smoothing,
     "method smoothquant but no site has smoothing factors"),
    ("percentile on a minmax recipe", "minmax", lambda r: r.update(percentile=99.9),
     "percentile 99.9 applies to method percentile"),
    ("alpha on a minmax recipe", "minmax", lambda r: r.update(alpha=0.5), "alpha 0.5 applies to"),
    # placement vs the sites present
    ("full-placement sites labelled gemm", "peg", lambda r: r.update(placement="gemm"), "not a gemm-placement site"),
    ("a site key of no placement", "minmax", lambda r: r["sites"].update(
        {"layer.0.nope": r["sites"][first(r)]}), "'layer.0.nope' is not a gemm-placement site"),
    ("fallback key of another placement", "minmax", lambda r: r.update(fallback=["layer.0.h"]),
     "'layer.0.h' is not a gemm-placement site"),
    # informational fields are copied into every recipe emitted from this one: an edit would be passed on as true
    ("weights said to be per tensor", "minmax", lambda r: r.update(weights="per-tensor"), "weights 'per-tensor'"),
    ("calibration samples not a number", "minmax", lambda r: r["calibration"].update(samples="many"),
     "calibration.samples 'many' must be a positive integer"),
    ("calibration padding not a boolean", "peg", lambda r: r["calibration"].update(include_padding="no"),
     "calibration.include_padding 'no' must be true or false"),
    ("calibration seed a boolean", "minmax", lambda r: r["calibration"].update(seed=True), "calibration.seed"),
    ("calibration seed negative", "minmax", lambda r: r["calibration"].update(seed=-3), "calibration.seed -3"),
    ("an unknown key in calibration", "minmax", lambda r: r["calibration"].update(samplez=5),
     "calibration has an unknown key 'samplez'"),
    ("method none (qbert's marker for no INT8)", "minmax", lambda r: r.update(method="none"), "unknown method 'none'"),
    # every field valid alone, yet not what was computed: caught by the checksum qbert writes
    ("alpha changed on a smoothquant recipe", "smoothquant", lambda r: r.update(alpha=0.1), "was edited after qbert"),
    ("samples changed", "minmax", lambda r: r["calibration"].update(samples=99999), "was edited after qbert"),
    ("permute off on a permuted PEG recipe", "peg", lambda r: r.update(permute=False, permutation=None),
     "was edited after qbert"),
    # values emission would change without a word: a clip below the floor qbert emits, a factor 0 in float32
    ("a clip value of 1e-300", "minmax", lambda r: r["sites"][first(r)].update(amax=1e-300),
     "clip value(s) [1e-300]"),
    ("a clip value just below the floor", "minmax", lambda r: r["sites"][first(r)].update(amax=9e-9),
     "clip value(s) [9e-09]"),
    ("a PEG group clip value of 1e-20", "peg", lambda r: r["sites"][grouped(r)]["group_amax"].__setitem__(0, 1e-20),
     "1e-20"),
    # outlier channels: ascending distinct indices on a per-tensor site
    ("outlier channels unsorted", "minmax", lambda r: r["sites"][first(r)].update(outliers=[7, 3]),
     "outlier channels [7, 3]"),
    ("outlier channels repeated", "minmax", lambda r: r["sites"][first(r)].update(outliers=[3, 3]),
     "outlier channels [3, 3]"),
    ("an outlier channel negative", "minmax", lambda r: r["sites"][first(r)].update(outliers=[-1]),
     "outlier channels [-1]"),
    ("outlier channels on a PEG-grouped site", "peg", lambda r: r["sites"][grouped(r)].update(outliers=[1]),
     "per-tensor input of a linear layer"),
    ("outlier channels on a head", "minmax", lambda r: r["sites"]["head.0"].update(outliers=[1]),
     "per-tensor input of a linear layer"),
    ("a smoothing factor of 1e-300", "smoothquant", lambda r: r["sites"][smoothed(r)]["smooth"].__setitem__(0, 1e-300),
     "smoothing factors"),
]


@pytest.mark.parametrize("path", [None, 3, ""], ids=["None", "a number", "empty"])
def test_recipe_load_of_no_path_is_one_line(path):
    with pytest.raises(QbertError) as e:
        Recipe.load(path)
    assert "Recipe.load" in str(e.value) and "\n" not in str(e.value)


# (case, base recipe, edit, words of the one-line error): recipes that load but do not fit the model they are
# emitted on, refused when checked against it
MISFITS: list[tuple[str, str, Callable[[dict], Any], str]] = [
    ("a site's tensor renamed", "minmax", lambda r: r["sites"][first(r)].update(tensor="nope"),
     "names tensor 'nope'"),
    ("two sites' tensors swapped", "peg", swap_tensors, "names tensor"),
]


@pytest.mark.parametrize("case,base,edit,needle", MISFITS, ids=[c[0] for c in MISFITS])
def test_a_recipe_that_does_not_fit_the_model_is_refused(good, tiny_onnx, tmp_path, case, base, edit, needle):
    """Edited with the checksum removed (the user taking the edit on): the model check still names the misfit."""
    _refused_by_the_cli(tiny_onnx, _write(good, tmp_path, base, lambda r: (edit(r), r.pop("checksum"))), tmp_path,
                        case, needle)


def _refused_by_the_cli(tiny_onnx: Path, recipe: Path, tmp_path: Path, case: str, needle: str) -> None:
    """`calibrate --recipe` answers in one line naming the problem, exit 2, and writes nothing."""
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--recipe", str(recipe),
                                 "--out", str(out / "q.onnx")])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], (case, r.stderr)
    assert list(out.iterdir()) == []


def _write(good: dict, tmp_path: Path, base: str, edit: Callable[[dict], Any]) -> Path:
    recipe = json.loads(json.dumps(good[base]))
    edit(recipe)
    path = tmp_path / "bad.recipe.json"
    path.write_text(json.dumps(recipe))
    return path


@pytest.mark.parametrize("case,base,edit,needle", CASES, ids=[c[0] for c in CASES])
def test_recipe_load_refuses(good, tmp_path, case, base, edit, needle):
    path = _write(good, tmp_path, base, edit)
    with pytest.raises(QbertError) as e:
        Recipe.load(path)
    assert needle in str(e.value) and "\n" not in str(e.value), (case, str(e.value))
    assert "__init__" not in str(e.value) and "argument" not in str(e.value)


@pytest.mark.parametrize("case,base,edit,needle", CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_cli_refuses_the_recipe_in_one_line(good, tiny_onnx, tmp_path, case, base, edit, needle):
    _refused_by_the_cli(tiny_onnx, _write(good, tmp_path, base, edit), tmp_path, case, needle)


@pytest.mark.parametrize("base", BASES)
def test_every_recipe_qbert_writes_loads(good, tmp_path, base):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(good[base]))
    assert Recipe.load(path).to_json() == json.loads(json.dumps(good[base]))


@pytest.mark.parametrize("target", ["ort-cpu", "trt", "openvino"])
def test_a_recipe_without_head_scales_still_emits(good, tiny_onnx, tmp_path, target):
    """Head scales (`head.<n>`) are optional: a recipe that has none re-emits for every target, heads in float."""
    r = json.loads(json.dumps(good["minmax"]))
    assert any(k.startswith("head.") for k in r["sites"])
    r["sites"] = {k: v for k, v in r["sites"].items() if not k.startswith("head.")}
    del r["checksum"]  # as recipes written before head scales and checksums
    (tmp_path / "r.json").write_text(json.dumps(r))
    out = tmp_path / f"q.{target}.onnx"
    res = CliRunner().invoke(app, ["calibrate", "--onnx", str(tiny_onnx), "--recipe", str(tmp_path / "r.json"),
                                   "--target", target, "--out", str(out)])
    assert res.exit_code == 0, res.stderr
    side = json.loads(out.with_name(out.name + ".json").read_text())["quantization"]
    assert side["quantized_sites"] == len(r["sites"]) - len(side.get("left_in_float_by_target", []))


@pytest.mark.parametrize("edit,needle", [
    (lambda r: r.update(fallback=[first(r)]), "both quantized"),
    (lambda r: r.update(fallback=["layer.0.q", "layer.0.q"]), "twice"),
], ids=["a fallback key that is also a site", "a fallback key twice"])
def test_fallback_is_consistent_with_the_sites(good, tmp_path, edit, needle):
    r = json.loads(json.dumps(good["minmax"]))
    edit(r)
    r.pop("checksum")  # the user took the edit on: the fields are still checked against each other
    if "twice" in needle:
        r["sites"].pop("layer.0.q", None)
    (tmp_path / "r.json").write_text(json.dumps(r))
    with pytest.raises(QbertError, match=needle):
        Recipe.load(tmp_path / "r.json")
