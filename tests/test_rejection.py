"""The numba rejection kernels against a plain numpy reference, pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest

from oscdeep.rejection import (
    CombineMethod,
    RejectionMethod,
    RejectionParams,
    sorting_network,
    reject_and_combine,
)

METHODS = ["none", "percentile", "sigma", "winsorized", "linear"]


def reference_pixel(x: np.ndarray, w: np.ndarray, p: RejectionParams
                    ) -> tuple[float, int, int, int]:
    """One pixel, written for clarity: returns (value, n_low, n_high, n_used)."""
    frames = np.flatnonzero(~np.isnan(x))
    v = x[frames].astype(np.float64)
    n = v.size
    if n == 0:
        return np.nan, 0, 0, 0
    keep = np.ones(n, bool)
    low = np.zeros(n, bool)
    high = np.zeros(n, bool)
    passes = 0

    def more() -> bool:
        return keep.sum() >= 3 and (p.max_iter is None or passes < p.max_iter)

    if p.method == RejectionMethod.PERCENTILE and n >= 3:
        c = np.median(v)
        if c != 0:
            lo, hi = v < c - p.percentile_low * abs(c), v > c + p.percentile_high * abs(c)
            if (~lo & ~hi).sum() >= 2:
                low, high, keep = lo, hi, ~lo & ~hi
    elif p.method in (RejectionMethod.SIGMA, RejectionMethod.WINSORIZED):
        while more():
            kept = v[keep]
            c, s = np.median(kept), np.std(kept, ddof=1)
            if p.method == RejectionMethod.WINSORIZED and s > 0:
                for _ in range(100_000):  # to the fixed point (Siril stops within 0.05 %)
                    s_new = 1.134 * np.std(np.clip(kept, c - 1.5 * s, c + 1.5 * s), ddof=1)
                    done = abs(s_new - s) <= s * 1e-13
                    s = s_new
                    if done or s == 0:
                        break
            new_low = keep & (v < c - p.sigma_low * s)
            new_high = keep & (v > c + p.sigma_high * s)
            new_keep = keep & ~new_low & ~new_high
            if new_keep.sum() < 2 or new_keep.sum() == keep.sum():
                break
            low |= new_low
            high |= new_high
            keep = new_keep
            passes += 1
    elif p.method == RejectionMethod.LINEAR:
        while more():
            members = np.flatnonzero(keep)
            order = members[np.lexsort((frames[members], v[members]))]  # by value, then frame
            y = v[order]
            rank = np.arange(y.size)
            slope, icpt = np.polyfit(rank, y, 1)
            resid = y - (slope * rank + icpt)
            s = np.mean(np.abs(resid))
            if s == 0:
                break
            tie = 1 + 1e-9  # exact ties (a lone outlier sits at m/2 * s) are kept
            lo, hi = -resid > p.sigma_low * s * tie, resid > p.sigma_high * s * tie
            if (~lo & ~hi).sum() < 2 or not (lo | hi).any():
                break
            low[order[lo]] = True
            high[order[hi]] = True
            keep[order[lo | hi]] = False
            passes += 1
    if p.combine == CombineMethod.MEDIAN:
        value = np.median(v[keep])
    else:
        value = np.sum(w[frames[keep]] * v[keep]) / np.sum(w[frames[keep]])
    return value, int(low.sum()), int(high.sum()), int(keep.sum())


def reference(block: np.ndarray, w: np.ndarray | None, p: RejectionParams):
    w = np.ones(block.shape[0]) if w is None else w
    rows = [reference_pixel(block[:, j], w, p) for j in range(block.shape[1])]
    values, lows, highs, used = (np.array(c) for c in zip(*rows, strict=True))
    return values, lows, highs, used


def make_block(n: int, p: int, seed: int) -> np.ndarray:
    """Noise around 100 with cosmic-ray-like highs, cold lows, NaN gaps and all-NaN pixels."""
    rng = np.random.default_rng(seed)
    block = rng.normal(100.0, 5.0, (n, p)) + np.linspace(0, 20, p)
    hits = rng.random((n, p))
    block[hits < 0.04] += rng.uniform(50, 3000, (hits < 0.04).sum())
    block[hits > 0.98] -= rng.uniform(30, 80, (hits > 0.98).sum())
    block[rng.random((n, p)) < 0.08] = np.nan
    block[:, :3] = np.nan  # no data at all
    block[: n - 1, 3] = np.nan  # a single valid value
    block[: n - 2, 4] = np.nan  # two valid values
    block[:, 5] = 42.0  # all equal
    return block.astype(np.float32)


@pytest.mark.parametrize("n", [3, 8, 25])
@pytest.mark.parametrize("method", METHODS)
def test_kernel_matches_reference(method: str, n: int) -> None:
    block = make_block(n, 600, seed=n)
    weights = np.random.default_rng(7).uniform(0.5, 2.0, n)
    for combine in ("mean", "median"):
        for w in (None, weights):
            params = RejectionParams(method, combine, sigma_low=2.5, sigma_high=3.0)
            got = reject_and_combine(block, weights=w, params=params)
            want = reference(block, w if combine == "mean" else None, params)
            np.testing.assert_allclose(got.values, want[0], rtol=2e-6, atol=1e-4,
                                       equal_nan=True)
            for g, r in zip(got[1:], want[1:], strict=True):
                np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("n", [4, 9, 24, 41])
def test_winsorized_spread_matches_reference_on_hard_samples(n: int) -> None:
    """The kernel solves the winsorized iteration's fixed point segment by segment; the
    reference iterates to it. Heavy tails, two populations, coarse integers and uniform
    values move many values across the clamp limits on the way."""
    rng = np.random.default_rng(100 + n)
    p = 150
    block = np.concatenate([
        rng.standard_cauchy((n, p)) * 3 + 100,
        np.where(rng.random((n, p)) < 0.3, 140.0, 100.0) + rng.normal(0, 2, (n, p)),
        rng.integers(98, 103, (n, p)).astype(float),
        rng.uniform(0, 10, (n, p)),
    ], axis=1).astype(np.float32)
    for low, high in ((3.0, 3.0), (1.5, 2.5)):
        params = RejectionParams("winsorized", sigma_low=low, sigma_high=high)
        got = reject_and_combine(block, params=params)
        want = reference(block, None, params)
        np.testing.assert_allclose(got.values, want[0], rtol=2e-6, equal_nan=True)
        for g, r in zip(got[1:], want[1:], strict=True):
            np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("n", [3, 4, 12, 24, 41])
@pytest.mark.parametrize("method", ["sigma", "winsorized"])
def test_tiles_of_complete_pixels_match_reference(method: str, n: int) -> None:
    """Where every pixel of a tile has all its values (the usual case inside a stack), the
    first pass runs across the tile's pixels at once; it must give the scalar results,
    including pixels whose clipping goes on for more passes or stops at max_iter."""
    rng = np.random.default_rng(300 + n)
    p = 64 * 6 + 17  # a partial tile at the end
    block = rng.normal(100.0, 5.0, (n, p)) + np.linspace(0, 30, p)
    hits = rng.random((n, p))
    block[hits < 0.03] += rng.uniform(40, 5000, (hits < 0.03).sum())
    block[hits > 0.99] -= rng.uniform(20, 60, (hits > 0.99).sum())
    block[:, 64:128] = rng.standard_cauchy((n, 64)) * 4 + 100  # heavy tails
    block[:, 128:192] = rng.integers(98, 102, (n, 64))  # coarse integers, many ties
    block = block.astype(np.float32)
    for low, high, max_iter in ((3.0, 3.0, None), (2.0, 2.5, None), (1.5, 1.5, 1),
                                (2.0, 2.0, 2)):
        params = RejectionParams(method, sigma_low=low, sigma_high=high, max_iter=max_iter)
        got = reject_and_combine(block, params=params)
        want = reference(block, None, params)
        np.testing.assert_allclose(got.values, want[0], rtol=2e-6)
        for g, r in zip(got[1:], want[1:], strict=True):
            np.testing.assert_array_equal(g, r)


def test_max_iter_limits_passes() -> None:
    block = make_block(25, 400, seed=3)
    for method in ("sigma", "winsorized", "linear"):
        params = RejectionParams(method, sigma_low=1.5, sigma_high=1.5, max_iter=1)
        got = reject_and_combine(block, params=params)
        want = reference(block, None, params)
        np.testing.assert_array_equal(got.n_used, want[3])
        unlimited = reject_and_combine(block, params=RejectionParams(
            method, sigma_low=1.5, sigma_high=1.5))
        assert unlimited.n_used.sum() < got.n_used.sum()  # later passes reject more


def test_no_data_gives_nan_and_zero_counts() -> None:
    block = np.full((6, 4), np.nan, np.float32)
    for method in [*METHODS, "median"]:
        got = reject_and_combine(block, params=RejectionParams(method))
        assert np.isnan(got.values).all()
        assert not got.n_used.any() and not got.n_low.any() and not got.n_high.any()


def test_median_shorthand_and_aliases() -> None:
    params = RejectionParams("median")
    assert params.method is RejectionMethod.NONE and params.combine is CombineMethod.MEDIAN
    assert RejectionMethod("w") is RejectionMethod.WINSORIZED
    assert RejectionMethod("linearfit") is RejectionMethod.LINEAR
    with pytest.raises(ValueError):
        RejectionParams("bogus")
    with pytest.raises(ValueError):
        RejectionParams(sigma_low=-1)


def test_frame_counts_name_the_frames_with_outliers() -> None:
    rng = np.random.default_rng(5)
    block = rng.normal(0, 1, (12, 5000)).astype(np.float32)
    block[4, ::10] += 50  # frame 4 has a trail on one pixel in ten
    block[9, ::25] -= 50
    counts = np.zeros((12, 3), np.int64)
    got = reject_and_combine(block, params=RejectionParams("winsorized"), frame_counts=counts)
    assert counts[4, 1] >= 500 and counts[9, 0] >= 200
    assert counts[:, 2].tolist() == [5000] * 12
    assert counts[:, :2].sum() == got.n_low.sum() + got.n_high.sum()
    others = np.delete(counts[:, 1], 4)
    assert others.max() < 60  # honest 3-sigma tails only


def test_weights_are_checked() -> None:
    block = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError):
        reject_and_combine(block, weights=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError):
        reject_and_combine(block, weights=np.ones(2))


@pytest.mark.parametrize("method", ["winsorized", "linear"])
def test_large_stack_matches_reference(method: str) -> None:
    """200 frames (a large sorting network; the merge-sort path of linear fit)."""
    block = make_block(200, 60, seed=11)
    if method == "linear":  # 200 equal values: the float64 reference fit finds a sigma of
        block = np.delete(block, 5, axis=1)  # 1e-15 and clips by rounding; the kernel keeps all
    params = RejectionParams(method, "median")
    got = reject_and_combine(block, params=params)
    want = reference(block, None, params)
    np.testing.assert_allclose(got.values, want[0], rtol=2e-6, equal_nan=True)
    np.testing.assert_array_equal(got.n_used, want[3])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11, 12])
def test_sorting_network_sorts_every_zero_one_input(n: int) -> None:
    """0-1 principle: a comparator network sorts everything iff it sorts all 2^n 0/1 inputs."""
    network = sorting_network(n)
    assert np.all(network[:, 0] < network[:, 1]) and (network.size == 0 or network.max() < n)
    words = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.int8)
    for i, j in network:
        lo, hi = np.minimum(words[:, i], words[:, j]), np.maximum(words[:, i], words[:, j])
        words[:, i], words[:, j] = lo, hi
    assert np.all(np.diff(words, axis=1) >= 0)


@pytest.mark.parametrize("n", [13, 24, 40, 65, 130])
def test_sorting_network_sorts_random_values(n: int) -> None:
    network = sorting_network(n)
    values = np.random.default_rng(n).integers(0, 5, (500, n)).astype(float)  # many ties
    want = np.sort(values, axis=1)
    for i, j in network:
        lo, hi = np.minimum(values[:, i], values[:, j]), np.maximum(values[:, i], values[:, j])
        values[:, i], values[:, j] = lo, hi
    np.testing.assert_array_equal(values, want)


@pytest.mark.parametrize("method", ["none", "percentile", "sigma", "winsorized"])
def test_ties_are_kept_or_rejected_together(method: str) -> None:
    """Integer data with many equal values (clipped stars, uint16 frames): the counts match
    the reference, which compares values with limits, so equal values are never split.
    (Linear fit judges each value by its rank's residual, so it may split ties.)"""
    rng = np.random.default_rng(3)
    block = rng.integers(95, 106, (17, 700)).astype(np.float32)
    block[rng.random(block.shape) < 0.1] = 65535.0
    block[rng.random(block.shape) < 0.05] = np.nan
    params = RejectionParams(method, sigma_low=2.0, sigma_high=2.0)
    got = reject_and_combine(block, params=params)
    want = reference(block, None, params)
    np.testing.assert_allclose(got.values, want[0], rtol=2e-6, equal_nan=True)
    for g, r in zip(got[1:], want[1:], strict=True):
        np.testing.assert_array_equal(g, r)
