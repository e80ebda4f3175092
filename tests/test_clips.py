"""Clip values from statistics (calibration/clips.py, pure numpy): symmetric ranges, percentile keeps negatives, robust to zeros."""
import numpy as np
import pytest

from qbert.calibration import groups as G, clips as C
from qbert.calibration.observe import AbsHistogram
from qbert.errors import QbertError


def hist_of(*arrays, bins=4096):
    h = AbsHistogram(bins)
    for a in arrays:
        h.add(np.abs(a))
    return h


def test_histogram_range_doubling_matches_numpy_percentile():
    rng = np.random.default_rng(0)
    parts = [rng.normal(0, s, 20000) for s in (0.1, 1.0, 5.0)]  # range grows batch by batch
    h = hist_of(*parts)
    allv = np.abs(np.concatenate(parts))
    assert h.counts.sum() == allv.size and h.range >= allv.max()
    for p in (50.0, 99.0, 99.9):
        assert C.percentile_amax(h, p) == pytest.approx(np.percentile(allv, p), rel=0.01, abs=h.range / 2048)


def test_percentile_is_symmetric_and_keeps_negative_values():
    """The study's percentile clamped the lower bound to 0, zeroing every negative value."""
    rng = np.random.default_rng(1)
    x = rng.normal(-0.5, 1.0, 100000)
    amax = C.percentile_amax(hist_of(x), 99.99)
    s = C.scale_of(amax)
    xq = np.clip(np.rint(x / s), -128, 127) * s
    neg = x < -0.1
    assert (xq[neg] < 0).all()
    assert np.abs(xq - x)[np.abs(x) < amax].max() <= s / 2 + 1e-9


@pytest.mark.parametrize("p", [0.0, -1.0, 100.5])
def test_percentile_out_of_range(p):
    with pytest.raises(QbertError, match=r"\(0, 100\]"):
        C.percentile_amax(hist_of(np.ones(10)), p)


def test_all_zero_tensor_gives_finite_positive_scale():
    h = hist_of(np.zeros(1000))
    for amax in (0.0, C.percentile_amax(h, 99.9), C.mse_amax(h), C.entropy_amax(h)):
        s = C.scale_of(amax)
        assert np.isfinite(s) and s > 0


def test_mse_and_entropy_clip_heavy_tails_but_not_uniform():
    rng = np.random.default_rng(2)
    heavy = rng.standard_t(2, 200000)
    h = hist_of(heavy)
    top = np.abs(heavy).max()

    def mse(c):
        s = c / 127
        return ((np.clip(np.rint(heavy / s), -127, 127) * s - heavy) ** 2).sum()

    brute = min(mse(c) for c in np.linspace(top / 100, top, 200))
    assert mse(C.mse_amax(h)) <= 1.05 * brute < mse(top)
    assert C.entropy_amax(h) < 0.3 * top
    uni = rng.uniform(-1, 1, 200000)
    assert C.mse_amax(hist_of(uni)) > 0.9


def test_groups_give_outliers_a_small_group_of_their_own():
    from itertools import combinations

    amax = np.ones(128)
    amax[[5, 19]] = 100.0
    amax[40:60] = 3.0
    order = G.stream_permutation([amax])
    assert sorted(order.tolist()) == list(range(128)) and set(order[-2:].tolist()) == {5, 19}
    ordered = amax[order]
    layouts = G.layouts([ordered], 4)
    assert layouts[4][-1] == [112, 128] and layouts[1] == [[0, 128]]  # the outliers alone in one 16-block
    equal = [[0, 32], [32, 64], [64, 96], [96, 128]]
    assert G.noise(ordered, layouts[4]) < G.noise(ordered, equal) / 5
    for k in (2, 3):  # the dynamic programme finds the best boundaries on 16-channel blocks
        brute = min(G.noise(ordered, [[a, b] for a, b in zip((0, *cut), (*cut, 128))])
                    for cut in combinations(range(16, 128, 16), k - 1))
        assert G.noise(ordered, layouts[k]) == pytest.approx(brute)


def test_auto_groups_split_only_where_outliers_are():
    rng = np.random.default_rng(0)
    plain = rng.uniform(0.5, 2.0, 128)
    strong = plain.copy()
    strong[[3, 77]] = 400.0  # every other channel keeps < 1/200 of the group range
    mild = plain.copy()
    mild[[3, 77]] = 15.0
    for tensor, gemm, want_split in ((plain, False, False), (strong, False, True), (mild, True, False),
                                     (strong, True, True)):
        o = np.sort(tensor)
        k = G.auto_groups(o, G.layouts([o], G.MAX_AUTO_GROUPS), gemm_input=gemm)
        assert (k > 1) == want_split, (tensor.max(), gemm, k)


@pytest.mark.parametrize("k", [0, -2, 129, "x", True])
def test_bad_group_counts(k):
    with pytest.raises(QbertError, match="^groups="):
        G.check_groups(k, 128)
    G.check_groups("auto", 128)


def test_channel_histograms_add_up_to_a_groups_percentile_and_mse():
    """Per-channel log-binned histograms: batch-split invariant, and a group's union gives its percentile / MSE
    clip within one bin (2^(1/16)) of the same statistic on the group's raw values."""
    from qbert.calibration.observe import ChannelHistogram

    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_t(4, (6000, 8)) * np.array([0.1, 0.2, 0.1, 0.3, 5.0, 8.0, 0.2, 0.1]))
    x[:5] = 0.0  # zeros land in the bottom bin, not in a NaN
    one, two = ChannelHistogram(8), ChannelHistogram(8)
    one.add(x)
    two.add(x[:2500])
    two.add(x[2500:])
    assert (one.counts == two.counts).all() and one.counts.sum() == x.size
    step = 2.0 ** (1 / ChannelHistogram.SUB)
    for channels in ([0, 1, 2, 3], [4, 5], [6]):
        edges, counts = one.group(np.array(channels))
        vals = x[:, channels].ravel()
        want = np.percentile(vals, 99.9, method="inverted_cdf")  # the value at rank ⌈p·n⌉
        got = C.percentile_clip(edges, counts, 99.9)
        assert want <= got <= want * step * 1.0001
        fine = hist_of(vals, bins=2 ** 16)
        assert C.mse_clip(edges, counts) == pytest.approx(C.mse_amax(fine), rel=0.1)
        assert C.mse_clip(edges, counts) < vals.max()  # heavy tails: MSE clips


def test_group_clip_never_exceeds_the_groups_max():
    from types import SimpleNamespace

    from qbert.calibration.observe import ChannelHistogram
    from qbert.calibration.scales import group_clip

    rng = np.random.default_rng(4)
    x = np.abs(rng.normal(0, 1, (4000, 4)))
    h = ChannelHistogram(4)
    h.add(x)
    st = SimpleNamespace(channel_amax=x.max(0), channel_hist=h)
    g = np.array([1, 2])
    assert group_clip(st, g, "max", 99.99) == x[:, 1:3].max()
    assert group_clip(st, g, "percentile", 100.0) == x[:, 1:3].max()  # the top bin's edge is capped at the max
    assert group_clip(st, g, "percentile", 99.0) < x[:, 1:3].max()
    assert group_clip(st, g, "mse", 99.99) < x[:, 1:3].max()
    with pytest.raises(ValueError):
        group_clip(SimpleNamespace(channel_amax=x.max(0), channel_hist=None), g, "mse", 99.99)
