import pytest

from qbert.errors import QbertError
from qbert.data import load_dataset_spec
from qbert.encoding import encode, batches

L2I = {"entailment": 0, "not_entailment": 1}


def test_tsv_keeps_stray_quotes_and_maps_labels(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text('index\tquestion\tsentence\tlabel\n'
                 '0\tWhat?\t" The quote opens but never closes.\tentailment\n'
                 '1\tWho?\tPlain "quoted" text\tnot_entailment\n'
                 '2\tHow?\tLabels by name\tnot_entailment\n')
    ds = load_dataset_spec(str(p), L2I)
    assert [e.second for e in ds.examples][:2] == ['" The quote opens but never closes.', 'Plain "quoted" text']
    assert ds.labels.tolist() == [0, 1, 1]
    assert ds.label_names == ["entailment", "not_entailment"]


def test_jsonl_and_limit(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"question": "a?", "sentence": "b", "label": "not_entailment"}\n\n'
                 '{"sentence1": "c?", "sentence2": "d", "label": "entailment"}\n'
                 '{"question": "e?", "sentence": "f", "label": "entailment"}\n')
    ds = load_dataset_spec(str(p), L2I)
    assert ds.labels.tolist() == [1, 0, 0]  # a row without its label among labelled ones: test_data_ambiguity
    assert len(load_dataset_spec(str(p), L2I, limit=2).examples) == 2


@pytest.mark.parametrize("content,message", [
    ("index\tquestion\tsentence\tlabel\n0\tq\ts\tentailment\textra\n", "expected 4 tab-separated fields"),
    ("index\tquestion\tlabel\n0\tq\tentailment\n", "header must name"),
    ("index\tquestion\tsentence\tlabel\n0\tq\ts\tmaybe\n", "unknown label 'maybe'"),
    ("", "is empty"),
    ("index\tquestion\tsentence\tlabel\n", "has no rows"),
])
def test_malformed_tsv(tmp_path, content, message):
    p = tmp_path / "bad.tsv"
    p.write_text(content)
    with pytest.raises(QbertError, match=message):
        load_dataset_spec(str(p), L2I)


def test_non_utf8_and_missing(tmp_path):
    p = tmp_path / "latin.tsv"
    p.write_bytes(b"index\tquestion\tsentence\tlabel\n0\tq\tcaf\xe9\tentailment\n")
    with pytest.raises(QbertError, match="not UTF-8"):
        load_dataset_spec(str(p), L2I)
    with pytest.raises(QbertError, match="not found"):
        load_dataset_spec(str(tmp_path / "nope.tsv"), L2I)


def test_batches_are_length_sorted_and_cover_every_row(tiny_model, tiny_tsv):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    ds = load_dataset_spec(str(tiny_tsv), L2I)
    enc = encode(ds, tok, max_length=16)
    seen, widths = [], []
    for idx, feeds in batches(enc, 10):
        seen.extend(idx.tolist())
        widths.append(feeds["input_ids"].shape[1])
        assert (feeds["attention_mask"].sum(1) == enc.lengths[idx]).all()
    assert sorted(seen) == list(range(len(ds.examples)))
    assert widths == sorted(widths) and max(widths) <= 16
