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
layers qualify (their readers are GEMMs with weights), under the gemm placement (where only GEMMs read a quantized
tensor: under `full` the residual path would read the clipped outliers) and with per-tensor scales (not PEG).
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


def split_patterns(patterns: list[str]) -> tuple[list[str], dict[str, int]]:
    """Fallback patterns → (whole tensors kept in high precision, pattern → outlier channel count)."""
    whole, counts = [], {}
    for p in patterns:
        if not isinstance(p, str) or SEP not in p:
            whole.append(p)
            continue
        pattern, _, n = p.rpartition(SEP)
        if not pattern.strip() or not n.strip().isdigit() or int(n) < 1:
            raise ConfigError("fallback", p, "keeps a tensor's largest channels in high precision as PATTERN:N, "
                              "N a positive channel count (like a:4 or layer.*.x:8)")
        counts[pattern.strip()] = int(n)
    return whole, counts


def fallback_sites(all_sites: list[Site], patterns: list[str], strict: bool = True
                   ) -> tuple[list[Site], list[str], dict[str, int]]:
    """(sites still quantized, keys kept whole in high precision, site key → outlier channels) for fallback
    patterns that may carry channel counts; `strict`: a pattern that matches nothing is an error."""
    whole, counts = split_patterns(patterns)
    kept, dropped = apply_fallback(all_sites, whole, strict)
    out: dict[str, int] = {}
    for pattern, n in counts.items():
        _, matched = apply_fallback(all_sites, [pattern], strict)
        linear = [k for k in matched if k in {s.key for s in kept if s.gemm_inputs and not is_head(s.key)}]
        if strict and not linear:
            roles = ", ".join(dict.fromkeys(role_of(s.key) for s in kept if s.gemm_inputs and not is_head(s.key)))
            raise ConfigError("fallback", f"{pattern}{SEP}{n}", "names no quantized input of a linear layer: "
                              f"outlier channels apply to {roles or 'none here'} (attention operands and heads "
                              "have no weight rows to take them from; a tensor kept whole needs no channel count)")
        out.update({k: n for k in linear})
    return kept, dropped, out


def check_applicable(patterns: list[str], method: str, placement: str) -> None:
    """Outlier channels need per-tensor scales under the gemm placement (module docstring)."""
    counted = [p for p in patterns if isinstance(p, str) and SEP in p]
    if counted and (placement != "gemm" or method == "peg"):
        why = ("under {placement} full the residual path would read the outlier channels clipped" if
               placement != "gemm" else "{method} peg already gives the outlier channels a scale of their own")
        raise ConfigError("fallback", counted[0], "outlier channels (PATTERN:N) apply under {placement} gemm with a "
                          f"per-tensor {{method}}; {why}", placement=placement, method=method)


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
        amax = np.asarray(st.channel_amax, np.float64)
        if n >= len(amax):
            raise ConfigError("fallback", f"{key}{SEP}{n}", f"{key} has {len(amax)} channels; keep fewer of them "
                              "in high precision (or the whole tensor, without a count)")
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
        if idx.max() >= rows:
            raise QbertError(f"recipe: site {site.key} keeps channel {int(idx.max())} in high precision but "
                             f"{lin.name} reads {rows} channels; recalibrate on this model")
        if (weight, tag) not in em.inits.derived:  # before the rows are zeroed (and the original dropped)
            em.inits.derived[(weight, tag + ".rows")] = em.inits.add(f"{weight}.outlier_rows", em.inits.get(weight)[idx])
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
        em.new_nodes.append(helper.make_node("Add", [f"{out}.int8", part], [out], name=em.uid(f"{lin.name}/Outliers")))
        em.outlier_gemms += 1
