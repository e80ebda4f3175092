"""Folding the PEG channel permutation into weights, so no gather runs at inference.

The residual stream (embedding outputs, every LayerNorm output, every residual sum) is put in one channel
order π: embedding tables' columns, LayerNorm γ/β, and the output columns/bias of the GEMMs that write the
stream (attention output, FFN2) are permuted; the GEMMs that read it (Q/K/V, FFN1, pooler) have their input
rows permuted. LayerNorm statistics do not depend on channel order, so the network computes exactly the same
function with every stream tensor permuted — and each PEG group becomes a contiguous channel slice.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import numpy_helper

from qbert.exporter.graph import BertGraph


class Initializers:
    """Copy-on-write access to initializers (exporters may share one tensor between several nodes)."""

    def __init__(self, model: Any):
        self.model = model
        self.by_name = {t.name: t for t in model.graph.initializer}

    def get(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.by_name[name])

    def add(self, name: str, array: np.ndarray) -> str:
        base, n = name, 1
        while name in self.by_name:
            name, n = f"{base}.{n}", n + 1
        t = numpy_helper.from_array(np.asarray(array, order="C"), name)  # keeps rank-0 scalars rank 0
        self.model.graph.initializer.append(t)
        self.by_name[name] = t
        return name

    def replace_input(self, node: Any, index: int, array: np.ndarray, suffix: str) -> str:
        old = node.input[index]
        name = self.add(old + suffix, array)
        node.input[index] = name
        if not any(old in n.input for n in self.model.graph.node):  # free the original right away
            inits = self.model.graph.initializer
            del inits[next(i for i, t in enumerate(inits) if t.name == old)]
            del self.by_name[old]
        return name


def fold_stream_permutation(graph: BertGraph, perm: np.ndarray, inits: Initializers) -> None:
    perm = np.asarray(perm, dtype=np.int64)
    for node in graph.model.graph.node:  # embedding tables: [vocab, d] → permute columns
        if node.op_type == "Gather" and node.name.startswith("/embeddings/") and node.input[0] in inits.by_name:
            table = inits.get(node.input[0])
            if table.ndim == 2 and table.shape[1] == len(perm):
                inits.replace_input(node, 0, table[:, perm], ".perm")
    lns = [graph.emb_ln] + [ln for l in graph.layers for ln in (l.ln_attn, l.ln_out)]
    for ln in lns:
        for idx in (1, 2):
            if len(ln.input) > idx and ln.input[idx]:
                inits.replace_input(ln, idx, inits.get(ln.input[idx])[perm], ".perm")
    for layer in graph.layers:
        for role in ("query", "key", "value", "ffn1"):  # readers: permute input rows of W [in, out]
            lin = layer.linears[role]
            inits.replace_input(lin.node, 1, inits.get(lin.weight)[perm, :], ".perm")
            lin.weight = lin.node.input[1]
        for role in ("attn_out", "ffn2"):  # writers: permute output columns and bias
            lin = layer.linears[role]
            inits.replace_input(lin.node, 1, inits.get(lin.weight)[:, perm], ".perm")
            lin.weight = lin.node.input[1]
            b_idx = list(lin.bias_node.input).index(lin.bias)
            lin.bias = inits.replace_input(lin.bias_node, b_idx, inits.get(lin.bias)[perm], ".perm")
    head = graph.heads[0]  # pooler (BERT) / dense (RoBERTa head) reads the first token of the stream
    w = inits.get(head.input[1])
    trans_b = next((a.i for a in head.attribute if a.name == "transB"), 0)
    inits.replace_input(head, 1, w[:, perm] if trans_b else w[perm, :], ".perm")
