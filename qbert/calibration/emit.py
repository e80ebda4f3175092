"""Recipe + FP32 graph + target → Q/DQ ONNX that runs on integer kernels.

- Activations: per-tensor Q→DQ (`trt`: INT8, zero point 0; `ort-cpu`: UINT8, zero point 128 — the same
  symmetric grid shifted, which is what ORT's fast x86 U8S8 kernels want; a site with an asymmetric grid, where
  the target takes one: UINT8 over [lo, hi] with its own zero point, grids.py).
- Weights of every GEMM whose input is quantized: INT8 initializer + DequantizeLinear, per output channel
  (axis 1 of the [in, out] MatMul weight).
- PEG sites: K Slice→Q→DQ groups over contiguous channels; each consuming GEMM becomes K GEMMs over the
  matching weight rows whose partial products are summed — K per-tensor INT8 GEMMs, legal for TensorRT and
  fused by ORT into K MatMulIntegerToFloat. GEMMs that read the same grouped tensor (Q, K and V) become one
  GEMM per group over their weights side by side, summed once, biased once and split into the three outputs: the
  same products (per-output-column weight scales do not change when columns are concatenated) in K kernels and
  K−1 Adds instead of 3K and 3(K−1). Non-GEMM consumers (full placement) of a tensor a GEMM also reads
  take a Concat of those groups; a grouped tensor no GEMM reads (FFN outputs, residual sums) instead goes
  through one per-tensor Q/DQ between two per-channel Muls (x·s/s_c → Q/DQ at s → ·s_c/s, s_c = the channel's
  group scale): the same grid as Slice→Q/DQ×K→Concat in 4 elementwise ops instead of 3K+1 strided copies; where
  an INT8 linear writes the tensor (attention output, FFN2), the first Mul is folded into its per-column weight
  scales and bias.
- SmoothQuant sites (`gemm` placement): x·(1/m) → per-tensor Q/DQ → GEMMs whose weight rows are scaled by m
  before quantization (smooth.py). PEG with groups `auto` smooths its grouped GEMM inputs the same way (one GEMM,
  not K); under `full` their non-GEMM readers read that DQ · m (a per-channel grid), and on ORT CPU the 1/m is
  folded into the LayerNorm that writes the tensor.
- Outlier channels (outliers.py): a site's few largest channels leave its GEMMs' INT8 weights (zero rows) and
  run in high precision beside them: Gather → MatMul → Add onto each GEMM's biased output.
- High precision: FP16 for TensorRT (strongly typed: the dtypes are the precision; fp16.py), FP32 for ORT-CPU and
  OpenVINO. Each target's dtypes are in targets.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from qbert.calibration import outliers, placement as placement_mod
from qbert.calibration.clips import QMAX, int8_per_channel, scale_of
from qbert.calibration.fp16 import to_fp16
from qbert.calibration.grids import FOR_TENSORRT, FOR_TENSORRT_MENTIONS, qparams
from qbert.calibration.graph_order import drop_unused_initializers, toposort
from qbert.calibration.peg import Initializers, fold_stream_permutation
from qbert.calibration.recipe import Recipe, SiteScale
from qbert.calibration.targets import target as target_of
from qbert.errors import ConfigError, QbertError
from qbert.exporter.graph import BertGraph, Linear, parse

MAX_RATIO = 2.0 ** 15  # per-channel multipliers of a grouped non-GEMM Q/DQ (FP16 holds 2¹⁵ and 2⁻¹⁵)


class Emitter:
    def __init__(self, model: Any, target: str, high_precision: str, fuse: bool = True):
        self.spec = target_of(target)
        if high_precision not in ("fp16", "fp32"):
            raise ConfigError("high_precision", high_precision, "choose fp16 or fp32")
        self.model, self.target, self.high, self.fuse = model, target, high_precision, fuse
        self.inits = Initializers(model)
        self.new_nodes: list[Any] = []
        self.counter = 0
        self.quantized_gemms = 0
        self.outlier_gemms = 0  # high-precision GEMMs over outlier channels beside INT8 ones (outliers.py)
        self.asymmetric = 0  # activation Q/DQ emitted on an asymmetric grid
        self.weight_cache: dict[tuple[str, int, int], str] = {}
        self.int8_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.replaced: set[str] = set()  # original GEMM nodes superseded by PEG split GEMMs
        self.side_by_side: dict[tuple[str, ...], tuple[str, str]] = {}  # weights → (concatenated W, bias)

    def grid(self, site: placement_mod.Site, scale: SiteScale) -> list[float] | None:
        return scale.grid if scale.grid is not None and self.spec.takes_grid(placement_mod.role_of(site.key)) else None

    def uid(self, stem: str) -> str:
        self.counter += 1
        return f"qbert/{stem}/{self.counter}"

    # -- activations -----------------------------------------------------------------------------------
    def qdq(self, tensor: str, amax: float, stem: str, grid: list[float] | None = None) -> str:
        """Q→DQ of `tensor` on the target's symmetric grid at `amax`, or UINT8 over `grid` (grids.py)."""
        if grid is None:
            step, point = scale_of(amax), self.spec.zero_point
            dtype = np.uint8 if self.spec.activations == "uint8" else np.int8
        else:
            (step, point), dtype = qparams(grid), np.uint8
            self.asymmetric += 1
        scale = self.inits.add(f"{stem}.scale", np.array(step, dtype=np.float32))
        zp = self.inits.add(f"{stem}.zero_point", np.array(point, dtype=dtype))
        q, dq = f"{stem}.q", f"{stem}.dq"
        self.new_nodes += [helper.make_node("QuantizeLinear", [tensor, scale, zp], [q], name=self.uid(stem + "/Q")),
                           helper.make_node("DequantizeLinear", [q, scale, zp], [dq], name=self.uid(stem + "/DQ"))]
        return dq

    def scaled_qdq(self, tensor: str, channel_scale: np.ndarray, stem: str, writer: Linear | None = None) -> str:
        """Per-channel grid through one per-tensor Q/DQ at the largest scale s: x·(s/s_c) → Q/DQ(s) → ·(s_c/s).
        The ratios stay ≤ 2¹⁵ so both fit FP16 (only an all-zero group reaches the clamp). Where an INT8 linear
        writes x (`writer`), x·(s/s_c) is folded into its per-column weight scales and bias instead of a Mul."""
        top = float(channel_scale.max())
        ratio = np.minimum(top / channel_scale, MAX_RATIO)
        down = self.inits.add(f"{stem}.mul_out", (1.0 / ratio).astype(np.float32))
        pre, post = f"{stem}.prescaled", f"{stem}.rescaled"
        if writer is None or not self.fold_columns(writer, ratio, pre):
            up = self.inits.add(f"{stem}.mul_in", ratio.astype(np.float32))
            self.new_nodes.append(helper.make_node("Mul", [tensor, up], [pre], name=self.uid(stem + "/MulIn")))
        dq = self.qdq(pre, top * QMAX, stem)
        self.new_nodes.append(helper.make_node("Mul", [dq, down], [post], name=self.uid(stem + "/MulOut")))
        return post

    def fold_columns(self, lin: Linear, ratio: np.ndarray, out: str) -> bool:
        """Make `lin` write its output times `ratio` (per column) as `out`: its weight's DequantizeLinear gets
        scale × ratio (the INT8 values stay, and stay shared), its bias × ratio. Exact: a per-output-column scale
        absorbs any column factor. False (nothing changed) where the weight is not INT8 here."""
        dq = next((n for n in self.new_nodes if n.op_type == "DequantizeLinear" and n.output[0] == lin.node.input[1]),
                  None)
        if dq is None:
            return False
        scale = self.inits.add(f"{lin.weight}.folded.scale", (self.inits.get(dq.input[1]) * ratio).astype(np.float32))
        weight = f"{lin.weight}.folded.dq.{self.counter}"
        self.new_nodes.append(helper.make_node("DequantizeLinear", [dq.input[0], scale, dq.input[2]], [weight], axis=1,
                                               name=self.uid(f"{lin.name}/DQ_folded")))
        lin.node.input[1] = weight  # the old DequantizeLinear stays cached for GEMMs that share it (ALBERT)
        idx = list(lin.bias_node.input).index(lin.bias)
        lin.bias = lin.bias_node.input[idx] = self.inits.add(f"{lin.bias}.folded",
                                                             (self.inits.get(lin.bias) * ratio).astype(np.float32))
        lin.bias_node.output[0] = out
        return True

    def slice_last(self, tensor: str, start: int, end: int, stem: str) -> str:
        names = [self.inits.add(f"{stem}.{k}", np.array([v], dtype=np.int64))
                 for k, v in (("starts", start), ("ends", end), ("axes", -1))]
        out = f"{stem}.slice"
        self.new_nodes.append(helper.make_node("Slice", [tensor, *names], [out], name=self.uid(stem + "/Slice")))
        return out

    # -- weights ---------------------------------------------------------------------------------------
    def weight_dq(self, weight: str, rows: tuple[int, int] | None = None) -> str:
        """INT8 per-output-channel weight (optionally a row slice) behind a DequantizeLinear."""
        if weight not in self.int8_cache:
            self.int8_cache[weight] = int8_per_channel(self.inits.get(weight).astype(np.float32))
        q, scale = self.int8_cache[weight]
        key = (weight, *(rows or (0, q.shape[0])))
        if key in self.weight_cache:
            return self.weight_cache[key]
        if rows is not None:
            q = q[rows[0]:rows[1]]
        stem = f"{weight}.rows{key[1]}_{key[2]}" if rows else weight
        qn = self.inits.add(f"{stem}.int8", q)
        sn = self.inits.add(f"{stem}.scale", scale.astype(np.float32))
        zn = self.inits.add(f"{stem}.zero_point", np.zeros(scale.shape, dtype=np.int8))
        out = f"{stem}.dq"
        self.new_nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [out], axis=1,
                                               name=self.uid(stem + "/DQ")))
        self.weight_cache[key] = out
        return out

    def quantize_gemm_weight(self, node: Any) -> None:
        """A head's Gemm (A·Bᵀ with transB, as torch exports nn.Linear on [batch, d]): its weight as INT8 per
        output channel behind a DequantizeLinear on the axis that holds the output channels."""
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = self.inits.get(node.input[1]).astype(np.float32)
        q, scale = int8_per_channel(w.T if trans_b else w)  # per column of the [in, out] form
        stem = f"{node.input[1]}.head"
        qn = self.inits.add(f"{stem}.int8", np.ascontiguousarray(q.T) if trans_b else q)
        sn = self.inits.add(f"{stem}.scale", scale.astype(np.float32))
        zn = self.inits.add(f"{stem}.zero_point", np.zeros(scale.shape, dtype=np.int8))
        out = f"{stem}.dq"
        self.new_nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [out], axis=0 if trans_b else 1,
                                               name=self.uid(stem + "/DQ")))
        node.input[1] = out
        self.quantized_gemms += 1

    def quantize_linear(self, lin: Linear, act_dq: str) -> None:
        lin.node.input[0] = act_dq
        lin.node.input[1] = self.weight_dq(lin.weight)
        self.quantized_gemms += 1

    def group_gemms(self, weight: str, group_dqs: list[str], bounds: list[list[int]], stem: str, out: str) -> None:
        """out = Σ_k DQ(Q(X[:, G_k]))·DQ(W_int8[G_k, :]): one per-tensor INT8 GEMM per group, partials summed."""
        partial = []
        for k, ((a, b), dq) in enumerate(zip(bounds, group_dqs)):
            name = out if len(bounds) == 1 else f"{stem}.peg{k}"
            self.new_nodes.append(helper.make_node("MatMul", [dq, self.weight_dq(weight, (a, b))], [name],
                                                   name=self.uid(f"{stem}/MatMul_g{k}")))
            partial.append(name)
            self.quantized_gemms += 1
        acc = partial[0]
        for k, p in enumerate(partial[1:], start=1):
            nxt = out if k == len(partial) - 1 else f"{stem}.pegsum{k}"
            self.new_nodes.append(helper.make_node("Add", [acc, p], [nxt], name=self.uid(f"{stem}/AddG{k}")))
            acc = nxt

    def peg_linear(self, lin: Linear, group_dqs: list[str], bounds: list[list[int]]) -> None:
        """Replace X·W by Σ_k DQ(Q(X[:, G_k]))·DQ(W_int8[G_k, :])."""
        self.group_gemms(lin.weight, group_dqs, bounds, lin.name, lin.node.output[0])
        self.replaced.add(lin.node.name)  # the partial sums now produce `out`

    def peg_fused(self, lins: list[Linear], group_dqs: list[str], bounds: list[list[int]]) -> None:
        """The same once for `lins` (which all read X): W = [W_1 | W_2 | …] and the bias likewise, then one Split
        writes each linear's biased output."""
        key = tuple(l.weight for l in lins) + tuple(l.bias for l in lins)
        if key not in self.side_by_side:  # one copy however many layers share these weights (ALBERT)
            stem = "+".join(l.weight for l in lins)
            self.side_by_side[key] = (
                self.inits.add(f"{stem}.side_by_side", np.concatenate([self.inits.get(l.weight) for l in lins], 1)),
                self.inits.add(f"{stem}.bias", np.concatenate([self.inits.get(l.bias) for l in lins])))
        weight, bias = self.side_by_side[key]
        stem = f"{lins[0].name}.fused"
        self.group_gemms(weight, group_dqs, bounds, stem, f"{stem}.summed")
        self.new_nodes.append(helper.make_node("Add", [f"{stem}.summed", bias], [f"{stem}.biased"],
                                               name=self.uid(f"{stem}/Bias")))
        widths = self.inits.add(f"{stem}.widths",
                                np.array([self.inits.by_name[l.weight].dims[1] for l in lins], dtype=np.int64))
        self.new_nodes.append(helper.make_node("Split", [f"{stem}.biased", widths], [l.output for l in lins],
                                               axis=-1, name=self.uid(f"{stem}/Split")))
        self.replaced.update(n for l in lins for n in (l.node.name, l.bias_node.name))

    def finish(self) -> Any:
        graph = self.model.graph
        keep = [n for n in graph.node if n.name not in self.replaced]
        read = {x for n in keep + self.new_nodes for x in n.input} | {o.name for o in graph.output}
        self.new_nodes = [n for n in self.new_nodes if n.op_type != "DequantizeLinear" or n.output[0] in read]
        del graph.node[:]
        graph.node.extend(toposort(keep + self.new_nodes, self.model))
        drop_unused_initializers(self.model)
        if self.high == "fp16":
            to_fp16(self.model)
        return self.model


def emit(fp32: Any, recipe: Recipe, target: str, high_precision: str | None = None, copy: bool = True,
         fuse: bool = True) -> tuple[Any, dict]:
    """Return (Q/DQ model, summary) for `target`; `high_precision` defaults to the target's fast dtype.
    `copy=False` rewrites `fp32` in place (saves one copy of the weights when the caller is done with it).
    `fuse=False` keeps one split GEMM per linear where Q, K and V read a grouped tensor (for comparison)."""
    high = high_precision or target_of(target).high_precision
    if copy:
        model = onnx.ModelProto()
        model.CopyFrom(fp32)
    else:
        model = fp32
    graph = parse(model)
    em = Emitter(model, target, high, fuse)
    if recipe.permutation is not None:
        fold_stream_permutation(graph, np.asarray(recipe.permutation), em.inits)
        drop_unused_initializers(model)  # the unpermuted originals: free them before quantizing
        em.inits = Initializers(model)
    all_sites = placement_mod.sites(graph, recipe.placement)
    linears = {l.name: l for l in graph.linears()}
    in_recipe = [s for s in all_sites if s.key in recipe.sites]  # the rest: high-precision fallback
    in_recipe = [s for s in in_recipe if em.spec.int8_heads or not placement_mod.is_head(s.key)]  # by design
    kept = [s for s in in_recipe if s.key not in em.spec.float_sites]
    if not em.spec.takes_grids and any(recipe.sites[s.key].grid is not None for s in kept):
        raise QbertError(f"the recipe has asymmetric activation grids, and {target} runs symmetric INT8 only: "
                         + FOR_TENSORRT, **FOR_TENSORRT_MENTIONS)
    for site in kept:
        _emit_site(em, graph, site, recipe.sites[site.key], linears)
    em.finish()
    meta = {"target": target, "high_precision": high, "quantized_gemms": em.quantized_gemms,
            "quantized_sites": len(kept), "fallback": recipe.fallback, "activation_dtype": em.spec.activations,
            **({"asymmetric_sites": em.asymmetric} if em.asymmetric else {}),
            **({"outlier_gemms": em.outlier_gemms} if em.outlier_gemms else {})}
    if len(kept) < len(in_recipe):
        meta["left_in_float_by_target"] = [s.key for s in in_recipe if s.key in em.spec.float_sites]
    return model, meta


def _emit_site(em: Emitter, graph: BertGraph, site: placement_mod.Site, scale: SiteScale,
               linears: dict[str, Linear]) -> None:
    if not scale.outliers:
        _emit_scales(em, graph, site, scale, linears)
        return
    lins = [linears[n] for n in site.gemm_inputs]
    if scale.bounds is not None or not lins or placement_mod.is_head(site.key) or \
            outliers.other_readers(graph, site):
        raise QbertError(f"recipe: site {site.key} keeps outlier channels but is not a per-tensor input read by "
                         "linear layers only; recalibrate")
    hi = outliers.take_rows(em, site, scale, lins)
    _emit_scales(em, graph, site, scale, linears)
    outliers.add_side_gemms(em, site, scale, lins, hi)


def _emit_scales(em: Emitter, graph: BertGraph, site: placement_mod.Site, scale: SiteScale,
                 linears: dict[str, Linear]) -> None:
    gemm_nodes = {linears[n].node.name: linears[n] for n in site.gemm_inputs}
    readers = graph.consumers(site.tensor)
    if site.consumers is None:
        targets = [(n.name, i) for n in readers for i, x in enumerate(n.input)
                   if x == site.tensor and not n.name.startswith("qbert/")]
    else:
        targets = site.consumers
    nodes = {n.name: n for n in graph.model.graph.node}
    stem = f"act.{site.key}"
    if scale.smooth is not None:
        _emit_smoothed(em, site, scale, targets, gemm_nodes, stem, nodes)
        return
    if scale.bounds is None:
        dq = em.qdq(site.tensor, scale.amax, stem, em.grid(site, scale))
        for name, idx in targets:
            if name in gemm_nodes and idx == 0:
                em.quantize_linear(gemm_nodes[name], dq)
            else:
                nodes[name].input[idx] = dq
                if nodes[name].op_type == "MatMul" and idx == 0 and nodes[name].input[1] not in em.inits.by_name:
                    em.quantized_gemms += 1  # attention batched matmul (not a kept-FP weight GEMM: projection)
                elif nodes[name].op_type == "Gemm" and idx == 0:  # a head (targets with int8_heads only)
                    em.quantize_gemm_weight(nodes[name])
        return
    if not any(name in gemm_nodes and idx == 0 for name, idx in targets):  # no GEMM reads it: no slices needed
        writer = next((l for l in linears.values() if l.output == site.tensor), None)  # attention out, FFN2
        if writer is not None and not _only_targets_read(graph.model, site.tensor, targets):
            writer = None  # something else reads the unscaled tensor: keep the Mul
        scaled = em.scaled_qdq(site.tensor, _channel_scales(scale), stem, writer)
        for name, idx in targets:
            nodes[name].input[idx] = scaled
        return
    group_dqs = []
    for k, ((a, b), amax) in enumerate(zip(scale.bounds, scale.group_amax or [])):
        sl = em.slice_last(site.tensor, a, b, f"{stem}.g{k}")
        group_dqs.append(em.qdq(sl, amax, f"{stem}.g{k}"))
    gemm_readers = [gemm_nodes[name] for name, idx in targets if name in gemm_nodes and idx == 0]
    fused = em.fuse and len(gemm_readers) > 1 and len(scale.bounds) > 1
    if fused:  # Q, K, V: one GEMM per group (measured: benchmarks/split_gemm.py)
        em.peg_fused(gemm_readers, group_dqs, scale.bounds)
    concat = None
    for name, idx in targets:
        if name in gemm_nodes and idx == 0:
            if not fused:
                em.peg_linear(gemm_nodes[name], group_dqs, scale.bounds)
        else:  # the GEMMs' slices exist already: one Concat is cheaper than the Mul → Q/DQ → Mul path
            if concat is None:
                concat = f"{stem}.concat"
                em.new_nodes.append(helper.make_node("Concat", group_dqs, [concat], axis=-1,
                                                     name=em.uid(stem + "/Concat")))
            nodes[name].input[idx] = concat


def _emit_smoothed(em: Emitter, site: placement_mod.Site, scale: SiteScale, targets: list[tuple[str, int]],
                   gemm_nodes: dict[str, Linear], stem: str, nodes: dict[str, Any]) -> None:
    """SmoothQuant (smooth.py): x·(1/m) → per-tensor Q/DQ → GEMMs whose weight rows carry m. Other readers (a PEG
    groups-`auto` site under `full`: the residual Add, the pooler) read the same DQ · m — x on a per-channel grid
    of step s·m_c, so every channel keeps about the same share of its own range (α 0.85: raw ranges 100× apart end
    up 100^0.15 ≈ 2× apart, for equal weight rows), at the price of one Mul instead of a second Q/DQ."""
    m = np.asarray(scale.smooth, dtype=np.float64)
    others = [(name, idx) for name, idx in targets if name not in gemm_nodes or idx != 0]
    gemms = [gemm_nodes[name] for name, idx in targets if (name, idx) not in others]
    for lin in gemms:  # before anything is rewritten: a wrong-length recipe must not half-edit the graph
        rows = em.inits.get(lin.weight).shape[0]
        if rows != len(m):
            raise QbertError(f"recipe: site {site.key} has {len(m)} smoothing factors but {lin.name} reads "
                             f"{rows} channels; recalibrate on this model")
    ln = _foldable_layernorm(em, site, targets) if em.high == "fp32" and others else None
    if ln is not None:  # the LayerNorm writes x/m itself (γ/m, β/m): no Mul before the Q/DQ
        for i in (1, 2):
            em.inits.replace_input(ln, i, lambda v: (v / m).astype(v.dtype), f".smooth.{site.key}")
        smoothed = site.tensor
    else:
        inv = em.inits.add(f"{stem}.smooth_inv", (1.0 / m).astype(np.float32))
        smoothed = f"{stem}.smoothed"
        em.new_nodes.append(helper.make_node("Mul", [site.tensor, inv], [smoothed], name=em.uid(stem + "/Smooth")))
    dq = em.qdq(smoothed, scale.amax, stem, em.grid(site, scale))
    if others:
        back = em.inits.add(f"{stem}.smooth", m.astype(np.float32))
        unsmoothed = f"{stem}.unsmoothed"
        em.new_nodes.append(helper.make_node("Mul", [dq, back], [unsmoothed], name=em.uid(stem + "/Unsmooth")))
        for name, idx in others:
            nodes[name].input[idx] = unsmoothed
    for lin in gemms:
        em.inits.replace_input(lin.node, 1, lambda w: (w * m[:, None]).astype(w.dtype), f".smooth.{site.key}")
        lin.node.input[0] = dq
        lin.node.input[1] = em.weight_dq(lin.node.input[1])
        em.quantized_gemms += 1


def _foldable_layernorm(em: Emitter, site: placement_mod.Site, targets: list[tuple[str, int]]) -> Any:
    """The LayerNormalization that writes the site's tensor, if 1/m can be folded into its γ/β: every reader is
    being rerouted here (none reads the unscaled tensor) and it is no graph output. FP32 graphs only (ORT CPU's
    default) — in FP16 γ/m could fall below the normal range, and TensorRT fuses the Mul into its neighbours."""
    graph = em.model.graph
    ln = next((n for n in graph.node if site.tensor in n.output), None)
    if ln is None or ln.op_type != "LayerNormalization" or len(ln.input) < 3 or \
            not all(x in em.inits.by_name for x in ln.input[1:3]):
        return None
    return ln if _only_targets_read(em.model, site.tensor, targets) else None


def _only_targets_read(model: Any, tensor: str, targets: list[tuple[str, int]]) -> bool:
    """Every node that reads `tensor` is among `targets` (all being rerouted) and it is no graph output — so the
    op that writes it may be changed to write a scaled version."""
    readers = {n.name for n in model.graph.node if tensor in n.input}
    return readers == {name for name, _ in targets} and tensor not in {o.name for o in model.graph.output}


def _channel_scales(scale: SiteScale) -> np.ndarray:
    """Each channel's INT8 scale: its group's (channels are contiguous in the permuted order)."""
    bounds, amax = scale.bounds or [], scale.group_amax or []
    out = np.empty(bounds[-1][1], dtype=np.float64)
    for (a, b), m in zip(bounds, amax):
        out[a:b] = scale_of(m)
    return out
