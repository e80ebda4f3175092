"""An independent numpy BERT forward pass with fake quantization, to check emitted Q/DQ graphs against.

It reads the Hugging Face weights directly (not the ONNX) and applies round-to-nearest-even symmetric
quantization at the `gemm` placement's sites using the recipe's clip values.
"""
from __future__ import annotations

import math

import numpy as np


def fq(x, amax):
    s = max(amax, 1e-8) / 127.0
    return np.clip(np.rint(x / s), -128, 127) * s


def fq_weight(w):  # w: [out, in] (torch layout); per output channel
    s = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-8) / 127.0
    return np.clip(np.rint(w / s), -127, 127) * s


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def forward(model, feeds, recipe=None, hidden=False):
    sd = {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
    cfg = model.config
    nh, d = cfg.num_attention_heads, cfg.hidden_size
    hd = d // nh
    q_on = recipe is not None

    def amax(key):
        return recipe.sites[key].amax

    def linear(x, prefix, key=None):
        w, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
        if q_on and key is not None:
            return fq(x, amax(key)) @ fq_weight(w).T + b
        return x @ w.T + b

    ids, mask, types = feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    e = "bert.embeddings."
    pos = np.arange(ids.shape[1])
    h = sd[e + "word_embeddings.weight"][ids] + sd[e + "token_type_embeddings.weight"][types] \
        + sd[e + "position_embeddings.weight"][pos][None]
    h = layer_norm(h, sd[e + "LayerNorm.weight"], sd[e + "LayerNorm.bias"], cfg.layer_norm_eps)
    add_mask = (1.0 - mask[:, None, None, :]) * -10000.0
    prev = "emb.ln"
    for i in range(cfg.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        split = lambda t: t.reshape(t.shape[0], t.shape[1], nh, hd).transpose(0, 2, 1, 3)
        q = split(linear(h, p + "attention.self.query", prev))
        k = split(linear(h, p + "attention.self.key", prev))
        v = split(linear(h, p + "attention.self.value", prev))
        kt = k.transpose(0, 1, 3, 2)
        if q_on:
            q, kt, v = fq(q, amax(f"layer.{i}.q")), fq(kt, amax(f"layer.{i}.k_t")), fq(v, amax(f"layer.{i}.v"))
        s = q @ kt / math.sqrt(hd) + add_mask
        s = np.exp(s - s.max(-1, keepdims=True))
        pr = s / s.sum(-1, keepdims=True)
        if q_on:
            pr = fq(pr, amax(f"layer.{i}.p"))
        ctx = (pr @ v).transpose(0, 2, 1, 3).reshape(h.shape)
        u = linear(ctx, p + "attention.output.dense", f"layer.{i}.context") + h
        x = layer_norm(u, sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"],
                       cfg.layer_norm_eps)
        a = linear(x, p + "intermediate.dense", f"layer.{i}.x")
        a = 0.5 * a * (1.0 + np.vectorize(math.erf)(a / math.sqrt(2.0)))
        ffn_out = linear(a, p + "output.dense", f"layer.{i}.a")
        y = ffn_out + x
        h = layer_norm(y, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], cfg.layer_norm_eps)
        prev = f"layer.{i}.z"
    if hidden:  # the last FFN output: a GEMM result, before LayerNorm/pooler/tanh shrink differences
        return ffn_out
    pooled = np.tanh(h[:, 0] @ sd["bert.pooler.dense.weight"].T + sd["bert.pooler.dense.bias"])
    return pooled @ sd["classifier.weight"].T + sd["classifier.bias"]
