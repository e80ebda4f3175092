"""Per-site clip values from observed statistics: one per tensor (what every method starts from), or PEG's
channel groups on the residual stream."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from qbert.calibration import groups as G, clips as C
from qbert.calibration.site_scale import SiteScale
from qbert.calibration.smooth import ALPHA, factors


GROUP_RANGES = ("max", "mse", "percentile")
GEMM_SPLITS = ("smooth", "split")  # how a PEG-grouped tensor reaches the GEMMs that read it (peg_scales)


def group_clip(stats, channels: np.ndarray, group_range: str, percentile: float) -> float:
    """One PEG group's clip value: its channels' largest |x| (`max`), or MSE/percentile on the union of their
    histograms (needs the observer's channel_histograms) — never above the largest |x|."""
    top = max(float(np.asarray(stats.channel_amax)[channels].max()), C.TINY)
    if group_range == "max":
        return top
    if stats.channel_hist is None:
        raise ValueError("per-group mse/percentile ranges need Observer(channel_histograms=True)")
    edges, counts = stats.channel_hist.group(channels)
    clip = C.mse_clip(edges, counts) if group_range == "mse" else C.percentile_clip(edges, counts, percentile)
    return max(min(clip, top), C.TINY)


def gemm_split_of(groups: int | str, gemm_split: str | None) -> str:
    """`gemm_split` as given, else its default for `groups` (see peg_scales)."""
    out = gemm_split or ("smooth" if groups == G.AUTO else "split")
    if out not in GEMM_SPLITS:
        raise ValueError(f"gemm_split {out!r}: one of {GEMM_SPLITS}")
    return out


def per_tensor_scales(chosen, stats, clip: Callable[[Any], float | None] | None = None,
                      skip: Mapping[str, SiteScale] | None = None) -> dict[str, SiteScale]:
    """One clip value per site: `clip(site statistics)` where it gives one (a histogram rule), else the observed
    max |x| — never above it; the sites in `skip` keep the scales given there."""
    out: dict[str, SiteScale] = {}
    for site in chosen:
        st = stats[site.key]
        if skip and site.key in skip:
            out[site.key] = skip[site.key]
            continue
        amax = clip(st) if clip is not None else None
        amax = amax if amax is not None else st.amax
        out[site.key] = SiteScale(site.tensor, max(float(min(amax, st.amax) if amax else st.amax), C.TINY))
    return out


def peg_scales(chosen, stats, percentile: float, groups: int | str, permute: bool, group_range: str = "max",
               weight_rows: dict[str, np.ndarray] | None = None, alpha: float = ALPHA, gemm_split: str | None = None
               ) -> tuple[dict[str, SiteScale], list[int] | None]:
    """PEG's residual-stream sites: the stream permutation and each stream tensor's groups
    (sized by groups.layouts; K per tensor under `auto`, where K=1 means one per-tensor scale) and each group's
    clip value from `group_range` (see group_clip). Other sites are not in the result (per_tensor_scales).

    `gemm_split` — how a grouped tensor reaches the GEMMs that read it: `split` runs one INT8 GEMM per group
    (PEG as published); `smooth` instead migrates its outlier range into those GEMMs' weight rows (smooth.py,
    strength `alpha`, from `weight_rows`) so each stays one per-tensor INT8 GEMM; the tensor's other readers
    (the `full` placement's residual Add) read that Q/DQ times m, a per-channel grid. Default: `smooth` under groups `auto` —
    a split GEMM costs ≈ 1.6× a per-tensor one on ORT CPU (benchmarks/split_gemm.py) — and `split` for a fixed K."""
    gemm_split = gemm_split_of(groups, gemm_split)
    peg_sites = [s for s in chosen if s.stream and stats[s.key].channel_amax is not None]
    peg: dict[str, SiteScale] = {}
    if not peg_sites:
        return peg, None
    amaxes = [np.asarray(stats[s.key].channel_amax, dtype=np.float64) for s in peg_sites]
    order = G.stream_permutation(amaxes) if permute else np.arange(len(amaxes[0]))
    ordered = [a[order] for a in amaxes]
    options = G.layouts(ordered, G.MAX_AUTO_GROUPS if groups == G.AUTO else groups)
    for site, a, o in zip(peg_sites, amaxes, ordered):
        k = G.auto_groups(o, options, bool(site.gemm_inputs)) if groups == G.AUTO else groups
        how = group_range if k > 1 else "max"  # a single group is a whole stream tensor: never clip it
        clips = [group_clip(stats[site.key], order[a:b], how, percentile) for a, b in options[k]]
        rows = (weight_rows or {}).get(site.key)
        if k > 1 and gemm_split == "smooth" and site.gemm_inputs and rows is not None:
            peg[site.key] = _smoothed(site, a, rows, order, alpha)
        else:
            peg[site.key] = SiteScale(site.tensor, clips[0]) if k == 1 else \
                SiteScale(site.tensor, max(clips), clips, options[k])
    return peg, [int(i) for i in order] if permute else None


def _smoothed(site, channel_amax: np.ndarray, rows: np.ndarray, order: np.ndarray, alpha: float) -> SiteScale:
    """A grouped GEMM input whose GEMMs read it smoothed (gemm_split `smooth`): factors m in the permuted order
    (emission permutes the stream before it quantizes) and the smoothed tensor's per-tensor clip. Its non-GEMM
    readers (`full`) read the same Q/DQ times m (emit._emit_smoothed), so no groups are kept."""
    m = factors(channel_amax, rows, alpha)[order]
    clip = max(float((channel_amax[order] / m).max()), C.TINY)
    return SiteScale(site.tensor, clip, smooth=[float(v) for v in m])
