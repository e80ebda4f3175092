"""Cosine similarity of sentence embeddings (numpy only): nearest neighbours, and how far a quantized model's
embeddings agree with its FP32 model's — what `qbert eval` reports for an embedding model and what method auto
and auto mixed precision judge one by.

Similarities are computed in blocks of queries, so memory stays at block × corpus floats whatever the data size.
Ties (equal cosines) are broken by corpus order.
"""
from __future__ import annotations

import numpy as np

BLOCK = 1024  # queries per similarity block


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (cosine = dot product); a zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    """[queries, min(k, corpus)] corpus indices, most similar first (cosine)."""
    q, c = unit(queries), unit(corpus)
    k = min(k, len(c))
    out = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), BLOCK):
        sims = q[start:start + BLOCK] @ c.T
        # stable sort of −similarity: ties keep corpus order, so the ranking is reproducible
        out[start:start + BLOCK] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [n, d] embedding matrices."""
    return (unit(a) * unit(b)).sum(axis=1)


def neighbours_kept(queries: np.ndarray, corpus: np.ndarray, ref_queries: np.ndarray, ref_corpus: np.ndarray,
                    k: int = 10) -> float:
    """Per query, |top-k of the model ∩ top-k of the reference| / k, averaged (k capped at the corpus size)."""
    ours, theirs = top_k(queries, corpus, k), top_k(ref_queries, ref_corpus, k)
    kept = [len(set(a.tolist()) & set(b.tolist())) / ours.shape[1] for a, b in zip(ours, theirs)]
    return float(np.mean(kept)) if kept else 1.0


def kept_each(queries: np.ndarray, corpus: np.ndarray, ref_queries: np.ndarray, ref_corpus: np.ndarray,
              k: int = 10, exclude_self: bool = False) -> np.ndarray:
    """Per query, |top-k of the model ∩ top-k of the reference| / k. `exclude_self`: queries are the corpus
    itself (row i is corpus item i), and each one's own entry is not a neighbour."""
    extra = 1 if exclude_self else 0
    ours, theirs = top_k(queries, corpus, k + extra), top_k(ref_queries, ref_corpus, k + extra)
    if exclude_self:
        ours = np.array([[j for j in row if j != i][:k] for i, row in enumerate(ours)])
        theirs = np.array([[j for j in row if j != i][:k] for i, row in enumerate(theirs)])
    if ours.size == 0:
        return np.ones(len(queries))
    return np.array([len(set(a.tolist()) & set(b.tolist())) / ours.shape[1] for a, b in zip(ours, theirs)])
