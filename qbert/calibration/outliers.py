"""Outlier channels in high precision beside an INT8 GEMM: the fallback pattern `a:4` keeps the 4 largest channels
of every FFN2 input out of the INT8 GEMM and multiplies them in FP32 (FP16 for TensorRT) in a GEMM of their own —
the decomposition LLM.int8() (Dettmers et al., 2022) applies per token, here fixed at calibration.

Why: a per-tensor INT8 scale is set by the few channels that reach furthest, and every other channel's noise
grows with it. SmoothQuant moves that range into the weights, but the neurons that write BERT's outliers have
large weight rows too, so past its best α the noise only moves from the activations to the per-column weight
scales. Taking those few channels out of both fixes both: the clip and the weights' column scales are set by the
rest. The FP32 side is small (4 of 1,536 FFN2 channels: 0.3 % of that GEMM's multiply-accumulates) but is three
more nodes (Gather, MatMul, Add) per GEMM, which is what it costs on a CPU runtime.

A channel's rank is its observed |x| maximum times the largest |W| of its row over the GEMMs that read it: the
most any one token of it can add to an output. The indices are in the tensor's own channel order; the clip (and an
asymmetric grid) is recomputed from the other channels' observed ranges, never widened. Only inputs of linear
layers qualify (their readers are GEMMs with weights) whose quantized value only those GEMMs read — every such input
under the gemm placement; under `full` the residual path also reads the LayerNorm outputs, which would then read
the outlier channels clipped — with per-tensor scales (PEG's groups are another answer to the same outliers).
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import numpy as np
from onnx import helper

from qbert.calibration.clips import TINY
from qbert.calibration.placement import Site, apply_fallback, is_head, role_of
from qbert.calibration.site_scale import SiteScale
from qbert.errors import ConfigError, QbertError

SEP = ":"  # `a:4`: a fallback pattern with a channel count


def split_patterns(patterns: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Fallback patterns → (whole tensors kept in high precision, [(pattern, outlier channel count)] in order)."""
    whole, counts = [], []
    for p in patterns:
        if not isinstance(p, str) or SEP not in p:
            whole.append(p)
            continue
        pattern, _, n = p.rpartition(SEP)
        n = n.strip()
        if not pattern.strip() or not (n.isascii() and n.isdecimal()) or int(n) < 1:
            raise ConfigError("fallback", p, "keeps a tensor's largest channels in high precision as PATTERN:N, "
                              "N a positive channel count (like a:4 or layer.*.x:8)")
        counts.append((pattern.strip(), int(n)))
    return whole, counts


def fallback_sites(all_sites: list[Site], patterns: list[str], strict: bool = True
                   ) -> tuple[list[Site], list[str], dict[str, int]]:
    """(sites still quantized, keys kept whole in high precision, site key → outlier channels) for fallback
    patterns that may carry channel counts. `strict` (the user's own patterns): a pattern that matches nothing, or
    two counts for one tensor, is an error; otherwise (method auto: the user's patterns, then a candidate's) the
    first count given for a tensor holds."""
    whole, counts = split_patterns(patterns)
    kept, dropped = apply_fallback(all_sites, whole, strict)
    linear = {s.key for s in kept if s.gemm_inputs and not is_head(s.key)}
    out: dict[str, int] = {}
    for pattern, n in counts:
        _, matched = apply_fallback(all_sites, [pattern], strict)
        if strict and matched and set(matched) <= set(dropped):
            raise ConfigError("fallback", f"{pattern}{SEP}{n}", f"{', '.join(matched[:3])} "
                              f"{'is' if len(matched) == 1 else 'are'} also kept whole in high precision; give the "
                              "tensor whole or a channel count, not both")
        hits = [k for k in matched if k in linear]
        if strict and not hits:
            roles = ", ".join(dict.fromkeys(role_of(s.key) for s in kept if s.key in linear))  # graph order
            raise ConfigError("fallback", f"{pattern}{SEP}{n}", "names no quantized input of a linear layer: "
                              f"outlier channels apply to {roles or 'none here'} (attention operands and heads "
                              "have no weight rows to take them from)")
        for k in hits:
            if strict and out.get(k, n) != n:
                raise ConfigError("fallback", f"{pattern}{SEP}{n}", f"{k} already keeps {out[k]} outlier channels "
                                  "from an earlier pattern; give each tensor one count")
            out.setdefault(k, n)
    return kept, dropped, out


def check_applicable(patterns: list[str], method: str) -> None:
    """Outlier channels need per-tensor scales: PEG's groups are another answer to the same outliers."""
    counted = [p for p in patterns if isinstance(p, str) and SEP in p]
    if counted and method == "peg":
        raise ConfigError("fallback", counted[0], "outlier channels (PATTERN:N) apply with a per-tensor {method}; "
                          "{method} peg already gives the outlier channels a scale of their own", method=method)


def check_readers(graph: Any, sites: list[Site], counts: dict[str, int]) -> None:
    """Only GEMMs may read a tensor whose outlier channels leave INT8: another reader (under the full placement,
    the residual Add and LayerNorm that read the LayerNorm outputs) would read those channels clipped."""
    for site in sites:
        if site.key not in counts:
            continue
        others = sorted({n.op_type for n in other_readers(graph, site)})
        if others:
            raise ConfigError("fallback", f"{site.key}{SEP}{counts[site.key]}", f"{site.key} is also read by "
                              f"{', '.join(others)} under this placement, which would read its outlier channels "
                              "clipped; keep it whole (no count), or use {placement} gemm", placement="full")


def other_readers(graph: Any, site: Site) -> list[Any]:
    """The nodes other than its linear layers' GEMMs that read a site's quantized value: its listed consumers
    (`gemm`: the GEMMs alone, the residual path reads the float tensor), else every reader of the tensor (`full`).
    Any of them would read the outlier channels clipped (check_readers; emission checks a recipe again)."""
    gemms = {l.node.name for l in graph.linears() if l.name in site.gemm_inputs}
    listed = None if site.consumers is None else {name for name, _ in site.consumers}
    return [n for n in graph.consumers(site.tensor) if n.name not in gemms and (listed is None or n.name in listed)]


def check_widths(counts: dict[str, int], rows: dict[str, np.ndarray]) -> None:
    """Fewer outlier channels than the tensor has — checked from the weights, before any data is read."""
    for key, n in counts.items():
        if key in rows and n >= len(rows[key]):
            raise ConfigError("fallback", f"{key}{SEP}{n}", f"{key} has {len(rows[key])} channels; keep fewer of "
                              "them in high precision (or the whole tensor, without a count)")


def split(scales: dict[str, SiteScale], counts: dict[str, int], stats: dict[str, Any],
          rows: dict[str, np.ndarray]) -> dict[str, SiteScale]:
    """`scales` with each counted site's largest channels taken out: their indices recorded, the clip and grid
    narrowed to the other channels' observed ranges (x/m where smoothed)."""
    out = dict(scales)
    for key, n in counts.items():
        st, scale = stats.get(key), scales.get(key)
        if scale is None or st is None or st.channel_amax is None or key not in rows:
            continue
        amax = np.asarray(st.channel_amax, np.float64)  # fewer than n channels: refused before (check_widths)
        order = np.argsort(-(amax * np.asarray(rows[key], np.float64)), kind="stable")
        idx = np.sort(order[:n])
        rest = np.ones(len(amax), bool)
        rest[idx] = False
        m = np.asarray(scale.smooth, np.float64) if scale.smooth is not None else np.ones(len(amax))
        clip = max(min(float(scale.amax), float((amax / m)[rest].max())), TINY)
        grid = scale.grid
        if grid is not None:
            lo, hi = grid
            if st.channel_min is not None and st.channel_max is not None:
                lo = max(lo, float((np.asarray(st.channel_min) / m)[rest].min()))
                hi = min(hi, float((np.asarray(st.channel_max) / m)[rest].max()))
            lo, hi = min(max(lo, -clip), 0.0), max(min(hi, clip), 0.0)
            grid = [lo, hi] if (hi - lo) / 255.0 >= TINY else None
        out[key] = replace(scale, amax=clip, grid=grid, outliers=[int(i) for i in idx])
    return out


def take_rows(em: Any, site: Site, scale: SiteScale, lins: list[Any]) -> dict[str, str]:
    """Before the site's GEMMs are quantized: each reader's outlier weight rows into an initializer of their own
    (high precision), zeros in their place (so the INT8 column scales come from the other rows). Returns linear
    name → that initializer."""
    idx = np.asarray(scale.outliers, dtype=np.int64)
    tag = f".without.{len(idx)}ch.{zlib.crc32(idx.tobytes()):08x}"  # the same rows out: one shared copy
    hi = {}
    for lin in lins:
        weight = lin.node.input[1]
        rows = em.inits.get(weight).shape[0]
        if idx.max() >= rows or len(idx) >= rows:
            raise QbertError(f"recipe: site {site.key} keeps channel {int(idx.max())} in high precision but "
                             f"{lin.name} reads {rows} channels; recalibrate on this model")
        if (weight, tag) not in em.inits.derived:  # before the rows are zeroed (and the original dropped)
            em.inits.derived[(weight, tag + ".rows")] = em.inits.add(f"{weight}.outlier_rows",
                                                                     em.inits.get(weight)[idx])
        hi[lin.name] = em.inits.derived[(weight, tag + ".rows")]

        def zeroed(w: np.ndarray) -> np.ndarray:
            w = w.copy()
            w[idx] = 0
            return w
        lin.weight = em.inits.replace_input(lin.node, 1, zeroed, tag)  # what the quantizer reads from here on
    return hi


def add_side_gemms(em: Any, site: Site, scale: SiteScale, lins: list[Any], hi: dict[str, str]) -> None:
    """x[..., outliers] · W[outliers] beside each reader's INT8 GEMM, added to its biased output: one Gather for
    the site, one MatMul and one Add per reader."""
    stem = f"act.{site.key}.outliers"
    idx = em.inits.add(f"{stem}.channels", np.asarray(scale.outliers, dtype=np.int64))
    gathered = f"{stem}.x"
    em.new_nodes.append(helper.make_node("Gather", [site.tensor, idx], [gathered], axis=-1,
                                         name=em.uid(stem + "/Gather")))
    for lin in lins:
        part, out = f"{lin.name}.outliers.y", lin.bias_node.output[0]
        em.new_nodes.append(helper.make_node("MatMul", [gathered, hi[lin.name]], [part],
                                             name=em.uid(f"{lin.name}/OutlierMatMul")))
        lin.bias_node.output[0] = f"{out}.int8"
        em.new_nodes.append(helper.make_node("Add", [f"{out}.int8", part], [out],
                                             name=em.uid(f"{lin.name}/Outliers")))
        em.outlier_gemms += 1
