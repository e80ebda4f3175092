"""Table-driven bad input: every command answers with one line naming the problem, exit 2, no partial file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from qbert.atomic import sha256_file, sha256_onnx
from qbert.cli import app
from tests.conftest import build_tiny_bert, signed, write_tsv

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tiny_model, tiny_onnx, tiny_tsv, tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("bad"), tiny_model, tiny_onnx, tiny_tsv)


def build_env(d: Path, tiny_model: Path, tiny_onnx: Path, tiny_tsv: Path) -> dict:
    """Good inputs plus one broken variant of each kind of file."""
    shutil.copy(tiny_onnx, d / "m.onnx")
    shutil.copy(str(tiny_onnx) + ".json", d / "m.onnx.json")
    blob = (d / "m.onnx").read_bytes()
    (d / "trunc.onnx").write_bytes(blob[: len(blob) // 3])
    shutil.copy(d / "m.onnx.json", d / "trunc.onnx.json")
    (d / "text.onnx").write_text("this is not a model\n")
    m = onnx.load(str(d / "m.onnx"))
    m.graph.input[2].name = "segment_ids"  # lacks token_type_ids
    onnx.save(m, str(d / "noinput.onnx"))
    m = onnx.load(str(d / "m.onnx"))
    for t in m.graph.initializer:  # NaN LayerNorm weight → NaN activations
        if t.name.endswith("embeddings.LayerNorm.weight"):
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * float("nan"), t.name))
    onnx.save(m, str(d / "nan.onnx"))
    side = json.loads((d / "m.onnx.json").read_text())
    (d / "nan.onnx.json").write_text(json.dumps(signed({**side, "sha256": sha256_onnx(d / "nan.onnx")})))
    shutil.copy(d / "m.onnx", d / "relabelled.onnx")  # its sidecar's labels swapped by hand
    (d / "relabelled.onnx.json").write_text(json.dumps({**side, "label2id": {"entailment": 1, "not_entailment": 0}}))
    shutil.copy(d / "nan.onnx", d / "swapped.onnx")  # a readable ONNX its sidecar does not describe
    shutil.copy(d / "m.onnx.json", d / "swapped.onnx.json")
    (d / "nosidecar.onnx").write_bytes(blob)
    m = onnx.load(str(d / "m.onnx"))  # a foreign classifier over three labels: not a quantization of m.onnx
    m.graph.output[0].type.tensor_type.shape.dim[-1].dim_value = 3
    onnx.save(m, str(d / "threelabels.onnx"))
    m = onnx.load(str(d / "m.onnx"))  # declares [batch, n] but returns three columns: only a run shows it
    for node in m.graph.node:
        node.output[:] = ["logits_two" if o == "logits" else o for o in node.output]
    m.graph.node.extend([
        onnx.helper.make_node("Slice", ["logits_two", "col_start", "col_end", "col_axis"], ["first_col"]),
        onnx.helper.make_node("Concat", ["logits_two", "first_col"], ["logits"], axis=-1)])
    m.graph.initializer.extend(onnx.numpy_helper.from_array(np.array([v], np.int64), n)
                               for n, v in (("col_start", 0), ("col_end", 1), ("col_axis", -1)))
    m.graph.output[0].type.tensor_type.shape.dim[-1].dim_param = "n"
    onnx.save(m, str(d / "widens.onnx"))
    write_tsv(d / "small.tsv", 10)
    (d / "nocol.tsv").write_text("index\tquestion\tlabel\n0\tq\tentailment\n")
    (d / "badlabel.tsv").write_text("index\tquestion\tsentence\tlabel\n0\tq\ts\tcontradiction\n")
    (d / "empty.tsv").write_text("")
    (d / "latin1.tsv").write_bytes(b"index\tquestion\tsentence\tlabel\n0\tq\tna\xefve\tentailment\n")
    (d / "notmodel").mkdir()
    build_tiny_bert(d / "base", classifier=False)
    runner.invoke(app, ["calibrate", "--onnx", str(d / "m.onnx"), "--data", str(tiny_tsv), "--samples", "16",
                        "--out", str(d / "q.onnx")])
    (d / "plan.plan").write_bytes(b"\x00garbage plan")
    (d / "empty.plan").write_bytes(b"")
    (d / "afile").write_text("x")
    _bad_recipes(d, tiny_tsv)
    (d / "unlabelled.tsv").write_text("".join(l.rsplit("\t", 1)[0] + "\n" for l in tiny_tsv.read_text().splitlines()))
    (d / "fraction.jsonl").write_text('{"question": "q", "sentence": "s", "label": 1.5}\n')
    build_tiny_bert(d / "regression")
    cfg = json.loads((d / "regression" / "config.json").read_text())
    (d / "regression" / "config.json").write_text(json.dumps({**cfg, "problem_type": "regression",
                                                              "id2label": {"0": "score"}, "label2id": {"score": 0}}))
    return {"d": d, "tsv": str(tiny_tsv), "model": str(tiny_model)}


def _bad_recipes(d: Path, tsv: Path) -> None:
    """A recipe from another (narrower) model, and broken variants of a good one."""
    build_tiny_bert(d / "other", layers=1, hidden=24, heads=2, ffn=32)
    runner.invoke(app, ["export", "--model", str(d / "other"), "--out", str(d / "other.onnx")])
    runner.invoke(app, ["calibrate", "--onnx", str(d / "other.onnx"), "--data", str(tsv), "--samples", "16",
                        "--method", "peg", "--groups", "4", "--placement", "full", "--out", str(d / "other.q.onnx")])
    good = json.loads((d / "q.onnx.recipe.json").read_text())
    first = next(iter(good["sites"]))
    side = json.loads((d / "m.onnx.json").read_text())
    shutil.copy(d / "m.onnx", d / "duplabels.onnx")
    (d / "duplabels.onnx.json").write_text(json.dumps(signed({**side, "label2id": {"entailment": 0,
                                                                                "not_entailment": 0}})))
    for name, edit in (("nan", lambda r: r["sites"][first].update(amax=float("nan"))),
                       ("huge", lambda r: r["sites"][first].update(amax=1e308)),
                       ("nomodel", lambda r: r.update(model=None)),
                       ("zero", lambda r: r["sites"][first].update(amax=0.0)),
                       ("negative", lambda r: r["sites"][first].update(amax=-1.0)),
                       ("method", lambda r: r.update(method="magic")),
                       ("fallback", lambda r: r.update(fallback=["layer.9.nope"]))):
        bad = json.loads(json.dumps(good))
        edit(bad)
        bad.pop("checksum", None)  # edited on purpose: each case checks the field, not the checksum
        (d / f"{name}.recipe.json").write_text(json.dumps(bad))
    runner.invoke(app, ["calibrate", "--onnx", str(d / "m.onnx"), "--data", str(tsv), "--samples", "16",
                        "--method", "peg", "--groups", "4", "--placement", "full", "--out", str(d / "peg.q.onnx")])
    peg = json.loads((d / "peg.q.onnx.recipe.json").read_text())
    grouped = next(k for k, v in peg["sites"].items() if v["bounds"])
    for name, edit in (("decreasing", lambda r: r["sites"][grouped].update(bounds=[[0, 20], [20, 10], [10, 32]],
                                                                            group_amax=[1.0, 1.0, 1.0])),
                       ("offstream", lambda r: r["sites"]["layer.0.p"].update(bounds=[[0, 16], [16, 32]],
                                                                               group_amax=[1.0, 1.0])),
                       ("minmaxgroups", lambda r: r.update(method="minmax")),
                       ("unpermuted", lambda r: r.update(permute=False)),
                       ("floatperm", lambda r: r.update(permutation=[float(i) for i in r["permutation"]]))):
        bad = json.loads(json.dumps(peg))
        edit(bad)
        bad.pop("checksum", None)  # edited on purpose: each case checks the field, not the checksum
        (d / f"{name}.recipe.json").write_text(json.dumps(bad))
    runner.invoke(app, ["calibrate", "--onnx", str(d / "m.onnx"), "--data", str(tsv), "--samples", "16",
                        "--method", "smoothquant", "--out", str(d / "sq.q.onnx")])
    sq = json.loads((d / "sq.q.onnx.recipe.json").read_text())
    smoothed = next(k for k, v in sq["sites"].items() if v["smooth"])
    for name, edit in (("sqminmax", lambda r: r.update(method="minmax", alpha=None)),
                       ("sqfull", lambda r: r.update(placement="full")),
                       ("sqnegative", lambda r: r["sites"][smoothed]["smooth"].__setitem__(0, -1.0)),
                       ("sqwidth", lambda r: r["sites"][smoothed].update(smooth=r["sites"][smoothed]["smooth"][:5]))):
        bad = json.loads(json.dumps(sq))
        edit(bad)
        bad.pop("checksum", None)  # edited on purpose: each case checks the field, not the checksum
        (d / f"{name}.recipe.json").write_text(json.dumps(bad))


# (case, argv template, expected words in the one-line error); {d} = the fixture folder, {o} = an empty output folder
CASES = [
    ("export: missing model path", "export --model {d}/missing --out {o}/x.onnx", "no such folder"),
    ("export: folder that is not an HF model", "export --model {d}/notmodel --out {o}/x.onnx", "not a Hugging Face model"),
    ("export: not a classifier", "export --model {d}/base --out {o}/x.onnx", "not a sequence classifier"),
    ("export: output parent is a file", "export --model {model} --out {d}/afile/x.onnx", "is a file"),
    ("export: opset below 17", "export --model {model} --out {o}/x.onnx --opset 13", "needs ≥ 17"),
    ("eval: missing ONNX", "eval --onnx {d}/missing.onnx --data {tsv}", "not found"),
    ("eval: truncated ONNX", "eval --onnx {d}/trunc.onnx --data {tsv}", "does not match its sidecar"),
    ("eval: ONNX without its sidecar", "eval --onnx {d}/nosidecar.onnx --data {tsv}", "no sidecar"),
    ("eval: --fp32 a quantized model", "eval --onnx {d}/nosidecar.onnx --fp32 {d}/q.onnx --data {tsv}",
     "is a quantized model; give the FP32 export"),
    ("eval: --fp32 of another model's outputs", "eval --onnx {d}/other.onnx --fp32 {d}/m.onnx --data {tsv}",
     "is not the FP32 export"),
    ("eval: --fp32 for a sidecar-less model of another output width",
     "eval --onnx {d}/threelabels.onnx --fp32 {d}/m.onnx --data {tsv}", "not a quantization of that export"),
    ("eval: --fp32 whose output width shows only when run", "eval --onnx {d}/widens.onnx --fp32 {d}/m.onnx "
     "--data {tsv}", "returned [2, 3] for a batch of 2"),
    ("eval: --fp32 a sidecar", "eval --onnx {d}/nosidecar.onnx --fp32 {d}/m.onnx.json --data {tsv}",
     "is a JSON file"),
    ("eval: --fp32 the model itself", "eval --onnx {d}/m.onnx --fp32 {d}/m.onnx --data {tsv}",
     "is the model being scored"),
    ("eval: --fp32 with --engine tensorrt", "eval --onnx {d}/nosidecar.onnx --fp32 {d}/m.onnx --engine tensorrt "
     "--plan {d}/plan.plan --data {tsv}", "drop --fp32"),
    ("eval: TSV missing columns", "eval --onnx {d}/m.onnx --data {d}/nocol.tsv --json {o}/r.json", "header must name"),
    ("eval: unknown label", "eval --onnx {d}/m.onnx --data {d}/badlabel.tsv --json {o}/r.json", "unknown label"),
    ("eval: empty TSV", "eval --onnx {d}/m.onnx --data {d}/empty.tsv --json {o}/r.json", "is empty"),
    ("eval: non-UTF-8 TSV", "eval --onnx {d}/m.onnx --data {d}/latin1.tsv --json {o}/r.json", "not UTF-8"),
    ("eval: missing data", "eval --onnx {d}/m.onnx --data {d}/none.tsv", "not found"),
    ("eval: --limit 0", "eval --onnx {d}/m.onnx --data {tsv} --limit 0", "--limit"),
    ("calibrate: not ONNX", "calibrate --onnx {d}/text.onnx --data {tsv} --out {o}/q.onnx", "not a readable ONNX"),
    ("calibrate: ONNX lacks inputs", "calibrate --onnx {d}/noinput.onnx --data {tsv} --out {o}/q.onnx", "lacks inputs"),
    ("calibrate: Q/DQ ONNX where FP32 expected", "calibrate --onnx {d}/q.onnx --data {tsv} --out {o}/q2.onnx",
     "already quantized"),
    ("calibrate: --groups more than the channels", "calibrate --onnx {d}/m.onnx --data {tsv} --method peg "
     "--groups 33 --out {o}/q.onnx", "more groups than the 32 channels"),
    ("calibrate: --groups not a number", "calibrate --onnx {d}/m.onnx --data {tsv} --method peg --groups x "
     "--out {o}/q.onnx", "expected an integer"),
    ("calibrate: --method auto with --auto-fp16", "calibrate --onnx {d}/m.onnx --data {tsv} --method auto "
     "--auto-fp16 --out {o}/q.onnx", "use one of them"),
    ("calibrate: --method auto without enough held-out rows", "calibrate --onnx {d}/m.onnx --data {tsv} "
     "--method auto --samples 64 --out {o}/q.onnx", "needs ≥ 256 held-out rows"),
    ("calibrate: --groups 0", "calibrate --onnx {d}/m.onnx --data {tsv} --method peg --groups 0 --out {o}/q.onnx",
     "positive"),
    ("calibrate: --groups negative", "calibrate --onnx {d}/m.onnx --data {tsv} --method peg --groups -2 "
     "--out {o}/q.onnx", "positive"),
    ("calibrate: --percentile 0", "calibrate --onnx {d}/m.onnx --data {tsv} --method percentile --percentile 0 "
     "--out {o}/q.onnx", "(0, 100]"),
    ("calibrate: --percentile 101", "calibrate --onnx {d}/m.onnx --data {tsv} --method percentile --percentile 101 "
     "--out {o}/q.onnx", "(0, 100]"),
    ("calibrate: fewer rows than --samples", "calibrate --onnx {d}/m.onnx --data {d}/small.tsv --samples 64 "
     "--out {o}/q.onnx", "lower --samples"),
    ("calibrate: NaN activations", "calibrate --onnx {d}/nan.onnx --data {tsv} --samples 16 --out {o}/q.onnx",
     "NaN/Inf"),
    ("calibrate: unknown method", "calibrate --onnx {d}/m.onnx --data {tsv} --method magic --out {o}/q.onnx",
     "--method"),
    ("calibrate: fallback matches nothing", "calibrate --onnx {d}/m.onnx --data {tsv} --fp16-fallback nope "
     "--out {o}/q.onnx", "no quantized tensor"),
    ("calibrate: outlier channels without a count", "calibrate --onnx {d}/m.onnx --data {tsv} --fp16-fallback a:0 "
     "--out {o}/q.onnx", "PATTERN:N"),
    ("calibrate: outlier channels of an attention operand", "calibrate --onnx {d}/m.onnx --data {tsv} "
     "--fp16-fallback q:2 --out {o}/q.onnx", "no quantized input of a linear layer"),
    ("calibrate: outlier channels of a tensor the residual path reads", "calibrate --onnx {d}/m.onnx --data {tsv} "
     "--placement full --fp16-fallback x:2 --out {o}/q.onnx", "would read its outlier channels clipped"),
    ("calibrate: outlier channels with a non-ASCII count", "calibrate --onnx {d}/m.onnx --data {tsv} "
     "--fp16-fallback a:² --out {o}/q.onnx", "PATTERN:N"),
    ("calibrate: two outlier counts for one tensor", "calibrate --onnx {d}/m.onnx --data {tsv} "
     "--fp16-fallback a:4,layer.0.a:2 --out {o}/q.onnx", "give each tensor one count"),
    ("calibrate: a tensor both whole and by channels", "calibrate --onnx {d}/m.onnx --data {tsv} "
     "--fp16-fallback a:4,a --out {o}/q.onnx", "not both"),
    ("calibrate: outlier channels with PEG", "calibrate --onnx {d}/m.onnx --data {tsv} --method peg "
     "--fp16-fallback x:2 --out {o}/q.onnx", "--method"),
    ("calibrate: more outlier channels than the tensor has", "calibrate --onnx {d}/m.onnx --data {tsv} "
     "--fp16-fallback x:32 --out {o}/q.onnx", "has 32 channels"),
    ("build: not ONNX", "build --onnx {d}/text.onnx --out {o}/e.plan", "not a readable ONNX"),
    ("build: bad --shapes", "build --onnx {d}/q.onnx --out {o}/e.plan --shapes 8x128", "--shapes"),
    ("bench: corrupt plan", "bench --plan {d}/plan.plan", "no qbert sidecar"),
    ("bench: empty plan", "bench --plan {d}/empty.plan", "is empty"),
    ("bench: both --onnx and --plan", "bench --onnx {d}/m.onnx --plan {d}/plan.plan", "exactly one"),
    ("bench: bad --batch", "bench --onnx {d}/m.onnx --batch 0", "--batch"),
    ("build: --shapes longer than the model", "build --onnx {d}/m.onnx --out {o}/e.plan --shapes 1x1/2x32/4x128",
     "longer than the model takes"),
    ("calibrate: recipe with decreasing PEG bounds", "calibrate --onnx {d}/m.onnx --recipe {d}/decreasing.recipe.json "
     "--out {o}/q.onnx", "do not tile"),
    ("calibrate: recipe with PEG groups off the residual stream", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/offstream.recipe.json --out {o}/q.onnx", "not residual-stream tensors"),
    ("calibrate: recipe with groups but method minmax", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/minmaxgroups.recipe.json --out {o}/q.onnx", "method minmax with PEG groups"),
    ("calibrate: recipe with a permutation but permute false", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/unpermuted.recipe.json --out {o}/q.onnx", "permute false"),
    ("calibrate: recipe with a permutation of floats", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/floatperm.recipe.json --out {o}/q.onnx", "list of channel indices"),
    ("calibrate: --asymmetric for TensorRT", "calibrate --onnx {d}/m.onnx --data {tsv} --asymmetric --target trt "
     "--out {o}/q.onnx", "runs symmetric INT8 only"),
    ("calibrate: --recipe with --asymmetric", "calibrate --onnx {d}/m.onnx --recipe {d}/q.onnx.recipe.json "
     "--asymmetric --out {o}/x.onnx", "would do nothing"),
    ("calibrate: --exact with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --exact --out {o}/q.onnx",
     "--exact apply to --method auto and --auto-fp16"),
    ("reproduce: --exact with --engine tensorrt", "reproduce --model {model} --eval-data {tsv} --calib-data "
     "{d}/small.tsv --engine tensorrt --exact --out {o}/r", "does not apply to --engine tensorrt"),
    ("calibrate: --alpha with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --alpha 0.8 --out {o}/q.onnx",
     "--alpha applies to --method smoothquant"),
    ("calibrate: --alpha with PEG at a fixed K", "calibrate --onnx {d}/m.onnx --data {tsv} --method peg --groups 4 "
     "--alpha 0.8 --out {o}/q.onnx", "--method peg --groups auto, not peg --groups 4"),
    ("calibrate: --alpha 1.5", "calibrate --onnx {d}/m.onnx --data {tsv} --method smoothquant --alpha 1.5 "
     "--out {o}/q.onnx", "[0, 1]"),
    ("calibrate: smoothquant under --placement full", "calibrate --onnx {d}/m.onnx --data {tsv} --method smoothquant "
     "--placement full --out {o}/q.onnx", "gemm placement only"),
    ("calibrate: recipe with smoothing factors but method minmax", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/sqminmax.recipe.json --out {o}/q.onnx", "method minmax with smoothing factors"),
    ("calibrate: smoothquant recipe edited to placement full", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/sqfull.recipe.json --out {o}/q.onnx", "smoothquant applies to the gemm placement, not full"),
    ("calibrate: recipe with a negative smoothing factor", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/sqnegative.recipe.json --out {o}/q.onnx", "finite numbers > 0"),
    ("calibrate: recipe with too few smoothing factors", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/sqwidth.recipe.json --out {o}/q.onnx", "5 smoothing factors"),
    ("calibrate: --method auto with --placement", "calibrate --onnx {d}/m.onnx --data {tsv} --method auto "
     "--placement full --out {o}/q.onnx", "--method auto tries both placements"),
    ("calibrate: --labels with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --labels a,b --out {o}/q.onnx",
     "--labels, --budget, --heldout and --exact apply"),
    ("calibrate: --heldout with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --heldout 500 "
     "--out {o}/q.onnx", "--heldout and --exact apply"),
    ("calibrate: --heldout beyond the data", "calibrate --onnx {d}/m.onnx --data {tsv} --method auto --samples 16 "
     "--heldout 5000 --out {o}/q.onnx", "rows beyond --samples 16"),
    ("calibrate: --heldout 0", "calibrate --onnx {d}/m.onnx --data {tsv} --method auto --heldout 0 "
     "--out {o}/q.onnx", "--heldout 0: must be"),
    ("reproduce: --only matching no row", "reproduce --model {model} --eval-data {tsv} --calib-data {d}/small.tsv "
     "--only nomatch --out {o}/r", "matches no row"),
    ("bench: --batch with an empty item", "bench --onnx {d}/m.onnx --batch 1,,8", "--batch"),
    ("bench: --batch with a repeated size", "bench --onnx {d}/m.onnx --batch 1,8,1", "repeated"),
    ("calibrate: --groups in full-width digits", "calibrate --onnx {d}/m.onnx --data {tsv} --method peg --groups ４ "
     "--out {o}/q.onnx", "expected an integer"),
    ("bench: --batch too large to fit", "bench --onnx {d}/m.onnx --batch 100000", "[1, 1024]"),
    ("bench: an ONNX with --engine tensorrt", "bench --onnx {d}/m.onnx --engine tensorrt", "pass it as --plan"),
    ("calibrate: --recipe with calibration flags", "calibrate --onnx {d}/m.onnx --recipe {d}/q.onnx.recipe.json "
     "--method peg --samples 64 --out {o}/q.onnx", "--method, --samples would do nothing"),
    ("calibrate: --percentile with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --percentile 99 "
     "--out {o}/q.onnx", "--percentile applies to --method percentile"),
    ("calibrate: --groups with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --groups 3 --out {o}/q.onnx",
     "--groups applies to --method peg"),
    ("calibrate: --recipe with --threads and --batch-size", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/q.onnx.recipe.json --threads 2 --batch-size 8 --out {o}/q.onnx", "--batch-size, --threads would do nothing"),
    ("calibrate: --recipe with a flag at its default value", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/q.onnx.recipe.json --method minmax --out {o}/q.onnx", "--method would do nothing"),
    ("calibrate: --percentile at its default with minmax", "calibrate --onnx {d}/m.onnx --data {tsv} --percentile "
     "99.99 --out {o}/q.onnx", "--percentile applies to --method percentile"),
    ("calibrate: --method auto with --placement gemm", "calibrate --onnx {d}/m.onnx --data {tsv} --method auto "
     "--placement gemm --out {o}/q.onnx", "--method auto tries both placements"),
    ("bench: --profile on a plan", "bench --plan {d}/plan.plan --profile", "--profile works with ort-cpu"),
    ("eval: FP32 ONNX as TensorRT plan", "eval --onnx {d}/m.onnx --engine tensorrt --plan {d}/m.onnx --data {tsv}",
     "not a qbert engine sidecar"),
    ("analyze: output is a file", "analyze --onnx {d}/m.onnx --data {tsv} --out {d}/afile", "is a file"),
    ("reproduce: same eval and calibration data", "reproduce --model {model} --eval-data {tsv} --calib-data {tsv} "
     "--out {o}/rep", "same rows"),
    # artefacts checked against each other
    ("calibrate: recipe from another model", "calibrate --onnx {d}/m.onnx --recipe {d}/other.q.onnx.recipe.json "
     "--out {o}/q.onnx", "calibrated on another model"),
    ("eval: ONNX changed after qbert wrote it", "eval --onnx {d}/trunc.onnx --data {tsv}", "does not match its sidecar"),
    ("bench: ONNX changed after qbert wrote it", "bench --onnx {d}/trunc.onnx --batch 1 --iters 1",
     "does not match its sidecar"),
    ("eval: sidecar edited after qbert wrote it", "eval --onnx {d}/relabelled.onnx --data {tsv}",
     "was edited after qbert wrote it"),
    ("build: ONNX changed after qbert wrote it", "build --onnx {d}/swapped.onnx --out {o}/e.plan",
     "does not match its sidecar"),
    ("calibrate: a sidecar given as --recipe", "calibrate --onnx {d}/m.onnx --recipe {d}/m.onnx.json "
     "--out {o}/q.onnx", "not a qbert recipe"),
    ("bench: a Q/DQ ONNX given as --plan", "bench --plan {d}/q.onnx", "not a qbert engine sidecar"),
    ("build: a recipe given as --onnx", "build --onnx {d}/q.onnx.recipe.json --out {o}/e.plan",
     "not a readable ONNX"),
    ("eval: a recipe given as --data", "eval --onnx {d}/m.onnx --data {d}/q.onnx.recipe.json",
     "one object per line"),
    # recipes validated like flags
    ("calibrate: recipe with a NaN clip value", "calibrate --onnx {d}/m.onnx --recipe {d}/nan.recipe.json "
     "--out {o}/q.onnx", "finite number > 0"),
    ("calibrate: recipe with a zero clip value", "calibrate --onnx {d}/m.onnx --recipe {d}/zero.recipe.json "
     "--out {o}/q.onnx", "finite number > 0"),
    ("calibrate: recipe with a negative clip value", "calibrate --onnx {d}/m.onnx --recipe {d}/negative.recipe.json "
     "--out {o}/q.onnx", "finite number > 0"),
    ("calibrate: recipe with an unknown method", "calibrate --onnx {d}/m.onnx --recipe {d}/method.recipe.json "
     "--out {o}/q.onnx", "unknown method"),
    ("calibrate: recipe with an unknown fallback key", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/fallback.recipe.json --out {o}/q.onnx", "'layer.9.nope' is not a gemm-placement site"),
    ("calibrate: recipe with a clip value beyond float32", "calibrate --onnx {d}/m.onnx --recipe "
     "{d}/huge.recipe.json --out {o}/q.onnx", "finite number > 0"),
    ("calibrate: recipe without its model", "calibrate --onnx {d}/m.onnx --recipe {d}/nomodel.recipe.json "
     "--out {o}/q.onnx", "model must be a JSON object"),
    ("eval: sidecar with two labels on one id", "eval --onnx {d}/duplabels.onnx --data {tsv}", "label2id="),
    ("build: a graph emitted for ort-cpu", "build --onnx {d}/q.onnx --out {o}/e.plan", "--target ort-cpu"),
    ("eval: a sidecar given as --onnx", "eval --onnx {d}/m.onnx.json --data {tsv}", "give the .onnx"),
    # outputs never overwrite inputs or each other
    ("eval: --json in a folder that holds no files", "eval --onnx {d}/m.onnx --data {tsv} --json /proc/e.json",
     "cannot write files in /proc"),
    ("calibrate: --out is the input ONNX", "calibrate --onnx {d}/m.onnx --data {tsv} --out {d}/m.onnx",
     "would overwrite --onnx"),
    ("calibrate: --recipe-out is the input's sidecar", "calibrate --onnx {d}/m.onnx --data {tsv} --out {o}/q.onnx "
     "--recipe-out {d}/m.onnx.json", "would overwrite --onnx"),
    ("calibrate: --out is the data file", "calibrate --onnx {d}/m.onnx --data {d}/small.tsv --out {d}/small.tsv",
     "would overwrite --data"),
    ("calibrate: two outputs on one path", "calibrate --onnx {d}/m.onnx --data {tsv} --out {o}/q.onnx "
     "--recipe-out {o}/q.onnx", "give each output its own path"),
    ("eval: --json is the data file", "eval --onnx {d}/m.onnx --data {d}/small.tsv --json {d}/small.tsv",
     "would overwrite --data"),
    ("eval: --json in a folder that is a file", "eval --onnx {d}/m.onnx --data {tsv} --json {d}/afile/", "is a file"),
    ("bench: --json is the model", "bench --onnx {d}/m.onnx --json {d}/m.onnx", "would overwrite --onnx"),
    ("build: --out is the input ONNX", "build --onnx {d}/q.onnx --out {d}/q.onnx", "would overwrite --onnx"),
    ("export: --out inside the model folder over its config", "export --model {d}/other --out {d}/other/config.json",
     "would overwrite --model"),
    # numeric flags with ranges
    ("export: --max-length 0", "export --model {model} --out {o}/x.onnx --max-length 0", "--max-length"),
    ("export: --max-length beyond the positions", "export --model {model} --out {o}/x.onnx --max-length 100000",
     "position table"),
    ("export: unsupported --opset", "export --model {model} --out {o}/x.onnx --opset 99", "at most opset"),
    ("export: negative --tolerance", "export --model {model} --out {o}/x.onnx --tolerance -1", "--tolerance"),
    ("eval: --batch-size 0", "eval --onnx {d}/m.onnx --data {tsv} --batch-size 0", "--batch-size 0"),
    ("eval: --threads -1", "eval --onnx {d}/m.onnx --data {tsv} --threads -1", "--threads -1"),
    ("calibrate: --samples 0", "calibrate --onnx {d}/m.onnx --data {tsv} --samples 0 --out {o}/q.onnx", "--samples 0"),
    ("calibrate: negative --budget", "calibrate --onnx {d}/m.onnx --data {tsv} --auto-fp16 --budget -1 "
     "--out {o}/q.onnx", "--budget -1"),
    ("build: --opt-level 9", "build --onnx {d}/q.onnx --out {o}/e.plan --opt-level 9", "must be 0-5"),
    ("bench: --seq beyond the model", "bench --onnx {d}/m.onnx --seq 100000", "at most"),
    ("bench: --iters 0", "bench --onnx {d}/m.onnx --iters 0", "--iters 0"),
    ("analyze: --samples 0", "analyze --onnx {d}/m.onnx --data {tsv} --samples 0 --out {o}/an", "--samples 0"),
    ("reproduce: --bench-iters 0", "reproduce --model {model} --eval-data {tsv} --calib-data {d}/small.tsv "
     "--out {o}/rep --bench-iters 0", "--bench-iters 0"),
    # no quiet wrong answers
    ("analyze: unlabelled data", "analyze --onnx {d}/m.onnx --data {d}/unlabelled.tsv --out {o}/an", "unlabelled"),
    ("calibrate: --auto-fp16 on unlabelled data", "calibrate --onnx {d}/m.onnx --data {d}/unlabelled.tsv "
     "--samples 16 --auto-fp16 --out {o}/q.onnx", "unlabelled"),
    ("eval: fractional JSONL label", "eval --onnx {d}/m.onnx --data {d}/fraction.jsonl", "unknown label 1.5"),
    ("export: regression head", "export --model {d}/regression --out {o}/x.onnx", "regression head"),
]


def run_case(env: dict, out: Path, argv: str):
    args = argv.format(d=env["d"], o=out, tsv=env["tsv"], model=env["model"]).split()
    r = runner.invoke(app, args)
    return r, [l for l in r.stderr.strip().splitlines() if l.strip()]


@pytest.mark.parametrize("case,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(env, tmp_path, case, argv, needle):
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(env["d"])
    r, lines = run_case(env, out, argv)
    assert r.exit_code == 2, (case, r.exit_code, r.stderr, r.stdout)
    assert len(lines) == 1 and needle in lines[0], (case, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    leftovers = [p.name for p in out.rglob("*") if p.is_file()]
    assert leftovers == [], (case, leftovers)
    assert _snapshot(env["d"]) == before  # nothing written beside the inputs, no input changed


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv,needles", [  # click's wording differs between releases: key words only
    (["calibrate", "--grups", "3"], ("No such option", "--grups")),
    (["calibrate", "--onnx", "m.onnx", "--samples", "abc"], ("Invalid value for '--samples'",)),
    (["bogus"], ("No such command", "bogus")),
    (["calibrate"], ("Missing option", "--onnx")),
    (["export", "--model", "m", "--out", ""], ("--out", "empty")),  # "" would be the current folder
    (["eval", "--onnx", "m.onnx", "--data", "d.tsv", "--json", " "], ("--json", "empty")),
])
def test_usage_errors_are_one_line_through_the_installed_entry_point(tmp_path, argv, needles):
    """Typer/click's own usage errors (unknown option, bad type, missing option) — not only qbert's — are one
    line and exit 2; typer would print a framed multi-line box. Run as the `qbert` script runs: through main()."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "qbert.cli", *argv], capture_output=True, text=True, cwd=tmp_path)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(n in lines[0] for n in needles), r.stderr
    assert r.stdout == "" and list(tmp_path.iterdir()) == []
    ok = subprocess.run([sys.executable, "-m", "qbert.cli", "calibrate", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--groups" in ok.stdout


def test_the_bad_input_page_lists_every_case():
    """docs/bad-input.md is generated from these tables (`python -m tests.bad_input_page docs/bad-input.md`):
    a case added without regenerating it fails here."""
    from tests.bad_input_page import listed_tables

    page = (Path(__file__).resolve().parents[1] / "docs" / "bad-input.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| ").replace("\\|", "|") for line in page.splitlines() if line.startswith("| ")}
    missing = [c[0] for c in CASES if c[0] not in rows]
    missing += [case for _, cases in listed_tables() for case, _ in cases if case not in rows]
    assert not missing, f"docs/bad-input.md lacks: {missing[:5]} — regenerate it"
