"""An independent fake-quant reference for any supported architecture, to check emitted Q/DQ graphs against.

It runs the Hugging Face model itself (its own modules, forward and channel order — no ONNX, no permutation
folding) with forward pre-hooks that fake-quantize the input of every encoder GEMM at the recipe's clip values
(PEG: one clip per group, mapped back through the recipe's permutation) and per-output-channel INT8 weights.
Shared modules (ALBERT) are hooked once and told apart by call order, so each depth uses its own scales.
"""
from __future__ import annotations

import numpy as np


def _channel_amax(site, width: int, permutation) -> np.ndarray:
    if site.group_amax is None:
        return np.full(width, site.amax)
    order = np.asarray(permutation) if permutation is not None else np.arange(width)
    out = np.empty(width)
    for (a, b), amax in zip(site.bounds, site.group_amax):
        out[order[a:b]] = amax  # position a..b of the permuted stream holds these original channels
    return out


def fake_quant_forward(folder, arch: str, recipe, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
    """(logits, the last layer's FFN output h — a GEMM result, before LayerNorm and the head shrink differences)."""
    import torch

    from qbert.exporter.arch import ARCHS
    from qbert.exporter.hf import forward_inputs, load_classifier

    model, _ = load_classifier(str(folder))
    parts = ARCHS[arch].layers(model.base_model)
    last_h = []
    parts[-1].ffn2.register_forward_hook(lambda mod, args, out: last_h.append(out))
    if recipe is not None:
        first = "emb.proj" if ARCHS[arch].projection(model.base_model) is not None else "emb.ln"
        keys: dict[int, list[str]] = {}  # module → the site it reads, per call in execution order
        modules = {}
        for i, p in enumerate(parts):
            stream_in = first if i == 0 else f"layer.{i - 1}.z"
            for mod, key in ((p.query, stream_in), (p.key, stream_in), (p.value, stream_in),
                             (p.attn_out, f"layer.{i}.context"), (p.ffn1, f"layer.{i}.x"), (p.ffn2, f"layer.{i}.a")):
                keys.setdefault(id(mod), []).append(key)
                modules[id(mod)] = mod
        calls = {k: 0 for k in keys}

        def hook(mod, args):
            k = keys[id(mod)][calls[id(mod)] % len(keys[id(mod)])]
            calls[id(mod)] += 1
            site = recipe.sites.get(k)
            if site is None:
                return None
            x = args[0]
            amax = torch.tensor(_channel_amax(site, x.shape[-1], recipe.permutation), dtype=x.dtype)
            s = amax.clamp(min=1e-8) / 127.0
            return (torch.clamp(torch.round(x / s), -128, 127) * s,)

        with torch.no_grad():
            for mod in modules.values():
                w = mod.weight
                s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
                w.copy_(torch.clamp(torch.round(w / s), -127, 127) * s)
                mod.register_forward_pre_hook(hook)
    with torch.no_grad():
        logits = model(**forward_inputs(model, {k: torch.from_numpy(v) for k, v in feeds.items()})).logits.numpy()
    return logits, last_h[-1].numpy()  # a shared ffn2 (ALBERT) runs once per depth: the last call is the last layer
