"""PEG's channel order and groups: which channels share a scale, and how many groups each tensor gets.

Measured on the MiniLM fixture (`full` placement, 512 calibration rows, 1,000 held-out tune rows; flips = held-out
predictions that differ from FP32): equal groups of d/K channels put the few outlier channels (4 of 384) into a
96-channel group whose other members are crushed — K=4 equal, outliers + smallest channels: 8.6 % flips. Sizing the
groups instead (boundaries on 16-channel blocks, chosen by dynamic programming to minimise the mean over channels
of (group clip / channel range)², i.e. the noise each channel gets relative to its own range) cut that to 2.8 %
with 192/112/64/16 channels, sorted by range — the outliers alone in a 16-channel group.

`auto` picks K per tensor from the same measure: one group (a per-tensor scale) unless one scale inflates the noise
beyond SPLIT_NOISE — or GEMM_SPLIT_NOISE for a tensor a GEMM reads, where each group is one more GEMM — and
otherwise the fewest groups within 25 % of the best K's noise. On the fixture that keeps every GEMM per-tensor
and groups only the FFN outputs and residual sums, where the outliers are. Where a GEMM input does need groups
(the bert-base shape's LayerNorm outputs), `auto` smooths it into the GEMMs' weights instead of splitting the GEMMs
(scales.choose_scales, gemm_split): on ORT CPU a split GEMM costs ≈ 1.6× a per-tensor one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from qbert.errors import ConfigError

AUTO = "auto"
MAX_AUTO_GROUPS = 4
ALIGN = 16  # group boundaries fall on multiples of this many channels (INT8 GEMM tiles take K in 16s/32s)
AUTO_SLACK = 1.25  # auto: the fewest groups whose noise is within this factor of MAX_AUTO_GROUPS's
# auto: a tensor stays per-tensor unless the mean (group clip / channel range)² under one scale exceeds SPLIT_NOISE
# (a typical channel keeps < 1/8 of its range), or GEMM_SPLIT_NOISE for GEMM inputs (< 1/30; each group costs a
# GEMM). Fixture, one scale: embeddings/attention sums 6–36, LayerNorm outputs 8–23, FFN inputs 44–226 (split or
# not: the same held-out accuracy), FFN outputs and residual sums 500–27,000.
SPLIT_NOISE = 64.0
GEMM_SPLIT_NOISE = 1000.0
FLOOR = 1e-3  # channel ranges below FLOOR × the median count as FLOOR × median (dead channels)


def check_groups(groups: int | str, hidden: int) -> None:
    if groups == AUTO:
        return
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ConfigError("groups", groups, "expected a positive integer, or auto")
    if groups > hidden:
        raise ConfigError("groups", groups, f"more groups than the {hidden} channels of the hidden size")


def align(hidden: int, groups: int) -> int:
    """Block size for group boundaries: ALIGN where it divides the hidden size into ≥ `groups` blocks."""
    return next(a for a in (ALIGN, 8, 4, 2, 1) if hidden % a == 0 and hidden // a >= groups)


def stream_permutation(channel_amax: Sequence[np.ndarray]) -> np.ndarray:
    """One channel order for the whole residual stream: ascending by each channel's worst range relative to its
    tensor's median, over all stream tensors — so the outlier channels end up together, last."""
    score = np.max(np.stack([c / max(float(np.median(c)), 1e-12) for c in channel_amax]), axis=0)
    return np.argsort(score, kind="stable").astype(np.int64)


def _relative(ordered: np.ndarray) -> np.ndarray:
    return 1.0 / np.maximum(ordered, FLOOR * max(float(np.median(ordered)), 1e-12)) ** 2


def noise(ordered: np.ndarray, bounds: list[list[int]]) -> float:
    """Mean over channels of (group clip / channel range)²: 1 if every channel had its own scale."""
    inv = _relative(ordered)
    return float(sum(ordered[a:b].max() ** 2 * inv[a:b].sum() for a, b in bounds) / len(ordered))


def layouts(ordered: Sequence[np.ndarray], max_groups: int) -> dict[int, list[list[int]]]:
    """For each K ≤ max_groups, the contiguous boundaries (on aligned blocks) that minimise the summed noise of
    all tensors — one layout per K, shared by every tensor with that K (so shared weights stay shared)."""
    d = len(ordered[0])
    a = align(d, max_groups)
    n = d // a
    block_max = np.stack([o.reshape(n, a).max(axis=1) for o in ordered])  # [tensors, blocks]
    block_inv = np.stack([_relative(o).reshape(n, a).sum(axis=1) for o in ordered])
    cost = np.full((n + 1, n + 1), np.inf)
    for i in range(n):  # cost[i, j]: blocks i..j-1 as one group
        running = np.maximum.accumulate(block_max[:, i:], axis=1) ** 2
        cost[i, i + 1:] = (running * np.cumsum(block_inv[:, i:], axis=1)).sum(axis=0)
    best = np.full((max_groups + 1, n + 1), np.inf)
    arg = np.zeros((max_groups + 1, n + 1), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, max_groups + 1):
        for j in range(k, n + 1):
            total = best[k - 1, :j] + cost[:j, j]
            arg[k, j] = int(np.argmin(total))
            best[k, j] = total[arg[k, j]]
    out = {}
    for k in range(1, max_groups + 1):
        bounds, j = [], n
        for kk in range(k, 0, -1):
            i = arg[kk, j]
            bounds.append([int(i * a), int(j * a)])
            j = i
        out[k] = bounds[::-1]
    return out


def auto_groups(ordered: np.ndarray, options: dict[int, list[list[int]]], gemm_input: bool) -> int:
    """How many groups one tensor gets under groups `auto` (see the module docstring)."""
    costs = {k: noise(ordered, b) for k, b in options.items()}
    if costs[1] <= (GEMM_SPLIT_NOISE if gemm_input else SPLIT_NOISE):
        return 1
    best = min(costs.values())
    return min(k for k, c in costs.items() if c <= AUTO_SLACK * best)
