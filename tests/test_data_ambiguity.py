"""Data that can be read more than one way is refused in one line, never read by guess; what only looks odd (a
byte-order mark, Windows line ends, an unnamed or repeated column nobody reads, one text under both its names)
simply works."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from qbert.cli import app
from qbert.data import load_dataset_spec, rows_dataset
from qbert.errors import QbertError

L2I = {"entailment": 0, "not_entailment": 1}
H = "index\tquestion\tsentence\tlabel\n"

# (case, file name, content, needles of the one-line error)
AMBIGUOUS = [
    ("TSV: two sentence columns", "d.tsv", "question\tsentence\tsentence\tlabel\nq?\ts1\ts2\tentailment\n",
     ("'sentence'", "2 times")),
    ("TSV: a column named twice up to case and spaces", "d.tsv",
     "question\tsentence\t Question \tlabel\nq?\ts\tq2?\tentailment\n", ("'question'", "2 times")),
    ("TSV: two label columns", "d.tsv", "question\tsentence\tlabel\tlabel\nq?\ts\tentailment\tnot_entailment\n",
     ("'label'", "2 times")),
    ("TSV: labels under another name", "d.tsv", "question\tsentence\tgold_label\nq?\ts\tentailment\n",
     ("'gold_label' looks like one", "rename it to 'label'")),
    ("TSV: question and sentence1 both given", "d.tsv",
     "question\tsentence1\tsentence\tlabel\nq?\tq2?\ts\tentailment\n", ("'question'", "'sentence1'")),
    ("TSV: sentence and sentence2 both given", "d.tsv",
     "question\tsentence\tsentence2\tlabel\nq?\ts\ts2\tentailment\n", ("'sentence'", "'sentence2'")),
    ("TSV: a label column partly empty", "d.tsv", H + "0\tq?\ts\tentailment\n1\tq?\ts\t\n2\tq?\ts\tentailment\n",
     ("d.tsv:3", "no label")),
    ("JSONL: a key given twice in one object", "d.jsonl",
     '{"question": "a?", "question": "b?", "sentence": "s", "label": 0}\n', ("d.jsonl:1", "'question'", "twice")),
    ("JSONL: question and sentence1 with different text", "d.jsonl",
     '{"question": "a?", "sentence1": "b?", "sentence": "s", "label": 0}\n', ("d.jsonl:1", "'question'", "'sentence1'")),
    ("JSONL: sentence and sentence2 with different text", "d.jsonl",
     '{"question": "a?", "sentence": "s", "sentence2": "t", "label": 0}\n', ("d.jsonl:1", "'sentence'", "'sentence2'")),
    ("JSONL: a label on some rows only", "d.jsonl",
     '{"question": "a?", "sentence": "s", "label": 0}\n{"question": "b?", "sentence": "t"}\n', ("d.jsonl:2", "no label")),
    ("JSONL: a null label among labelled rows", "d.jsonl",
     '{"question": "a?", "sentence": "s", "label": null}\n{"question": "b?", "sentence": "t", "label": 1}\n',
     ("d.jsonl:1", "no label")),
    ("TSV: label names and ids mixed", "d.tsv", H + "0\tq?\ts\tentailment\n1\tq?\ts\t0\n",
     ("d.tsv:3", "'0'", "d.tsv:2", "'entailment'", "mix names and ids")),
    ("TSV: ids first, then a name", "d.tsv", H + "0\tq?\ts\t1\n1\tq?\ts\t1\n2\tq?\ts\tnot_entailment\n",
     ("d.tsv:4", "'not_entailment'", "d.tsv:2", "mix names and ids")),
    ("JSONL: a name beside an integer id", "d.jsonl",
     '{"question": "a?", "sentence": "s", "label": "not_entailment"}\n'
     '{"question": "b?", "sentence": "t", "label": 0}\n',
     ("d.jsonl:2", "d.jsonl:1", "mix names and ids")),
]


@pytest.mark.parametrize("case,name,content,needles", AMBIGUOUS, ids=[c[0] for c in AMBIGUOUS])
def test_ambiguous_data_is_refused(tmp_path, case, name, content, needles):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(QbertError) as e:
        load_dataset_spec(str(p), L2I)
    assert all(n in str(e.value) for n in needles) and "\n" not in str(e.value), (case, str(e.value))


@pytest.mark.parametrize("rows,needle", [
    ([{"question": "a?", "sentence1": "b?", "sentence": "s", "label": 0}], "'sentence1'"),
    ([{"question": "a?", "sentence": "s", "label": 0}, {"question": "b?", "sentence": "t"}], "no label"),
    ([("a?", "s", 0), ("b?", "t", None)], "no label"),
    ([("a?", "s", "entailment"), ("b?", "t", 1)], "mix names and ids"),
], ids=["two names, two texts", "a dict without its label", "a tuple without its label", "names and ids mixed"])
def test_ambiguous_rows_in_memory_are_refused(rows, needle):
    with pytest.raises(QbertError, match=needle):
        rows_dataset(rows, L2I)


# (case, file name, content bytes, expected (first, second, label) of every row)
HARMLESS = [
    ("TSV with a byte-order mark before question", "d.tsv",
     "\ufeffquestion\tsentence\tlabel\nq?\ts\tentailment\n".encode(), [("q?", "s", 0)]),
    ("TSV with CRLF line ends", "d.tsv", H.replace("\n", "\r\n").encode() + b"0\tq?\ts\tnot_entailment\r\n",
     [("q?", "s", 1)]),
    ("TSV with an unnamed column", "d.tsv", b"question\tsentence\t\tlabel\nq?\ts\tx\tentailment\n", [("q?", "s", 0)]),
    ("TSV with a repeated column nobody reads", "d.tsv", b"idx\tquestion\tidx\tsentence\tlabel\n0\tq?\t0\ts\t1\n",
     [("q?", "s", 1)]),
    ("TSV with an empty label column", "d.tsv", (H + "0\tq?\ts\t\n1\tq2?\ts2\t\n").encode(),
     [("q?", "s", None), ("q2?", "s2", None)]),
    ("JSONL with CRLF line ends and a BOM", "d.jsonl",
     '\ufeff{"question": "q?", "sentence": "s", "label": 0}\r\n'.encode(), [("q?", "s", 0)]),
    ("JSONL with one text under both its names", "d.jsonl",
     b'{"question": "q?", "sentence1": "q?", "sentence": "s", "label": 1}\n', [("q?", "s", 1)]),
    ("TSV labelled with ids only", "d.tsv", (H + "0\tq?\ts\t1\n1\tq2?\ts2\t0\n").encode(),
     [("q?", "s", 1), ("q2?", "s2", 0)]),
    ("JSONL with integer and digit-string ids", "d.jsonl",
     b'{"question": "q?", "sentence": "s", "label": 1}\n{"question": "r?", "sentence": "t", "label": "0"}\n',
     [("q?", "s", 1), ("r?", "t", 0)]),
]


@pytest.mark.parametrize("case,name,content,rows", HARMLESS, ids=[c[0] for c in HARMLESS])
def test_harmless_quirks_are_read(tmp_path, case, name, content, rows):
    p = tmp_path / name
    p.write_bytes(content)
    ds = load_dataset_spec(str(p), L2I)
    assert [(e.first, e.second, e.label) for e in ds.examples] == rows, case


def test_calibration_reads_no_labels_so_a_partly_empty_label_column_is_fine(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text(H + "0\tq?\ts\tentailment\n1\tq2?\ts2\t\n")
    assert [e.label for e in load_dataset_spec(str(p), None).examples] == [None, None]


def test_the_cli_says_it_in_one_line(tiny_onnx, tmp_path):
    p = tmp_path / "dup.tsv"
    p.write_text("question\tsentence\tsentence\tlabel\nq?\ts1\ts2\tentailment\n")
    r = CliRunner().invoke(app, ["eval", "--onnx", str(tiny_onnx), "--data", str(p), "--json", str(tmp_path / "r.json")])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "'sentence'" in lines[0], r.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("name,text,needle", [
    ("gold.tsv", "question\tsentence\tgold\nq?\ts\tentailment\n", "'gold' looks like one"),
    ("cls.jsonl", '{"question": "q?", "sentence": "s", "class": "entailment"}\n', "'class' looks like one"),
    ("test.tsv", "question\tsentence\tlabel\nq?\ts\t-1\n", "label -1 marks an unlabelled row"),
], ids=["a TSV label column named gold", "a JSONL label key named class", "GLUE's -1 test labels"])
def test_labels_under_another_name_or_hidden_are_refused(tmp_path, name, text, needle):
    from qbert.data import load_dataset_spec

    (tmp_path / name).write_text(text)
    with pytest.raises(QbertError, match=needle):
        load_dataset_spec(str(tmp_path / name), {"entailment": 0, "not_entailment": 1})
