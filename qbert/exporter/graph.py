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
    heads: list[Any]  # pooler / classifier Gemm nodes (kept high precision); none in an embedding model
    hidden: int
    emb_proj: Linear | None = None  # ELECTRA/ALBERT: embedding_size → hidden (kept high precision, like heads)
    output: str = "logits"  # the graph's output: logits, or an embedding model's pooled `embeddings`

    @property
    def emb_out(self) -> str:
        """The tensor entering layer 0: the residual stream's first tensor."""
        return self.emb_proj.output if self.emb_proj else self.emb_ln.output[0]

    @property
    def nodes(self) -> dict[str, Any]:
        return {n.name: n for n in self.model.graph.node}

    def consumers(self, tensor: str) -> list[Any]:
        return [n for n in self.model.graph.node if tensor in n.input]

    def emb_lookups(self) -> list[Any]:
        """The Gathers of embedding tables (word, position, token type) that the embedding sums add up."""
        made = _producer_map(self.model)
        return [made[t] for add in self.emb_adds for t in add.input if t in made and made[t].op_type == "Gather"]

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
    emb_ln, proj = _stream_start(layers[0].linears["query"].input, producers, inits)
    emb_adds = _embedding_sums(model, emb_ln, producers)
    heads = [n for n in model.graph.node if n.op_type == "Gemm"]  # an embedding model's pooling has none
    hidden = _init_shape(model, layers[0].linears["query"].weight)[0]
    output = model.graph.output[0].name if model.graph.output else "logits"
    return BertGraph(model, layers, emb_ln, emb_adds, heads, hidden, proj, output)


def _stream_start(stream_in: str, producers: dict[str, Any], inits: set[str]) -> tuple[Any, Linear | None]:
    """The embedding LayerNorm and the optional projection after it, found by what they compute (the producers
    of layer 0's input), not by name: the tracer's names under `/embeddings/` vary with the architecture and
    with the checkpoint's configuration."""
    def fail(why: str) -> QbertError:
        return QbertError(f"layer 0's input {why}: not a BERT graph exported by `qbert export`")

    node = producers.get(stream_in)
    if node is not None and node.op_type == "LayerNormalization":
        return node, None
    if node is None or node.op_type != "Add":
        raise fail("is not written by a LayerNorm or an embedding projection")
    bias = next((x for x in node.input if x in inits), None)
    mm = next((producers.get(x) for x in node.input if x != bias), None)
    if bias is None or mm is None or mm.op_type != "MatMul" or mm.input[1] not in inits:
        raise fail("is written by an Add that is not a biased projection")
    ln = producers.get(mm.input[0])
    if ln is None or ln.op_type != "LayerNormalization":
        raise fail("comes from a projection that does not read the embedding LayerNorm")
    return ln, Linear("embeddings_project", mm, node, mm.input[1], bias)


def _embedding_sums(model: Any, emb_ln: Any, producers: dict[str, Any]) -> list[Any]:
    """The Adds that sum the embedding lookups into the LayerNorm's input, in graph order. Walking back from the
    LayerNorm through Adds only, this never takes the integer Add of in-graph position ids (RoBERTa-style models
    with a non-zero pad id compute `cumsum(mask) · mask + pad` and gather positions with it)."""
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    found: dict[int, Any] = {}
    todo = [emb_ln.input[0]]
    while todo:
        node = producers.get(todo.pop())
        if node is not None and node.op_type == "Add" and id(node) not in found:
            found[id(node)] = node
            todo.extend(node.input)
    return sorted(found.values(), key=lambda n: order[id(n)])


def _init_shape(model: Any, name: str) -> list[int]:
    for t in model.graph.initializer:
        if t.name == name:
            return list(t.dims)
    raise KeyError(name)
