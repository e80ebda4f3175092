"""Sentence-pair data: GLUE QNLI from `datasets`, local GLUE TSV / JSONL files, or rows given in memory — read,
checked (one line naming the row and column at fault) and labelled with the model's ids. Tokenizing and
batching: encoding.py."""
from __future__ import annotations

import csv
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from qbert.errors import ConfigError, QbertError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Example:
    first: str
    second: str
    label: int | None  # None when the source has no labels (test splits)


@dataclass
class Dataset:
    """Raw examples plus where they came from (hashed, so recipes can record their calibration data)."""

    examples: list[Example]
    source: str
    label_names: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([-1 if e.label is None else e.label for e in self.examples], dtype=np.int64)

    def sha256(self) -> str:
        h = hashlib.sha256()
        for e in self.examples:
            h.update(f"{e.first}\t{e.second}\t{e.label}\n".encode())
        return h.hexdigest()

    def sentences(self) -> list[str]:
        """Every distinct text, both sides of each pair, in order of first appearance: what an embedding model
        encodes (one sentence at a time, never a pair)."""
        return list(dict.fromkeys(t for e in self.examples for t in (e.first, e.second)))

    def head(self, n: int | None) -> "Dataset":
        return self if n is None else Dataset(self.examples[:n], self.source, self.label_names)

    def require_labels(self, why: str) -> "Dataset":
        """Stop with one line where a step needs labels and the data has none (never score them as wrong)."""
        missing = sum(e.label is None for e in self.examples)
        if missing:
            raise QbertError(f"{why}, but {self.source} has {missing} unlabelled row(s); give labelled data")
        return self


def label_map(model_label2id: Mapping[str, int], labels: str | None = None) -> dict[str, int]:
    """The data's label names → the model's class ids: the model's own `label2id`, or `labels`
    ("entailment,not_entailment", names in id order) for checkpoints saved with HF's LABEL_0/LABEL_1."""
    if not labels:
        return dict(model_label2id)
    names = [n.strip() for n in labels.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError("labels", labels, "expected distinct comma-separated names in id order, "
                          "e.g. entailment,not_entailment")
    if model_label2id and len(names) != len(model_label2id):
        raise ConfigError("labels", labels, f"names {len(names)} classes but the model has {len(model_label2id)}")
    return {n: i for i, n in enumerate(names)}


def load_dataset_spec(spec: str, label2id: Mapping[str, int] | None, limit: int | None = None) -> Dataset:
    """`glue/qnli[:split]` (Hugging Face `datasets`), or a path to a `.tsv` or `.jsonl` file.

    `label2id=None` reads no labels at all (calibration needs none, so unlabelled or differently labelled
    data works there); otherwise every label must map to one of the model's classes."""
    path = Path(spec)
    if path.suffix.lower() in (".tsv", ".jsonl", ".json") or path.exists():
        if path.is_dir():
            raise QbertError(f"data {path} is a folder; give a .tsv or .jsonl file")
        if path.exists() and not path.is_file():  # read more than once (hashed, then parsed), so never a pipe
            raise QbertError(f"data {path} is not a regular file (a pipe or device); give a .tsv or .jsonl file")
        if not path.is_file():
            raise QbertError(f"data file {path} not found")
        if path.stat().st_size == 0:
            raise QbertError(f"data file {path} is empty")
        reader = _read_jsonl if path.suffix.lower() in (".jsonl", ".json") else _read_tsv
        try:
            examples = reader(path, label2id, limit)
        except OSError as e:
            raise QbertError(f"cannot read data file {path} ({e.strerror}); check its permissions") from None
    elif "/" in spec and not spec.startswith((".", "/")):
        examples = _read_hub(spec, label2id, limit)
    else:
        raise QbertError(f"data {spec!r}: expected a .tsv/.jsonl file or a hub spec like glue/qnli")
    if not examples:
        raise QbertError(f"data {spec} has no rows")
    return Dataset(examples, spec, sorted(label2id, key=label2id.get) if label2id else [])


def rows_dataset(rows: list[Any], label2id: Mapping[str, int] | None, source: str = "<rows>") -> Dataset:
    """In-memory rows: `{"question"/"sentence1", "sentence"/"sentence2", "label"}` dicts or
    `(first, second[, label])` tuples; labels mapped as in files (`label2id=None` reads none)."""
    examples, unlabelled, labels = [], [], _Labels(label2id)
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            first, second = (_field(row, *names, f"{source}[{i}]") for names in SYNONYMS)
            raw = row.get("label")
        elif isinstance(row, (list, tuple)) and len(row) in (2, 3):
            first, second, raw = row[0], row[1], row[2] if len(row) == 3 else None
        else:
            raise QbertError(f"{source}[{i}]: expected a dict or a (first, second[, label]) tuple")
        if not isinstance(first, str) or not isinstance(second, str):
            raise QbertError(f"{source}[{i}]: needs two strings (question and sentence)")
        if isinstance(row, (list, tuple)) and len(row) == 2 and label2id and second in label2id:
            raise QbertError(f"{source}[{i}]: {second!r} would be read as the second sentence, but it is a label "
                             "name; give (question, sentence, label), or a dict")
        _has_text(first, second, f"{source}[{i}]")
        examples.append(Example(first, second, labels(raw, f"{source}[{i}]")))
        if examples[-1].label is None:
            unlabelled.append(f"{source}[{i}]")
    if not examples:
        raise QbertError(f"{source}: no rows")
    _all_or_none_labelled(examples, unlabelled, label2id)
    return Dataset(examples, source, sorted(label2id, key=label2id.get) if label2id else [])


def _has_text(first: str, second: str, where: str) -> None:
    """A row with no text at all is a hole in the data, not a sentence pair: scoring it would count a guess."""
    if not first.strip() and not second.strip():
        raise QbertError(f"{where}: both texts are empty; remove the row")


SYNONYMS = (("question", "sentence1"), ("sentence", "sentence2"))  # two names for each text of a pair
TSV_COLUMNS = ("question", "sentence1", "sentence", "sentence2", "label")


def _field(obj: Mapping[str, Any], name: str, other: str, where: str) -> Any:
    """A text under either of its names; both, with different text, is ambiguous."""
    if name in obj and other in obj and obj[name] != obj[other]:
        raise QbertError(f"{where}: both {name!r} and {other!r} are given, with different text; which is meant is "
                         "ambiguous — keep one")
    return obj.get(name, obj.get(other))


def _all_or_none_labelled(examples: list[Example], unlabelled: list[str], label2id: Mapping[str, int] | None) -> None:
    """Labels on some rows only: accuracy would quietly cover a subset nobody chose (a blank may be a lost label)."""
    if label2id is not None and unlabelled and len(unlabelled) < len(examples):
        raise QbertError(f"{unlabelled[0]}: no label, while {len(examples) - len(unlabelled)} other row(s) have one; "
                         "label every row, or none (leave the label out)")


def _check_header(path: Path, names: list[str]) -> None:
    """A column the reader uses named twice, or a text under both its names: which one is meant is ambiguous.
    Unnamed or repeated columns nobody reads are left alone."""
    for name in TSV_COLUMNS:
        if names.count(name) > 1:
            raise QbertError(f"{path}: the header names column {name!r} {names.count(name)} times; which one is "
                             "meant is ambiguous — rename or remove the others")
    for name, other in SYNONYMS:
        if name in names and other in names:
            raise QbertError(f"{path}: the header has both {name!r} and {other!r} columns (two names for one "
                             "text); keep one")
    _no_label_lookalike(names, path, "column")


LABEL_LIKE = ("label", "gold", "class", "target", "answer")  # names a label column goes by elsewhere


def _no_label_lookalike(names: Iterable[str], where: Any, what: str) -> None:
    """Data without a `label` field is read as unlabelled (accuracy n/a, exit 0): refuse that when a field under
    another name looks like the labels, which would otherwise be silently unread."""
    names = list(names)
    guesses = [n for n in names if n != "label" and any(w in n.lower() for w in LABEL_LIKE)]
    if "label" not in names and guesses:
        raise QbertError(f"{where}: no 'label' {what}, but {guesses[0]!r} looks like one; rename it to 'label' "
                         "(or drop it to read the rows as unlabelled)")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a key given twice in one object (json would silently keep the last)."""
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise _DuplicateKey(k)
    return dict(pairs)


class _Labels:
    """Maps one source's labels, given all as names or all as ids: a file mixing `entailment` with `0` was most
    likely relabelled halfway (or joined from two sources), and which scheme its ids follow is a guess."""

    def __init__(self, label2id: Mapping[str, int] | None):
        self.label2id = label2id
        self.first: dict[str, tuple[str, Any]] = {}  # "name"/"id" → where that kind first appears, and the label

    def __call__(self, raw: str | int | None, where: str) -> int | None:
        value = _label(raw, self.label2id, where)
        if value is None:
            return None
        form = "name" if isinstance(raw, str) and raw in self.label2id else "id"
        self.first.setdefault(form, (where, raw))
        if len(self.first) > 1:
            other = "id" if form == "name" else "name"
            seen, label = self.first[other]
            raise QbertError(f"{where}: label {raw!r} is a class {form}, while {seen} gives the class {other} "
                             f"{label!r}; labels mix names and ids — write every label as a name, or every one "
                             "as an id")
        return value


def _label(raw: str | int | None, label2id: Mapping[str, int] | None, where: str) -> int | None:
    if raw is None or raw == "" or label2id is None:
        return None
    if isinstance(raw, str) and raw in label2id:
        return label2id[raw]
    value = None  # an id: an int, or a string of digits; never a bool or a fraction cast down silently
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        value = int(raw)
    if value is not None and value in label2id.values():
        return value
    if value == -1:  # GLUE's test splits mark their hidden labels so
        raise QbertError(f"{where}: label -1 marks an unlabelled row (GLUE test splits hide their labels); drop the "
                         "label column (or those rows) to read the data as unlabelled")
    raise QbertError(f"{where}: unknown label {raw!r}; the model knows {sorted(label2id, key=label2id.get)} — "
                     "map the data's labels to the model's ids with {labels=} (in id order)", labels="NAME0,NAME1")


def _read_tsv(path: Path, label2id: Mapping[str, int] | None, limit: int | None) -> list[Example]:
    """GLUE TSV: header with `question`/`sentence` (or `sentence1`/`sentence2`) and optional `label`.

    Quoting is off: QNLI has sentences that start with a stray `"` which csv's default would swallow.
    """
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # a byte-order mark is not part of the header
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows, None)
            if not header:
                raise QbertError(f"{path} is empty")
            names = [name.strip().lower() for name in header]
            if len(names) == 1 and "," in names[0]:
                raise QbertError(f"{path}: the header is one column with commas ({header[0][:60]!r}); qbert reads "
                                 "tab-separated files — convert it (or give JSONL)")
            _check_header(path, names)
            cols = {name: i for i, name in enumerate(names)}
            first_col = cols.get("question", cols.get("sentence1"))
            second_col = cols.get("sentence", cols.get("sentence2"))
            if first_col is None or second_col is None:
                raise QbertError(f"{path}: header must name question+sentence (or sentence1+sentence2) "
                                 f"columns, found {header}")
            label_col = cols.get("label")
            out: list[Example] = []
            unlabelled: list[str] = []
            labels = _Labels(label2id)
            for lineno, row in enumerate(rows, start=2):
                if limit is not None and len(out) >= limit:
                    break
                if not row:
                    continue
                if len(row) != len(header):
                    raise QbertError(f"{path}:{lineno}: expected {len(header)} tab-separated fields, "
                                     f"found {len(row)}")
                label = labels(row[label_col], f"{path}:{lineno}") if label_col is not None else None
                _has_text(row[first_col], row[second_col], f"{path}:{lineno}")
                out.append(Example(row[first_col], row[second_col], label))
                if label is None:
                    unlabelled.append(f"{path}:{lineno}")
    except UnicodeDecodeError as e:
        raise QbertError(f"{path} is not UTF-8 text (byte {e.start}); re-encode it as UTF-8") from None
    _all_or_none_labelled(out, unlabelled, label2id)
    return out


def _read_jsonl(path: Path, label2id: Mapping[str, int] | None, limit: int | None) -> list[Example]:
    """One JSON object per line with question/sentence (or sentence1/sentence2) and label."""
    out: list[Example] = []
    unlabelled: list[str] = []
    labels = _Labels(label2id)
    try:
        with path.open(encoding="utf-8-sig") as f:  # a BOM is accepted, as in TSV
            for lineno, line in enumerate(f, start=1):
                if limit is not None and len(out) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line, object_pairs_hook=_unique_keys)
                except _DuplicateKey as e:
                    raise QbertError(f"{path}:{lineno}: key {e.args[0]!r} is given twice in one object; which value "
                                     "is meant is ambiguous — keep one") from None
                except json.JSONDecodeError:
                    obj = None
                if not isinstance(obj, dict):
                    raise QbertError(f"{path}:{lineno}: not a JSON object; JSONL data needs one object per "
                                     "line with question/sentence (or sentence1/sentence2) and label")
                first, second = (_field(obj, *names, f"{path}:{lineno}") for names in SYNONYMS)
                if not isinstance(first, str) or not isinstance(second, str):
                    raise QbertError(f"{path}:{lineno}: needs string fields question+sentence "
                                     "(or sentence1+sentence2)")
                if not out:
                    _no_label_lookalike(obj, f"{path}:{lineno}", "key")
                _has_text(first, second, f"{path}:{lineno}")
                out.append(Example(first, second, labels(obj.get("label"), f"{path}:{lineno}")))
                if out[-1].label is None:
                    unlabelled.append(f"{path}:{lineno}")
    except UnicodeDecodeError as e:
        raise QbertError(f"{path} is not UTF-8 text (byte {e.start}); re-encode it as UTF-8") from None
    _all_or_none_labelled(out, unlabelled, label2id)
    return out


def _read_hub(spec: str, label2id: Mapping[str, int] | None, limit: int | None) -> list[Example]:
    """`glue/qnli` or `glue/qnli:train` through Hugging Face `datasets` (needs the network once)."""
    name, _, split = spec.partition(":")
    repo, _, config = name.partition("/")
    try:
        import datasets

        ds = datasets.load_dataset(repo, config or None, split=split or "validation")
    except Exception as e:  # datasets raises many types for offline/missing cases
        raise QbertError(f"could not load {spec!r} with datasets ({e.__class__.__name__}); "
                         "without network access pass a local .tsv/.jsonl path instead") from None
    first_key = "question" if "question" in ds.column_names else "sentence1"
    second_key = "sentence" if "sentence" in ds.column_names else "sentence2"
    names = ds.features["label"].names if hasattr(ds.features.get("label"), "names") else None
    out, labels = [], _Labels(label2id)
    for row in ds.select(range(min(limit, len(ds)))) if limit else ds:
        raw = row.get("label")
        raw = names[raw] if names is not None and raw is not None and raw >= 0 else (None if raw == -1 else raw)
        out.append(Example(row[first_key], row[second_key], labels(raw, spec)))
    return out
