"""Each supported architecture, traced as one canonical post-LN encoder so every later stage sees one graph.

BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, DistilBERT and ALBERT compute the same layer — Q/K/V, scaled
softmax attention, output projection + residual + LayerNorm, FFN + residual + LayerNorm — under different
module names and forward signatures (which also change between transformers releases). `Canonical` traces
that layer from the model's *own* weights under BERT's module names (`/layer.{i}/attention/self/query/MatMul`),
so graph.py, placement, PEG folding and analysis need no per-architecture branches, and export's parity
check against the model's own forward proves the re-statement right.

Modules are referenced, not registered (`object.__setattr__`): the weights stay registered once under the
Hugging Face model, so ALBERT's cross-layer sharing survives as one initializer read by every layer, while
each unrolled layer still gets its own node names (and so its own activation scales).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from qbert.errors import ConfigError

MASK_VALUE = -10000.0  # additive mask: exp(−10⁴) is 0 in FP32 and FP16 without overflowing FP16

# model_type → what was verified for it (the README's support table says the same)
SUPPORTED_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "albert")
_DEBERTA = "disentangled attention (separate content and relative-position terms) has no BERT-shaped map yet"
NOT_YET = {"deberta": _DEBERTA, "deberta-v2": _DEBERTA,
           "mobilebert": "bottleneck layers and NoNorm have no BERT-shaped map yet",
           "funnel": "pooling between blocks changes the sequence length", "xlnet": "not an encoder with "
           "absolute positions", "longformer": "sliding-window attention", "bigbird": "block-sparse attention"}


@dataclass
class Parts:
    """One encoder layer's modules in BERT's roles (post-LN)."""

    query: Any
    key: Any
    value: Any
    attn_out: Any
    ln_attn: Any
    ffn1: Any
    act: Any
    ffn2: Any
    ln_out: Any


@dataclass
class Arch:
    """How to read one model_type: its embeddings call, optional embedding projection, layers and head."""

    embed: Callable[[Any, Any, Any], Any]  # (base model, input_ids, token_type_ids) → embeddings
    layers: Callable[[Any], list[Parts]]
    head: Callable[[Any, Any], Any]  # (HF classifier, last hidden state) → logits
    projection: Callable[[Any], Any] = lambda base: None  # Linear embedding_size → hidden_size, if any


def _bert_parts(layer: Any) -> Parts:
    a = layer.attention
    return Parts(a.self.query, a.self.key, a.self.value, a.output.dense, a.output.LayerNorm,
                 layer.intermediate.dense, layer.intermediate.intermediate_act_fn, layer.output.dense,
                 layer.output.LayerNorm)


def _distil_parts(layer: Any) -> Parts:
    a = layer.attention
    return Parts(a.q_lin, a.k_lin, a.v_lin, a.out_lin, layer.sa_layer_norm, layer.ffn.lin1, layer.ffn.activation,
                 layer.ffn.lin2, layer.output_layer_norm)


def _albert_layers(base: Any) -> list[Parts]:
    """Unrolled in execution order: layer i runs group i·G/L, each group runs its inner layers in turn."""
    cfg, groups = base.config, base.encoder.albert_layer_groups
    out = []
    for i in range(cfg.num_hidden_layers):
        group = groups[int(i / (cfg.num_hidden_layers / cfg.num_hidden_groups))]
        for lay in group.albert_layers:
            a = lay.attention
            out.append(Parts(a.query, a.key, a.value, a.dense, a.LayerNorm, lay.ffn, lay.activation, lay.ffn_output,
                             lay.full_layer_layer_norm))
    return out


def _with_types(base: Any, ids: Any, types: Any) -> Any:
    return base.embeddings(input_ids=ids, token_type_ids=types)


def _pooled_head(hf: Any, h: Any) -> Any:  # BERT: pooler (dense + tanh on token 0) → dropout → linear
    return hf.classifier(hf.dropout(hf.base_model.pooler(h)))


ARCHS: dict[str, Arch] = {
    "bert": Arch(_with_types, lambda b: [_bert_parts(l) for l in b.encoder.layer], _pooled_head),
    "roberta": Arch(_with_types, lambda b: [_bert_parts(l) for l in b.encoder.layer], lambda hf, h: hf.classifier(h)),
    "electra": Arch(_with_types, lambda b: [_bert_parts(l) for l in b.encoder.layer], lambda hf, h: hf.classifier(h),
                    projection=lambda b: getattr(b, "embeddings_project", None)),
    "distilbert": Arch(lambda b, ids, types: b.embeddings(ids), lambda b: [_distil_parts(l) for l in b.transformer.layer],
                       lambda hf, h: hf.classifier(hf.dropout(hf.pre_classifier(h[:, 0]).relu()))),
    "albert": Arch(_with_types, _albert_layers,
                   lambda hf, h: hf.classifier(hf.dropout(hf.albert.pooler_activation(hf.albert.pooler(h[:, 0])))),
                   projection=lambda b: b.encoder.embedding_hidden_mapping_in),
}
ARCHS["xlm-roberta"] = ARCHS["camembert"] = ARCHS["roberta"]


def check_supported(model_type: str, spec: str, name: str = "model") -> Arch:
    """The architecture of `model_type`, or a ConfigError naming the model argument (`name`, as its caller calls
    it) and the supported types."""
    if model_type in ARCHS:
        return ARCHS[model_type]
    why = NOT_YET.get(model_type)
    reason = f"is not supported yet ({why})" if why else "is not supported"
    raise ConfigError(name, spec, f"model_type {model_type!r} {reason}; supported: {', '.join(SUPPORTED_TYPES)}")


def sizes(config: Any) -> dict[str, int]:
    """hidden/layers/heads/FFN width under every architecture's config names (DistilBERT: dim, hidden_dim…);
    layers counts ALBERT's unrolled layers (num_hidden_layers × inner_group_num)."""
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim")
    layers = config.num_hidden_layers * int(getattr(config, "inner_group_num", 1) or 1)
    return {"hidden_size": int(config.hidden_size), "num_layers": int(layers),
            "num_heads": int(config.num_attention_heads), "intermediate_size": int(ffn)}


def positions(config: Any) -> int:
    """The longest sequence the position table embeds."""
    return usable_positions(config.model_type, int(config.max_position_embeddings), config.pad_token_id)


def usable_positions(model_type: str, rows: int, pad_token_id: int | None) -> int:
    """Of a position table's `rows`, how many a sequence can use: RoBERTa-style models number positions from
    pad + 1 (514 rows, pad 1: 512 tokens)."""
    if model_type in ("roberta", "xlm-roberta", "camembert"):
        return rows - int(pad_token_id or 0) - 1
    return rows


def canonical(model: Any, pooling: Any = None) -> Any:
    """The model as a torch module with BERT's node names: (input_ids, attention_mask, token_type_ids) → logits
    (a classifier: its own head) or, given a `pooling.Pooling`, → sentence embeddings (an encoder: the pooling,
    attention-mask aware, and normalisation under `/pooling/`), with the additive mask built once
    ((1 − mask) · −10⁴, FP16-safe)."""
    import torch

    from qbert.exporter.pooling import embed

    arch = ARCHS[model.config.model_type]
    heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // heads

    def ref(module: torch.nn.Module, **targets: Any) -> torch.nn.Module:
        for name, target in targets.items():
            object.__setattr__(module, "_" + name, target)  # referenced, not registered (see module docstring)
        return module

    class Dense(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.linear(x, self._src.weight, self._src.bias)

    class Norm(torch.nn.Module):
        def forward(self, x):
            s = self._src
            return torch.nn.functional.layer_norm(x, s.normalized_shape, s.weight, s.bias, s.eps)

    def dense(src: Any) -> Dense:
        return ref(Dense(), src=src)

    class SelfAttention(torch.nn.Module):
        def __init__(self, p: Parts):
            super().__init__()
            self.query, self.key, self.value = dense(p.query), dense(p.key), dense(p.value)

        def forward(self, x, mask):
            split = lambda t: t.unflatten(-1, (heads, head_dim)).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) * head_dim ** -0.5 + mask
            context = torch.matmul(torch.softmax(scores, dim=-1), v)
            return context.transpose(1, 2).flatten(2)

    class Residual(torch.nn.Module):  # dense → + residual → LayerNorm
        def __init__(self, lin: Any, ln: Any):
            super().__init__()
            self.dense, self.LayerNorm = dense(lin), ref(Norm(), src=ln)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Activation(torch.nn.Module):
        def forward(self, x):
            return self._fn(x)

    class Intermediate(torch.nn.Module):
        def __init__(self, p: Parts):
            super().__init__()
            self.dense, self.intermediate_act_fn = dense(p.ffn1), ref(Activation(), fn=p.act)

        def forward(self, x):
            return self.intermediate_act_fn(self.dense(x))

    class Attention(torch.nn.Module):
        def __init__(self, p: Parts):
            super().__init__()
            self.add_module("self", SelfAttention(p))
            self.output = Residual(p.attn_out, p.ln_attn)

        def forward(self, x, mask):
            return self.output(getattr(self, "self")(x, mask), x)

    class Layer(torch.nn.Module):
        def __init__(self, p: Parts):
            super().__init__()
            self.attention, self.intermediate, self.output = Attention(p), Intermediate(p), Residual(p.ffn2, p.ln_out)

        def forward(self, x, mask):
            x = self.attention(x, mask)
            return self.output(self.intermediate(x), x)

    class Pool(torch.nn.Module):  # no weights: it names the tail's nodes (/pooling/…)
        def forward(self, h, attention_mask):
            return embed(h, attention_mask, pooling)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = model  # registers every weight once
            base = model.base_model
            proj = arch.projection(base)
            self.embeddings_project = dense(proj) if proj is not None else None
            self.layer = torch.nn.ModuleList(Layer(p) for p in arch.layers(base))
            self.pooling = Pool() if pooling is not None else None

        def forward(self, input_ids, attention_mask, token_type_ids):
            base = self.hf.base_model
            h = arch.embed(base, input_ids, token_type_ids)
            if self.embeddings_project is not None:
                h = self.embeddings_project(h)
            mask = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * MASK_VALUE
            for layer in self.layer:
                h = layer(h, mask)
            return arch.head(self.hf, h) if self.pooling is None else self.pooling(h, attention_mask)

    return Classifier().eval()
