"""Streaming activation statistics: ORT runs the FP32 graph with the observed tensors exposed as outputs.

Per batch, each tensor is reduced at once to: absolute max, per-channel absolute max (hidden-dim tensors),
signed extremes per tensor and per channel where asked for (asymmetric grids), a histogram of |x| whose range doubles as needed, and NaN/Inf counts. Nothing else is kept, so memory is
bounded by one batch's activations (unlike ORT's calibrators, which keep every activation), and
variable-length batches are no problem. Padding positions are excluded through the attention mask.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from qbert.calibration.placement import Site
from qbert.errors import QbertError


class AbsHistogram:
    """Histogram of |x| over [0, range): when a value exceeds the range, the range doubles and pairs of
    bins merge, so one pass suffices and resolution stays within 2× of the final range / bins. The range is
    always a power of two and `bins` is too, so x·bins/range is exact and a value lands in the same final bin
    whichever batch it came in: the histogram (and every scale chosen from it) does not depend on the batch
    size."""

    def __init__(self, bins: int = 4096, energy: bool = False):
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.energy = np.zeros(bins) if energy else None  # Σ|x|² per bin, for energy-share statistics
        self.range = 0.0

    def add(self, a: np.ndarray) -> None:
        if a.size == 0:
            return
        top = float(a.max())
        if self.range == 0.0:  # a power of two, so the final range and every bin are batch-invariant:
            self.range = 2.0 ** math.ceil(math.log2(top)) if top > 0 else 2.0 ** -40  # merges are exact
        while top >= self.range:
            merged = self.counts.reshape(-1, 2).sum(1)
            self.counts = np.concatenate([merged, np.zeros(self.bins // 2, dtype=np.int64)])
            if self.energy is not None:
                self.energy = np.concatenate([self.energy.reshape(-1, 2).sum(1), np.zeros(self.bins // 2)])
            self.range *= 2.0
        idx = np.minimum((a * (self.bins / self.range)).astype(np.int64), self.bins - 1).ravel()
        self.counts += np.bincount(idx, minlength=self.bins)
        if self.energy is not None:
            flat = a.ravel().astype(np.float64)
            self.energy += np.bincount(idx, weights=flat * flat, minlength=self.bins)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.range, self.bins + 1)


class ChannelHistogram:
    """Per-channel histogram of |x| on fixed log-spaced bins (SUB bins per octave over [2^LOW, 2^HIGH), plus a
    bin for values below): one shape for every channel and batch, so channels' histograms add up into a PEG
    group's after the groups are chosen — per-group MSE/percentile ranges from one observation pass. Bin width
    is 2^(1/SUB) − 1 ≈ 4.4 % of the value; 384 channels cost 2.5 MB."""

    LOW, HIGH, SUB = -24, 16, 16

    def __init__(self, channels: int):
        self.bins = (self.HIGH - self.LOW) * self.SUB + 1
        self.counts = np.zeros((channels, self.bins), dtype=np.int64)

    def add(self, a: np.ndarray) -> None:
        """`a`: |x| as [tokens, channels]."""
        with np.errstate(divide="ignore"):
            b = np.floor((np.log2(a) - self.LOW) * self.SUB)
        idx = np.clip(b, -1, self.bins - 2).astype(np.int64) + 1  # bin 0: below 2^LOW (and zeros)
        flat = idx + np.arange(a.shape[1], dtype=np.int64) * self.bins
        self.counts += np.bincount(flat.ravel(), minlength=self.counts.size).reshape(self.counts.shape)

    @property
    def edges(self) -> np.ndarray:
        return np.concatenate([[0.0], 2.0 ** (self.LOW + np.arange(self.bins) / self.SUB)])

    def group(self, channels: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """(edges, counts) of the union of `channels`."""
        return self.edges, self.counts[channels].sum(axis=0)


@dataclass
class TensorStats:
    amax: float = 0.0
    count: int = 0
    nonfinite: int = 0
    channel_amax: np.ndarray | None = None
    hist: AbsHistogram | None = None
    moments: np.ndarray = field(default_factory=lambda: np.zeros(4))  # Σx, Σx², Σx³, Σx⁴ (analysis)
    channel_energy: np.ndarray | None = None  # Σ over tokens of x² per channel (analysis)
    channel_hist: ChannelHistogram | None = None  # PEG per-group ranges (stream tensors only)
    channel_sum: np.ndarray | None = None  # Σ over tokens of x per channel (bias correction: E[x])
    tokens: int = 0
    vmin: float = math.inf  # signed extremes (an asymmetric grid's ends, grids.py)
    vmax: float = -math.inf
    channel_min: np.ndarray | None = None  # per channel, signed (a smoothed tensor's ends: x/m per channel)
    channel_max: np.ndarray | None = None


def _token_mask(mask: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask broadcastable to a tensor of `layout` (bsh, bhsd, bhds, bhss)."""
    m = mask.astype(bool)
    if layout == "bsh":
        return m[:, :, None]
    if layout == "bhsd":
        return m[:, None, :, None]
    if layout == "bhds":
        return m[:, None, None, :]
    if layout == "bhss":
        return m[:, None, :, None] & m[:, None, None, :]
    raise ValueError(layout)


def masked_values(x: np.ndarray, layout: str, mask: np.ndarray | None) -> np.ndarray:
    """Rows of a [.., d] view with padding removed (bsh keeps channels as the last axis)."""
    if layout == "bh":  # one row per sequence (a head's input): no token axis to mask
        return x.reshape(-1, x.shape[-1])
    if mask is None:
        return x.reshape(-1, x.shape[-1]) if layout == "bsh" else x.ravel()
    if layout == "bsh":
        return x[mask.astype(bool)]  # [tokens, d]
    full = np.broadcast_to(_token_mask(mask, layout, x.shape), x.shape)
    return x[full]


class Observer:
    """Feeds batches through ORT and accumulates TensorStats per site."""

    def __init__(self, model, sites: list[Site], histograms: bool, include_padding: bool = False,
                 threads: int | None = None, bins: int = 4096, analysis: bool = False, consume: bool = False,
                 channel_histograms: bool = False, channel_sums: bool = False, extremes: bool = False):
        """`channel_histograms` keeps a ChannelHistogram per stream tensor (PEG's per-group ranges);
        `channel_sums` the per-channel sum of x (bias correction's E[x]); `extremes` the signed min and max per
        tensor and per channel (asymmetric grids, grids.py) — all off unless asked for: they cost every observed
        batch.
        `consume=True` lets the observer move the model's weights out to a temporary file for ORT to load
        (the caller must not use `model` afterwards): session creation then never holds two copies."""
        import onnx
        import onnxruntime as ort

        self.sites = sites
        self.include_padding = include_padding
        names = list(dict.fromkeys(s.tensor for s in sites))
        # Expose the observed tensors as extra outputs on the caller's model for as long as the session is
        # being created (no second copy of the weights), then restore it.
        n_outputs = len(model.graph.output)
        existing = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in existing)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.enable_cpu_mem_arena = False  # give each batch's activations back instead of pooling them
        from qbert.ort_session import QUIET, session_for, session_from_path

        so.log_severity_level = QUIET
        if threads:
            so.intra_op_num_threads = threads

        try:
            if consume:
                import tempfile
                from pathlib import Path

                with tempfile.TemporaryDirectory(prefix="qbert-observe-") as tmp:
                    onnx.save(model, str(Path(tmp) / "m.onnx"), save_as_external_data=True,
                              all_tensors_to_one_file=True, location="m.onnx.data")
                    self.session = session_from_path(Path(tmp) / "m.onnx", so)
            else:
                self.session = session_for(model, so)
        finally:
            del model.graph.output[n_outputs:]
        self.names = names
        self.analysis = analysis
        self.channel_histograms = channel_histograms
        self.channel_sums = channel_sums
        self.extremes = extremes
        self.stats = {s.key: TensorStats(hist=AbsHistogram(bins, energy=analysis) if histograms or analysis
                                         else None) for s in sites}

    def observe(self, feeds: dict[str, np.ndarray]) -> None:
        outs = dict(zip(self.names, self.session.run(self.names, feeds)))
        mask = None if self.include_padding else feeds["attention_mask"]
        for site in self.sites:
            x = outs[site.tensor]
            st = self.stats[site.key]
            vals = masked_values(x, site.layout, mask)
            finite = np.isfinite(vals)
            if not finite.all():
                st.nonfinite += int((~finite).sum())
                vals = np.where(finite, vals, 0.0)
            a = np.abs(vals)
            if a.size:
                st.amax = max(st.amax, float(a.max()))
                if self.extremes:
                    st.vmin, st.vmax = min(st.vmin, float(vals.min())), max(st.vmax, float(vals.max()))
                if site.layout == "bsh":
                    ch = a.max(axis=0)
                    if self.extremes:
                        lo, hi = vals.min(axis=0), vals.max(axis=0)
                        st.channel_min = lo if st.channel_min is None else np.minimum(st.channel_min, lo)
                        st.channel_max = hi if st.channel_max is None else np.maximum(st.channel_max, hi)
                    if self.channel_sums:
                        sums = vals.sum(axis=0, dtype=np.float64)
                        st.channel_sum = sums if st.channel_sum is None else st.channel_sum + sums
                        st.tokens += vals.shape[0]
                    st.channel_amax = ch if st.channel_amax is None else np.maximum(st.channel_amax, ch)
                    if self.channel_histograms and site.stream:
                        if st.channel_hist is None:
                            st.channel_hist = ChannelHistogram(a.shape[1])
                        st.channel_hist.add(a)
                if st.hist is not None:
                    st.hist.add(a)
                if self.analysis:
                    v = vals.astype(np.float64)
                    v2 = v * v
                    st.moments += [v.sum(), v2.sum(), (v2 * v).sum(), (v2 * v2).sum()]
                    if site.layout == "bsh":
                        e = v2.sum(axis=0)
                        st.channel_energy = e if st.channel_energy is None else st.channel_energy + e
            st.count += int(a.size)

    def run(self, batches: Iterable[dict[str, np.ndarray]], advance=lambda n: None) -> dict[str, TensorStats]:
        for feeds in batches:
            self.observe(feeds)
            advance(len(feeds["input_ids"]))
        bad = [k for k, s in self.stats.items() if s.nonfinite]
        if bad:
            raise QbertError(f"activations contain NaN/Inf at {bad[:3]}: the FP32 model is broken for this "
                             "data; check the model and inputs before calibrating")
        return self.stats
