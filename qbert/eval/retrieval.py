"""Retrieval and agreement metrics of sentence embeddings, by cosine similarity (numpy only).

- recall@k: per query, the share of its relevant passages among the k most similar (BEIR's definition; with one
  relevant passage per query, as in QNLI, whether it is in the top k), averaged over queries.
- MRR@10: 1 / rank of the first relevant passage within the top 10 (0 beyond), averaged.
- nDCG@10: binary relevance; DCG = Σ_{rank r ≤ 10, relevant} 1 / log2(r + 1), divided by the DCG of the ideal
  order (min(#relevant, 10) relevant passages first), averaged.
- agreement with FP32: cosine of each sentence's embedding with the FP32 model's (mean and worst), and per query
  the share of FP32's top-10 neighbours the quantized model still ranks in its own top 10, averaged.

Similarities, neighbours and the agreement with FP32: qbert/similarity.py (method auto judges embedding models
with them too).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from qbert.similarity import top_k


def retrieval_scores(queries: np.ndarray, corpus: np.ndarray, relevant: Sequence[set[int]]) -> dict[str, float]:
    """recall@1, recall@10, MRR@10 and nDCG@10 of `queries` against `corpus` embeddings; `relevant[i]` holds the
    corpus indices that answer query i (at least one each)."""
    if len(relevant) != len(queries) or any(not r for r in relevant):
        raise ValueError("every query needs at least one relevant passage")
    ranked = top_k(queries, corpus, 10)
    recall1, recall10, mrr, ndcg = [], [], [], []
    discount = 1.0 / np.log2(np.arange(2, ranked.shape[1] + 2))
    for row, rel in zip(ranked, relevant):
        hits = np.array([i in rel for i in row], dtype=bool)
        recall1.append(hits[:1].sum() / len(rel))
        recall10.append(hits.sum() / len(rel))
        first = np.flatnonzero(hits)
        mrr.append(1.0 / (first[0] + 1) if first.size else 0.0)
        ideal = discount[:min(len(rel), len(row))].sum()
        ndcg.append(float(discount[hits].sum() / ideal))
    return {"recall@1": float(np.mean(recall1)), "recall@10": float(np.mean(recall10)),
            "mrr@10": float(np.mean(mrr)), "ndcg@10": float(np.mean(ndcg))}
