"""The real stand-in model (../shared): export and accuracy on a subset of the held-out split."""
import pytest

from qbert.engines import open_engine
from qbert.eval.accuracy import evaluate
from qbert.eval.data import load_dataset_spec
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
    result = evaluate(open_engine("ort-cpu", str(fixture_onnx)), ds, tok, batch_size=32)
    assert result["examples"] == 400
    assert result["accuracy"] > 0.70
