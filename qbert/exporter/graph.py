"""A map of an exported BERT graph: which node is Q/K/V/attn-out/FFN1/FFN2, which tensor is x/h/y.

Every later stage (observers, placement, PEG folding, analysis) names places through this map, so it is
the one module that knows qbert's export naming (`/layer.{i}/attention/self/query/MatMul`, …).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qbert.errors import QbertError

LINEAR_ROLES = {  # role → module path inside a layer
    "query": "attention/self/query", "key": "attention/self/key", "value": "attention/self/value",
    "attn_out": "attention/output/dense", "ffn1": "intermediate/dense", "ffn2": "output/dense",
}


@dataclass
class Linear:
    name: str  # e.g. layer.3.intermediate.dense
    node: Any  # the MatMul NodeProto
    bias_node: Any  # the Add that adds the bias
    weight: str  # initializer name, stored [in, out]
    bias: str

    @property
    def input(self) -> str:
        return self.node.input[0]

    @property
    def output(self) -> str:
        """The biased output tensor."""
        return self.bias_node.output[0]


@dataclass
class Layer:
    index: int
    linears: dict[str, Linear]
    bmm_qk: Any  # MatMul Q·Kᵀ
    bmm_pv: Any  # MatMul P·V
    ln_attn: Any  # LayerNormalization after the attention residual (output = x)
    ln_out: Any  # LayerNormalization after the FFN residual (output = z)
    res_attn: Any  # Add: attention residual (output = u)
    res_ffn: Any  # Add: FFN residual (output = y)
    tensors: dict[str, str] = field(default_factory=dict)


@dataclass
class BertGraph:
    model: Any
    layers: list[Layer]
    emb_ln: Any
    emb_adds: list[Any]  # word + position (+ token type): one Add (DistilBERT) or two
    heads: list[Any]  # pooler / classifier Gemm nodes (kept high precision)
    hidden: int
    emb_proj: Linear | None = None  # ELECTRA/ALBERT: embedding_size → hidden (kept high precision, like heads)

    @property
    def emb_out(self) -> str:
        """The tensor entering layer 0: the residual stream's first tensor."""
        return self.emb_proj.output if self.emb_proj else self.emb_ln.output[0]

    @property
    def nodes(self) -> dict[str, Any]:
        return {n.name: n for n in self.model.graph.node}

    def consumers(self, tensor: str) -> list[Any]:
        return [n for n in self.model.graph.node if tensor in n.input]

    def linears(self) -> list[Linear]:
        return [lin for layer in self.layers for lin in layer.linears.values()]

    def stream_tensors(self) -> list[str]:
        """Outputs of every LayerNorm in the residual stream (all share one channel order)."""
        return [self.emb_out] + [t for l in self.layers for t in (l.tensors["x"], l.tensors["z"])]


def _producer_map(model: Any) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def parse(model: Any) -> BertGraph:
    """Read the roles out of a graph written by `qbert export`; raise if it is something else."""
    nodes = {n.name: n for n in model.graph.node}
    inits = {t.name for t in model.graph.initializer}
    producers = _producer_map(model)

    def node(name: str, op: str) -> Any:
        n = nodes.get(name)
        if n is None or n.op_type != op:
            raise QbertError(f"graph has no {op} node {name}: not a BERT graph exported by `qbert export`")
        return n

    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    layers = []
    i = 0
    while f"/layer.{i}/attention/self/query/MatMul" in nodes:
        p = f"/layer.{i}"
        linears = {}
        for role, path in LINEAR_ROLES.items():
            mm = node(f"{p}/{path}/MatMul", "MatMul")
            add = node(f"{p}/{path}/Add", "Add")
            if mm.input[1] not in inits:
                raise QbertError(f"{mm.name} has no constant weight; re-export with `qbert export`")
            bias = next(x for x in add.input if x in inits)
            linears[role] = Linear(f"layer.{i}.{path.replace('/', '.')}", mm, add, mm.input[1], bias)
        layer = Layer(i, linears, node(f"{p}/attention/self/MatMul", "MatMul"),
                      node(f"{p}/attention/self/MatMul_1", "MatMul"),
                      node(f"{p}/attention/output/LayerNorm/LayerNormalization", "LayerNormalization"),
                      node(f"{p}/output/LayerNorm/LayerNormalization", "LayerNormalization"),
                      node(f"{p}/attention/output/Add", "Add"), node(f"{p}/output/Add", "Add"))
        softmax = producers[layer.bmm_pv.input[0]]
        ffn2_in = linears["ffn2"].input
        layer.tensors = {
            "input": linears["query"].input, "q": layer.bmm_qk.input[0], "k_t": layer.bmm_qk.input[1],
            "scores": layer.bmm_qk.output[0], "p": softmax.output[0], "v": layer.bmm_pv.input[1],
            "context": linears["attn_out"].input, "g": linears["attn_out"].output, "u": layer.res_attn.output[0],
            "x": layer.ln_attn.output[0], "a": ffn2_in, "h": linears["ffn2"].output, "y": layer.res_ffn.output[0],
            "z": layer.ln_out.output[0],
        }
        layers.append(layer)
        i += 1
    if not layers:
        raise QbertError("graph has no /layer.0/ nodes: not a BERT graph exported by `qbert export`")
    emb_ln = node("/embeddings/LayerNorm/LayerNormalization", "LayerNormalization")
    emb_adds = [n for n in model.graph.node if n.name.startswith("/embeddings/Add")]
    heads = [n for n in model.graph.node if n.op_type == "Gemm"]
    hidden = _init_shape(model, layers[0].linears["query"].weight)[0]
    proj = None
    if "/embeddings_project/MatMul" in nodes:
        mm, add = node("/embeddings_project/MatMul", "MatMul"), node("/embeddings_project/Add", "Add")
        proj = Linear("embeddings_project", mm, add, mm.input[1], next(x for x in add.input if x in inits))
    return BertGraph(model, layers, emb_ln, emb_adds, heads, hidden, proj)


def _init_shape(model: Any, name: str) -> list[int]:
    for t in model.graph.initializer:
        if t.name == name:
            return list(t.dims)
    raise KeyError(name)
