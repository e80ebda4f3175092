import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from qbert.atomic import sha256_file, sidecar_path
from qbert.data import Dataset, Example
from qbert.encoding import batches, encode
from qbert.exporter.export import export
from qbert.exporter.hf import load_classifier
from tests.conftest import sentence


def test_graph_is_clean_opset17_with_fused_layernorm(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert ops["LayerNormalization"] == 2 * 2 + 1  # two per layer + embeddings
    for junk in ("IsNaN", "Where", "GatherND", "Dropout", "ConstantOfShape", "Expand"):
        assert ops[junk] == 0, junk
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    weights = {t.name for t in model.graph.initializer}
    assert "layer.1.output.dense.weight" in weights and "layer.0.attention.self.query.weight" in weights


def test_parity_with_torch_on_varied_shapes(tiny_model, tiny_onnx):
    import random

    hf, tok = load_classifier(str(tiny_model))
    rng = random.Random(1)
    ds = Dataset([Example(sentence(rng, rng.randint(2, 6)), sentence(rng, rng.randint(3, 40)), 0)
                  for _ in range(13)], "mem")
    enc = encode(ds, tok, 64)
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    worst = 0.0
    for _, feeds in batches(enc, 5):
        got = sess.run(["logits"], feeds)[0]
        with torch.no_grad():
            ref = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst < 1e-4


def test_sidecar_records_what_later_commands_need(tiny_model, tiny_onnx):
    meta = json.loads(sidecar_path(tiny_onnx).read_text())
    assert meta["sha256"] == sha256_file(tiny_onnx)
    assert meta["label2id"] == {"entailment": 0, "not_entailment": 1}
    assert meta["tokenizer"] == str(tiny_model.resolve())
    assert meta["parity"]["max_abs_logit_diff"] <= meta["parity"]["tolerance"] == 1e-4
    assert meta["opset"] == 17 and meta["num_layers"] == 2 and meta["hidden_size"] == 32
    assert "torch" in meta["versions"] and "onnxruntime" in meta["versions"]


def test_parity_failure_leaves_no_file(tiny_model, tmp_path):
    from qbert.errors import QbertError

    out = tmp_path / "m.onnx"
    with pytest.raises(QbertError, match="parity check failed"):
        export(str(tiny_model), out, tolerance=0.0 - 1.0)
    assert list(tmp_path.iterdir()) == []


def test_a_short_max_length_does_not_make_the_tokenizer_look_broken(tiny_model, tmp_path):
    """The unknown-token check reads whole sentences: three positions hold no word, which is no broken tokenizer."""
    side = export(str(tiny_model), tmp_path / "m3.onnx", max_length=3)
    assert side.max_length == 3
