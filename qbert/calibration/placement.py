"""Where quantizers go. A Site is one activation tensor to quantize and the consumers that read it quantized.

- `gemm` (called `trt` before; still accepted): inputs of every GEMM (Q/K/V, attention output, FFN in/out) and both operands of the attention
  batched matmuls; LayerNorm, Softmax, GELU and residual adds read the unquantized tensor. This is what
  TensorRT fuses into INT8 kernels.
- `full`: Bondarenko's W8A8 (the study's setting): every activation is quantized once after its producer and
  all consumers read the quantized value — embedding sums, Q/K/V, scores, softmax, context, dense outputs,
  residual sums (u, y), LayerNorm outputs (x, z), GELU output, FFN output (h).

Pooler and classifier GEMMs (the `head.<n>` sites, one per head Gemm, the same under both placements) run once
per sequence on a [batch, d] matrix (< 0.1 % of FLOPs at seq 128). Every recipe carries their scales; only a target
that runs them in INT8 quantizes them (OpenVINO, whose CPU plugin then runs every FullyConnected in INT8) —
TensorRT/ModelOpt skip GEMMs with M = 1 at batch 1 anyway, and ONNX Runtime gains nothing measurable.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from qbert.errors import ConfigError
from qbert.exporter.graph import BertGraph

PLACEMENTS = ("gemm", "full")
ALIASES = {"trt": "gemm"}  # the old name, which also named a --target: recipes and flags that say it still work


def placement_name(placement: str) -> str:
    """The placement's current name (`trt` → `gemm`); unknown names pass through to be refused where checked."""
    return ALIASES.get(placement, placement)
# Tensors in the residual stream's channel order: the ones PEG groups and the global permutation reorders.
STREAM_ROLES = ("emb.sum1", "emb.sum2", "emb.ln", "emb.proj", "g", "u", "x", "h", "y", "z")
# The roles `sites` can give each placement: a recipe read from a file is checked against them before any graph
# is parsed (the gemm placement's stream input is emb.ln/emb.proj, then the previous layer's z).
SITE_ROLES = {"gemm": ("emb.ln", "emb.proj", "q", "k_t", "p", "v", "context", "x", "a", "z", "head"),
              "full": ("emb.sum1", "emb.sum2", "emb.ln", "emb.proj", "q", "k_t", "v", "scores", "p", "context", "g",
                       "u", "x", "a", "h", "y", "z", "head")}
HEAD = "head"  # role of the pooler/classifier GEMM inputs (`head.0`, `head.1`, … in graph order)


@dataclass
class Site:
    key: str  # e.g. layer.3.x — what recipes and --fp16-fallback patterns refer to
    tensor: str  # ONNX tensor name
    layout: str  # bsh, bhsd, bhds, bhss or bh (a head's [batch, d]): which axes are batch/token (padding masks)
    consumers: list[tuple[str, int]] | None = None  # (node name, input index); None = every consumer
    stream: bool = False  # in residual-stream channel order (PEG-eligible)
    gemm_inputs: list[str] = field(default_factory=list)  # Linear names that read this site


def role_of(key: str) -> str:
    """A site key's role, the part fallback patterns may name alone: `layer.3.y` → `y`; other keys are their
    own role (`emb.ln`)."""
    return key.split(".", 2)[-1] if key.startswith("layer.") else HEAD if is_head(key) else key


def is_head(key: str) -> bool:
    parts = key.split(".")
    return len(parts) == 2 and parts[0] == HEAD and parts[1].isdigit()


def is_site_key(key: str, placement: str) -> bool:
    """Whether `key` names a site `placement` can have: `layer.<n>.<role>`, `head.<n>` or an `emb.*` key of its
    roles."""
    parts = key.split(".")
    if parts[0] == "layer":
        return len(parts) == 3 and parts[1].isdigit() and parts[2] in SITE_ROLES[placement]
    if is_head(key):
        return True
    return key.startswith("emb.") and key in SITE_ROLES[placement]


def sites(graph: BertGraph, placement: str) -> list[Site]:
    placement = placement_name(placement)
    if placement not in PLACEMENTS:
        raise ConfigError("placement", placement, f"choose one of {', '.join(PLACEMENTS)}")
    out: list[Site] = []
    projected = graph.emb_proj is not None  # then the embeddings are narrower than, and not in, the stream
    prev_key, prev_tensor = ("emb.proj" if projected else "emb.ln"), graph.emb_out
    if placement == "full":
        out += [Site(f"emb.sum{k}", add.output[0], "bsh", stream=not projected)
                for k, add in enumerate(graph.emb_adds, 1)]
        out.append(Site("emb.ln", graph.emb_ln.output[0], "bsh", stream=not projected))
        if projected:
            out.append(Site("emb.proj", prev_tensor, "bsh", stream=True))
    for layer in graph.layers:
        lin, t, i = layer.linears, layer.tensors, layer.index
        qkv = [lin[r] for r in ("query", "key", "value")]
        if placement == "gemm":
            out += [
                Site(prev_key, prev_tensor, "bsh", [(l.node.name, 0) for l in qkv], True, [l.name for l in qkv]),
                Site(f"layer.{i}.q", t["q"], "bhsd", [(layer.bmm_qk.name, 0)]),
                Site(f"layer.{i}.k_t", t["k_t"], "bhds", [(layer.bmm_qk.name, 1)]),
                Site(f"layer.{i}.p", t["p"], "bhss", [(layer.bmm_pv.name, 0)]),
                Site(f"layer.{i}.v", t["v"], "bhsd", [(layer.bmm_pv.name, 1)]),
                Site(f"layer.{i}.context", t["context"], "bsh", [(lin["attn_out"].node.name, 0)], False,
                     [lin["attn_out"].name]),
                Site(f"layer.{i}.x", t["x"], "bsh", [(lin["ffn1"].node.name, 0)], True, [lin["ffn1"].name]),
                Site(f"layer.{i}.a", t["a"], "bsh", [(lin["ffn2"].node.name, 0)], False, [lin["ffn2"].name]),
            ]
        else:
            layouts = {"q": "bhsd", "k_t": "bhds", "scores": "bhss", "p": "bhss", "v": "bhsd"}
            readers = {"context": ["attn_out"], "x": ["ffn1"], "a": ["ffn2"], "z": []}
            for role in ("q", "k_t", "v", "scores", "p", "context", "g", "u", "x", "a", "h", "y", "z"):
                out.append(Site(f"layer.{i}.{role}", t[role], layouts.get(role, "bsh"), None,
                                role in STREAM_ROLES, [lin[r].name for r in readers.get(role, [])]))
            stream_in = next(s for s in out if s.key == prev_key)  # z of the previous layer (or emb.ln)
            stream_in.gemm_inputs = [l.name for l in qkv]
        prev_key, prev_tensor = f"layer.{i}.z", t["z"]
    out += [Site(f"{HEAD}.{k}", gemm.input[0], "bh", [(gemm.name, 0)]) for k, gemm in enumerate(graph.heads)]
    return out


def apply_fallback(all_sites: list[Site], patterns: list[str], strict: bool = True) -> tuple[list[Site], list[str]]:
    """Drop sites matching any pattern (`layer.*.x`, `layer.3.*`, or a bare role like `h`); `strict`: a pattern
    that matches nothing is an error naming the roles this placement has (and a role only the other has)."""
    if not patterns:
        return all_sites, []
    blank = [p for p in patterns if not isinstance(p, str) or not p.strip()]
    if blank:
        raise ConfigError("fallback", blank[0], "names no tensor; give site keys, globs or roles (like layer.*.h "
                          "or x)")

    def matches(s: Site, p: str) -> bool:  # by key, by role, or by the ONNX tensor name
        return fnmatch.fnmatchcase(s.key, p) or fnmatch.fnmatchcase(role_of(s.key), p) or p == s.tensor

    kept, dropped = [], []
    for s in all_sites:
        (dropped if any(matches(s, p) for p in patterns) else kept).append(s)
    unknown = [p for p in patterns if not any(matches(s, p) for s in all_sites)]
    if unknown and strict:
        raise _no_match(all_sites, unknown)
    return kept, [s.key for s in dropped]


def _no_match(all_sites: list[Site], unknown: list[str]) -> ConfigError:
    """What to name instead: the roles the sites' placement has, and which patterns are roles of the other."""
    roles = list(dict.fromkeys(role_of(s.key) for s in all_sites))
    placement = next((p for p in PLACEMENTS if set(roles) <= set(SITE_ROLES[p])), PLACEMENTS[-1])
    other = next(p for p in PLACEMENTS if p != placement)
    elsewhere = [p for p in unknown if role_of(p) in SITE_ROLES[other] and role_of(p) not in roles]
    text = f"{'matches' if len(unknown) == 1 else 'match'} no quantized tensor"
    if elsewhere:
        text += (f"; {', '.join(elsewhere)} {'is' if len(elsewhere) == 1 else 'are'} quantized only under "
                 f"{{placement}} {other}")
    layer_role = next((r for r in roles if not r.startswith("emb.")), roles[0])
    return ConfigError("fallback", unknown, text + f"; under {{placement}} {placement} the roles are "
                       f"{', '.join(roles)} (keys like {all_sites[0].key}, layer.0.{layer_role}, layer.*.{layer_role})",
                       placement=placement)
