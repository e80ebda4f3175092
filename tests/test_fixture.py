"""The real stand-in model (../shared): export and accuracy on a subset of the held-out split."""
import pytest

from qbert.engines import open_engine
from qbert.eval.accuracy import evaluate
from qbert.data import load_dataset_spec
from qbert.exporter.hf import load_tokenizer
from tests.conftest import EVAL_TSV, FIXTURE, requires_fixture

pytestmark = [requires_fixture, pytest.mark.fixture]


@pytest.fixture(scope="session")
def fixture_onnx(tmp_path_factory):
    from qbert.exporter.export import export

    out = tmp_path_factory.mktemp("fixture") / "minilm.onnx"
    export(str(FIXTURE), out)
    return out


def test_fixture_accuracy_on_eval_subset(fixture_onnx):
    tok = load_tokenizer(str(FIXTURE))
    ds = load_dataset_spec(str(EVAL_TSV), {"entailment": 0, "not_entailment": 1}, limit=400)
    result = evaluate(open_engine("ort-cpu", str(fixture_onnx)), ds, tok, batch_size=32, max_length=128)
    assert result["examples"] == 400
    assert result["accuracy"] > 0.70


def test_peg_k4_permuted_at_least_naive_minmax_full(fixture_onnx, tmp_path):
    """The study's claim on the real model: PEG K=4 recovers what naive W8A8 (full placement) loses."""
    import onnx

    from qbert.artifacts import load_meta
    from tests.helpers.calibration import calibrate
    from qbert.calibration.emit import emit
    from tests.conftest import TUNE_TSV

    model, meta = onnx.load(str(fixture_onnx)), load_meta(fixture_onnx)
    tok = load_tokenizer(str(FIXTURE))
    ds = load_dataset_spec(str(EVAL_TSV), meta.label2id, limit=300)
    acc = {}
    for name, kw in {"minmax": dict(method="minmax"), "peg": dict(method="peg", groups=4)}.items():
        recipe = calibrate(fixture_onnx, meta, model, str(TUNE_TSV), placement="full", samples=128, **kw)
        q, _ = emit(model, recipe, "ort-cpu")
        path = tmp_path / f"{name}.onnx"
        onnx.save(q, str(path))
        acc[name] = evaluate(open_engine("ort-cpu", str(path)), ds, tok, max_length=meta.max_length)["accuracy"]
    assert acc["peg"] >= acc["minmax"]
    assert acc["minmax"] < 0.70  # naive W8A8 collapses on this model, as in the study
