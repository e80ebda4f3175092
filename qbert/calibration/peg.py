"""Folding the PEG channel permutation into weights, so no gather runs at inference.

The residual stream (embedding outputs, every LayerNorm output, every residual sum) is put in one channel
order π: embedding tables' columns, LayerNorm γ/β, and the output columns/bias of the GEMMs that write the
stream (attention output, FFN2) are permuted; the GEMMs that read it (Q/K/V, FFN1, pooler) have their input
rows permuted. LayerNorm statistics do not depend on channel order, so the network computes exactly the same
function with every stream tensor permuted — and each PEG group becomes a contiguous channel slice.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from onnx import numpy_helper

from qbert.exporter.graph import BertGraph


class Initializers:
    """Copy-on-write access to initializers (exporters may share one tensor between several nodes)."""

    def __init__(self, model: Any):
        self.model = model
        self.by_name = {t.name: t for t in model.graph.initializer}
        self.derived: dict[tuple[str, str], str] = {}  # (source, how) → the one derived copy

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

    def replace_input(self, node: Any, index: int, transform: Callable[[np.ndarray], np.ndarray], suffix: str) -> str:
        """Point `node.input[index]` at `transform` of its initializer. The same source transformed the same way
        (`suffix`) gives one shared copy — so weights one model shares across layers (ALBERT) stay shared."""
        old = node.input[index]
        key = (old, suffix)
        if key not in self.derived:
            self.derived[key] = self.add(old + suffix, transform(self.get(old)))
        name = node.input[index] = self.derived[key]
        if not any(old in n.input for n in self.model.graph.node):  # free the original right away
            inits = self.model.graph.initializer
            del inits[next(i for i, t in enumerate(inits) if t.name == old)]
            del self.by_name[old]
            # a derived copy freed here must be derived again, not handed out by name (a weight several layers
            # share, transformed the same way twice: zeroed outlier rows, then smoothed per layer)
            self.derived = {k: v for k, v in self.derived.items() if v != old}
        return name


def fold_stream_permutation(graph: BertGraph, perm: np.ndarray, inits: Initializers) -> None:
    """Put every stream tensor in channel order `perm`. Transforms name their direction in the suffix
    (`.perm` columns, `.permrows` rows), so a weight shared by several GEMMs (ALBERT) gets one permuted copy."""
    perm = np.asarray(perm, dtype=np.int64)
    cols = lambda w: w[..., perm]  # noqa: E731  output columns of a [in, out] weight, or a vector
    rows = lambda w: w[perm, :]  # noqa: E731  input rows
    if graph.emb_proj is not None:  # the stream starts at the projection: permute what it writes
        lin = graph.emb_proj
        lin.weight = inits.replace_input(lin.node, 1, cols, ".perm")
        lin.bias = inits.replace_input(lin.bias_node, list(lin.bias_node.input).index(lin.bias), cols, ".perm")
        stream_lns = []
    else:
        for node in graph.emb_lookups():  # embedding tables: [vocab, d] → permute columns
            if node.input[0] in inits.by_name:
                table = inits.get(node.input[0])
                if table.ndim == 2 and table.shape[1] == len(perm):
                    inits.replace_input(node, 0, cols, ".perm")
        stream_lns = [graph.emb_ln]
    for ln in stream_lns + [ln for l in graph.layers for ln in (l.ln_attn, l.ln_out)]:
        for idx in (1, 2):
            if len(ln.input) > idx and ln.input[idx]:
                inits.replace_input(ln, idx, cols, ".perm")
    for layer in graph.layers:
        for role in ("query", "key", "value", "ffn1"):  # readers: permute input rows of W [in, out]
            lin = layer.linears[role]
            lin.weight = inits.replace_input(lin.node, 1, rows, ".permrows")
        for role in ("attn_out", "ffn2"):  # writers: permute output columns and bias
            lin = layer.linears[role]
            lin.weight = inits.replace_input(lin.node, 1, cols, ".perm")
            b_idx = list(lin.bias_node.input).index(lin.bias)
            lin.bias = inits.replace_input(lin.bias_node, b_idx, cols, ".perm")
    if not graph.heads:  # an embedding model: its output is the pooled stream itself
        _unpermute_output(graph, perm, inits)
        return
    head = graph.heads[0]  # pooler (BERT) / dense (RoBERTa head) reads the first token of the stream
    trans_b = next((a.i for a in head.attribute if a.name == "transB"), 0)
    inits.replace_input(head, 1, cols if trans_b else rows, ".perm" if trans_b else ".permrows")


def _unpermute_output(graph: BertGraph, perm: np.ndarray, inits: Initializers) -> None:
    """Pooling (per channel: CLS, mean, max) and L2 normalisation (of the whole vector) do not care about channel
    order, so an embedding model computes its embeddings in the stream's order π; one Gather on the [batch, dim]
    output puts them back in the model's own order (d indices per sentence, nothing per token)."""
    from onnx import helper

    nodes = graph.model.graph.node
    writer = next(n for n in nodes if graph.output in n.output)
    permuted = f"{graph.output}.permuted"
    writer.output[list(writer.output).index(graph.output)] = permuted
    inverse = inits.add(f"{graph.output}.unpermute", np.argsort(perm).astype(np.int64))
    nodes.append(helper.make_node("Gather", [permuted, inverse], [graph.output], axis=-1,
                                  name=f"qbert/{graph.output}/Unpermute"))
