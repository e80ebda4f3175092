"""What `evaluate` measures on a sentence-embedding model: retrieval where the data says which passage answers
which question, and — label-free, always — agreement with the FP32 model the quantized one came from.

Every distinct sentence of the data (questions and passages) is embedded once, one sentence at a time.

- Retrieval (QNLI-style pair files): the queries are the questions of the rows labelled entailment (label name
  `entailment`, or id 0, GLUE's id for it); the corpus is every distinct `sentence` of the file; a query's
  relevant passages are the sentences of its entailment rows. Scored by cosine similarity (retrieval.py).
  Unlabelled data, or data with no entailment row, gets no retrieval score and a line saying why.
- Agreement (a Q/DQ ONNX): its sidecar names the FP32 ONNX it was quantized from, which runs on ONNX Runtime on
  the same sentences; reported are the mean and worst cosine between the two models' embeddings and, with every
  distinct question as a query against every distinct passage, the share of FP32's top-10 neighbours kept. An FP32
  model agrees with itself by definition, so nothing is computed for it.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from qbert.data import Dataset
from qbert.encoding import encode_texts
from qbert.engines.base import Engine
from qbert.eval.accuracy import predict
from qbert.eval.retrieval import retrieval_scores
from qbert.similarity import cosines, neighbours_kept
from qbert.machine import machine

RELEVANT = "entailment"  # the label that marks a passage answering its question
RETRIEVAL_LABELS = {"entailment": 0, "not_entailment": 1}  # GLUE QNLI's names and ids (id 0: entailment)


def retrieval_task(dataset: Dataset, texts: list[str]) -> tuple[list[int], list[int], list[set[int]], str | None]:
    """(query text indices, corpus text indices, relevant corpus positions per query, why none) from the pairs."""
    index = {t: i for i, t in enumerate(texts)}
    corpus = list(dict.fromkeys(index[e.second] for e in dataset.examples))
    where = {t: k for k, t in enumerate(corpus)}
    relevant_id = dict(zip(dataset.label_names, range(len(dataset.label_names)))).get(RELEVANT)
    if all(e.label is None for e in dataset.examples):
        return [], corpus, [], f"{dataset.source} has no labels, so which passage answers which question is unknown"
    if relevant_id is None:
        return [], corpus, [], (f"no label is named {RELEVANT!r} (labels: {', '.join(dataset.label_names)}), so which "
                                "passage answers which question is unknown")
    answers: dict[int, set[int]] = {}
    for e in dataset.examples:
        if e.label == relevant_id:
            answers.setdefault(index[e.first], set()).add(where[index[e.second]])
    if not answers:
        return [], corpus, [], f"no row of {dataset.source} is labelled {RELEVANT}, so no question has an answer"
    return list(answers), corpus, list(answers.values()), None


def fp32_reference(meta: Any, onnx: str | Path | None) -> tuple[str | None, str | None]:
    """(the FP32 ONNX to compare with, or None; why not, or None). Only a Q/DQ model has one: its sidecar's
    `fp32_onnx`, which must still be the FP32 export of the same source model."""
    from qbert.artifacts import load_meta
    from qbert.errors import QbertError

    if meta is None or meta.kind != "qdq":
        return None, "an FP32 model: its agreement with FP32 is 1 by definition"
    path = Path(meta.fp32_onnx or "")
    if not meta.fp32_onnx or not path.is_file():
        return None, (f"the FP32 ONNX {onnx} was quantized from ({meta.fp32_onnx}) is not there (moved or deleted, or "
                      "recorded relative to another folder); agreement with FP32 was not measured")
    try:
        ref = load_meta(path)
    except QbertError as e:
        return None, f"{e}; agreement with FP32 was not measured"
    if ref.kind != "fp32" or ref.source_fingerprint != meta.source_fingerprint or ref.task != "embedding":
        return None, f"{path} is not the FP32 export {onnx} was quantized from; agreement with FP32 was not measured"
    return str(path), None


def embed_all(engine: Engine, texts: list[str], tokenizer: Any, batch_size: int, max_length: int,
              description: str) -> np.ndarray:
    encoded = encode_texts(texts, tokenizer, max_length)
    return predict(engine, encoded, batch_size, pad_id=int(tokenizer.pad_token_id or 0), description=description)


def evaluate_embeddings(engine: Engine, dataset: Dataset, tokenizer: Any, batch_size: int = 32, *, max_length: int,
                        reference: str | None = None, reference_note: str | None = None,
                        threads: int | None = None) -> dict[str, Any]:
    """Embed every distinct sentence with `engine` (and, given `reference`, with that FP32 ONNX on ONNX Runtime);
    score retrieval and agreement. `max_length`: the sidecar's, as for accuracy."""
    from qbert.engines import open_engine

    texts = dataset.sentences()
    t0 = time.perf_counter()
    emb = embed_all(engine, texts, tokenizer, batch_size, max_length, f"embed [{engine.name}]")
    seconds = time.perf_counter() - t0
    queries, corpus, relevant, why = retrieval_task(dataset, texts)
    retrieval = None
    if why is None:
        retrieval = {"queries": len(queries), "corpus": len(corpus), "relevant_label": RELEVANT,
                     "similarity": "cosine", **retrieval_scores(emb[queries], emb[corpus], relevant)}
    agreement = None
    if reference is not None:
        with open_engine("ort-cpu", reference, threads=threads) as fp32:
            ref = embed_all(fp32, texts, tokenizer, batch_size, max_length, "embed [FP32 reference]")
        index = {t: i for i, t in enumerate(texts)}
        questions = list(dict.fromkeys(index[e.first] for e in dataset.examples))
        cos = cosines(emb, ref)
        agreement = {"reference": reference, "reference_engine": "ort-cpu", "sentences": len(texts),
                     "mean_cosine": float(cos.mean()), "worst_cosine": float(cos.min()),
                     "top10_kept": neighbours_kept(emb[questions], emb[corpus], ref[questions], ref[corpus]),
                     "neighbour_queries": len(questions), "neighbour_corpus": len(corpus)}
    return {
        "task": "embedding",
        "examples": len(dataset.examples),
        "sentences": len(texts),
        "dim": int(emb.shape[1]),
        "retrieval": retrieval,
        "retrieval_note": None if why is None else f"retrieval not scored: {why}",
        "agreement": agreement,
        "agreement_note": reference_note if reference is None else None,
        "data": dataset.source,
        "data_sha256": dataset.sha256(),
        "embeddings_sha256": hashlib.sha256(emb.astype(np.float32).tobytes()).hexdigest(),
        "seconds": round(seconds, 2),
        "sentences_per_second": round(len(texts) / seconds, 1) if seconds else None,
        "batch_size": batch_size,
        "max_length": max_length,
        **{"engine": engine.name, "engine_info": engine.describe()},
        "machine": machine(),
    }
