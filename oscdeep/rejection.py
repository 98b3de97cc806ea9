"""Per-pixel rejection and combination of a stack of frames (numba kernels).

A *block* is an ``(N, P)`` float32 array: N frames (frame axis first) of P pixels, the pixels
of a row band flattened with all their channels. For every pixel the kernel drops NaN inputs
(no data), sorts the remaining values once, rejects outliers with one of the methods below
working on the sorted values, and combines the kept ones. Nothing here touches files.

Definitions (``kl``/``kh`` are the low/high clipping factors, ``m`` the number of values kept
so far; a pass is tried only while ``m >= 3``, a pass that would keep fewer than 2 values is
discarded and ends the iteration, which otherwise ends when a pass rejects nothing or after
``max_iter`` passes):

``none``
    Every valid value is kept.
``percentile``
    One pass around the median ``c`` of all valid values: a value is rejected if it lies
    further than ``percentile_low * |c|`` below or ``percentile_high * |c|`` above ``c``
    (nothing is rejected where ``c`` is 0).
``sigma``
    Iterative clipping around the median ``c`` of the kept values with their sample standard
    deviation ``s``: a value is kept if ``c - kl*s <= x <= c + kh*s``.
``winsorized``
    As ``sigma``, but ``s`` is a robust spread: starting from the sample standard deviation,
    the kept values are clamped to ``c ± 1.5 s`` (winsorized, Huber-style) and ``s`` becomes
    1.134 times the standard deviation of the clamped values, repeated to the fixed point
    (solved exactly; Siril stops once ``s`` changes by less than 0.05 %). Outliers then
    cannot inflate the spread that is used to clip them.
``linear``
    Linear-fit clipping: a straight line ``a*i + b`` is fitted by least squares to the kept
    values sorted by value against their rank ``i``; ``s`` is the mean absolute residual, and
    values further than ``kl*s`` below or ``kh*s`` above the line are rejected; the
    survivors are ranked again and the fit repeated. A smooth gradient of values across
    frames (e.g. sky brightness) is thereby not mistaken for outliers. (The residuals sum
    to zero, so a lone outlier among ``m`` values sits exactly at ``(m/2)*s``; such exact
    ties are kept, with a relative tolerance of 1e-9, whatever the rounding.)

Combination: ``mean`` is the weighted mean of the kept values, ``median`` their (unweighted)
median. The standard deviations use N-1 in the denominator and are computed in float64.
These follow Siril's definitions (stacking "rejection" methods); the small differences are
that NaN rather than 0 means no data, the winsorized clamp is applied afresh to the kept
values each time, and no order-dependent early stop is used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numba
import numpy as np

from oscdeep.types import accept_aliases
from numba import prange

__all__ = [
    "CombineMethod",
    "RejectionMethod",
    "RejectionParams",
    "RejectionOutput",
    "reject_and_combine",
    "reject_and_combine_into",
    "sorting_network",
    "MAX_FRAMES",
]

MAX_FRAMES = 65535
"""Count maps are uint16, so at most this many frames can be combined at once."""


@accept_aliases({"no": "none", "n": "none", "p": "percentile", "s": "sigma", "w": "winsorized",
                 "l": "linear", "linearfit": "linear", "winsor": "winsorized"})
class RejectionMethod(StrEnum):
    """Pixel rejection algorithm (Siril's names)."""

    NONE = "none"
    PERCENTILE = "percentile"
    SIGMA = "sigma"
    WINSORIZED = "winsorized"
    LINEAR = "linear"


class CombineMethod(StrEnum):
    """How the kept values of a pixel become one value."""

    MEAN = "mean"
    MEDIAN = "median"


_METHOD_CODES = {  # of the methods _kernel_by_value runs (linear fit has its own kernel)
    RejectionMethod.NONE: 0,
    RejectionMethod.PERCENTILE: 1,
    RejectionMethod.SIGMA: 2,
    RejectionMethod.WINSORIZED: 3,
}


@dataclass(frozen=True)
class RejectionParams:
    """Rejection method and its tunables.

    ``method="median"`` is accepted as shorthand for median combination without rejection.
    ``max_iter`` None iterates until a pass rejects nothing (as Siril does).
    """

    method: RejectionMethod | str = RejectionMethod.WINSORIZED
    combine: CombineMethod | str = CombineMethod.MEAN
    sigma_low: float = 3.0
    sigma_high: float = 3.0
    percentile_low: float = 0.2
    percentile_high: float = 0.1
    max_iter: int | None = None

    def __post_init__(self) -> None:
        method, combine = self.method, self.combine
        if str(method).strip().lower() == "median":
            method, combine = RejectionMethod.NONE, CombineMethod.MEDIAN
        object.__setattr__(self, "method", RejectionMethod(method))
        object.__setattr__(self, "combine", CombineMethod(combine))
        for name in ("sigma_low", "sigma_high", "percentile_low", "percentile_high"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
            object.__setattr__(self, name, value)
        if self.max_iter is not None and int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1 or None, not {self.max_iter}")


class RejectionOutput(NamedTuple):
    """Per-pixel results of :func:`reject_and_combine` (all of length P)."""

    values: np.ndarray
    n_low: np.ndarray
    n_high: np.ndarray
    n_used: np.ndarray


# --------------------------------------------------------------------------- kernels

# The kernels use numba's numpy error model: under the Python model every float division
# carries a ZeroDivisionError check (11 % slower on winsorized clipping; no divisor here can be
# 0 on the paths taken, and the results are bit for bit the same).
_SIGN32 = np.uint64(0x80000000)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_WINSOR_CLAMP = 1.5
_WINSOR_GAIN = 1.134
_LINEAR_TIE = 1.0 + 1e-9


@numba.njit(cache=True, inline="always", error_model="numpy")
def _median_sorted(sv, a, b):
    m = b - a
    mid = a + m // 2
    if m % 2 == 1:
        return sv[mid]
    return 0.5 * (sv[mid - 1] + sv[mid])


@numba.njit(cache=True, inline="always", error_model="numpy")
def _range_sd(s1, s2, a, b):
    m = b - a
    total = s1[b] - s1[a]
    squares = s2[b] - s2[a]
    var = (squares - total * total / m) / (m - 1)
    return np.sqrt(var) if var > 0.0 else 0.0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _lower_bound(sv, a, b, x):
    """First index in [a, b) whose value is >= x (b if none)."""
    while a < b:
        mid = (a + b) // 2
        if sv[mid] < x:
            a = mid + 1
        else:
            b = mid
    return a


@numba.njit(cache=True, inline="always", error_model="numpy")
def _upper_bound(sv, a, b, x):
    """First index in [a, b) whose value is > x (b if none)."""
    while a < b:
        mid = (a + b) // 2
        if sv[mid] <= x:
            a = mid + 1
        else:
            b = mid
    return a


_INSERTION_MAX = 160
_MERGE_RUN = 16


@numba.njit(cache=True, inline="always", error_model="numpy")
def _insertion_sort(keys, lo, hi):
    for k in range(lo + 1, hi):
        x = keys[k]
        j = k - 1
        while j >= lo and keys[j] > x:
            keys[j + 1] = keys[j]
            j -= 1
        keys[j + 1] = x


@numba.njit(cache=True, error_model="numpy")
def _sort_keys(keys, tmp, n):
    """Sort keys[:n] in place: insertion sort for short stacks, bottom-up merges beyond."""
    if n <= _INSERTION_MAX:
        _insertion_sort(keys, 0, n)
        return
    for lo in range(0, n, _MERGE_RUN):
        _insertion_sort(keys, lo, min(n, lo + _MERGE_RUN))
    src = keys
    dst = tmp
    width = _MERGE_RUN
    in_tmp = False
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(n, lo + width)
            hi = min(n, lo + 2 * width)
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if src[j] < src[i]:
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
        src, dst = dst, src
        in_tmp = not in_tmp
        width *= 2
    if in_tmp:
        keys[:n] = tmp[:n]


@numba.njit(cache=True, inline="always", error_model="numpy")
def _root_in(qa, qb, qc, lo, hi, largest):
    """The smallest (or ``largest``) root of ``qa*x^2 + qb*x + qc`` in [lo, hi], -1.0 if none.

    Roots within 1e-9 (relative) outside the interval count, clamped into it: a fixed point
    on a segment boundary must not be lost to rounding between two segments.
    """
    tol = 1e-9 * (hi if np.isfinite(hi) else lo)
    r1 = -1.0
    r2 = -1.0
    if abs(qa) < 1e-300:
        if qb == 0.0:
            return -1.0
        r1 = -qc / qb
        r2 = r1
    else:
        disc = qb * qb - 4.0 * qa * qc
        if disc < 0.0:
            return -1.0
        q = -0.5 * (qb + np.sqrt(disc)) if qb >= 0.0 else -0.5 * (qb - np.sqrt(disc))
        r1 = q / qa
        r2 = qc / q if q != 0.0 else r1
    first = max(r1, r2) if largest else min(r1, r2)
    second = min(r1, r2) if largest else max(r1, r2)
    for r in (first, second):
        if lo - tol <= r <= hi + tol:
            return min(max(r, lo), hi)
    return -1.0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _segment_quadratic(nlo, nhi, m, d, inner_sum, inner_squares):
    """``(ha, hb, hc)``: the fixed points of the winsorized spread on one segment (``nlo``
    values clamped low, ``nhi`` high, of ``m``) are the roots of ``h(s) = ha s^2 + hb s + hc
    = s^2 - GAIN^2 var(s)``. ``d`` is the centre minus the pivot; ``inner_sum`` and
    ``inner_squares`` sum the unclamped values minus the pivot and their squares."""
    k = _WINSOR_CLAMP
    g2 = _WINSOR_GAIN * _WINSOR_GAIN
    # Sum and sum of squares of the clamped values (relative to the pivot) as polynomials
    # in s: total = t1 s + t0, squares = q2 s^2 + q1 s + q0.
    t1 = k * (nhi - nlo)
    t0 = (nlo + nhi) * d + inner_sum
    q2 = k * k * (nlo + nhi)
    q1 = 2.0 * k * d * (nhi - nlo)
    q0 = (nlo + nhi) * d * d + inner_squares
    ha = 1.0 - g2 * (q2 - t1 * t1 / m) / (m - 1)
    hb = -g2 * (q1 - 2.0 * t1 * t0 / m) / (m - 1)
    hc = -g2 * (q0 - t0 * t0 / m) / (m - 1)
    return ha, hb, hc


@numba.njit(cache=True, error_model="numpy")
def _winsorized_sigma(sv, s1, s2, pivot, a, b, c, s):
    """The winsorized spread of sorted ``sv[a:b]`` around ``c``, starting from ``s``: the
    limit of ``s <- GAIN * sd(clamp(values, c - CLAMP*s, c + CLAMP*s))`` (Siril's iteration,
    which stops once ``s`` changes by less than 0.05 %).

    The map is non-decreasing in ``s`` (a wider clamp never narrows the spread), so the
    iteration moves monotonically to the nearest fixed point in the direction it starts in.
    While no value crosses a clamp limit the variance of the clamped values is a quadratic in
    ``s``, so the fixed point of each such segment is a root of a quadratic: walk the
    segments from ``s`` in that direction and return the first root. ``s1``/``s2`` are
    prefix sums of ``sv - pivot`` and its square.
    """
    m = b - a
    k = _WINSOR_CLAMP
    d = c - pivot
    j1 = _lower_bound(sv, a, b, c - k * s)  # [a, j1) clamped low
    j2 = _upper_bound(sv, j1, b, c + k * s)  # [j2, b) clamped high
    for _ in range(2 * m + 4):  # each step releases or clamps a value
        ha, hb, hc = _segment_quadratic(j1 - a, b - j2, m, d, s1[j2] - s1[j1],
                                        s2[j2] - s2[j1])
        h = (ha * s + hb) * s + hc
        if h == 0.0:
            return s
        if h > 0.0:  # the spread shrinks: the largest root below s, then the next segment
            if j1 >= j2:
                return 0.0
            below = (c - sv[j1]) / k  # where the lowest unclamped value gets clamped
            above = (sv[j2 - 1] - c) / k  # where the highest one does
            s_low = max(below, above, 0.0)
            r = _root_in(ha, hb, hc, s_low, s, True)
            if r >= 0.0:
                return r
            if s_low <= 0.0:
                return 0.0
            s = s_low
            if below >= above:
                j1 += 1
            if above >= below and j2 > j1:
                j2 -= 1
        else:  # the spread grows: the smallest root above s, then the next segment
            below = (c - sv[j1 - 1]) / k if j1 > a else np.inf  # where it is released
            above = (sv[j2] - c) / k if j2 < b else np.inf
            s_high = min(below, above)
            r = _root_in(ha, hb, hc, s, s_high, False)
            if r >= 0.0:
                return r
            if not np.isfinite(s_high):
                return s
            s = s_high
            if below <= above:
                j1 -= 1
            if above <= below:
                j2 += 1
    return s


@numba.njit(cache=True, error_model="numpy")
def _clip_range(sv, s1, s2, n, winsorize, k_low, k_high, max_iter, a, b, passes):
    """Sigma or winsorized clipping on sorted values: the kept range [a, b), continuing from
    the kept range [a, b) after ``passes`` passes (0, n, 0 to start)."""
    pivot = sv[n // 2]
    while b - a >= 3 and (max_iter <= 0 or passes < max_iter):
        c = _median_sorted(sv, a, b)
        s = _range_sd(s1, s2, a, b)
        if winsorize and s > 0.0:
            s = _winsorized_sigma(sv, s1, s2, pivot, a, b, c, s)
        na = _lower_bound(sv, a, b, c - k_low * s)
        nb = _upper_bound(sv, na, b, c + k_high * s)
        if nb - na < 2 or (na == a and nb == b):
            break
        a = na
        b = nb
        passes += 1
    return a, b


# Rows of the per-pixel (lane) scratch of _first_pass_lanes.
_PIVOT, _CENTRE, _SPREAD, _ITERATE, _LIMIT_LO, _LIMIT_HI, _SUM, _SQUARES = range(8)
_BELOW, _UP_TO = range(2)
_WINSOR_STEPS = 2
"""Plain iterations of the winsorized spread across a tile before its exact fixed point is
looked for in the segment they reached."""


@numba.njit(cache=True, inline="always", error_model="numpy")
def _first_pass_lanes(tile, n, width, winsorize, k_low, k_high, p1, p2, lane, count, state):
    """The first clipping pass of each pixel of a tile whose pixels all have ``n`` valid
    values (rows 0..n-1 of the sorted ``tile``), computed across pixels so that the compiler
    can vectorise it: the scalar code spent most of its time on this pass, which for most
    pixels (plain sky) is the only one. Each loop over the pixels writes one array, which
    is what lets the compiler vectorise it.

    Per pixel, ``state`` becomes 0 when the pass ends the clipping (nothing rejected, or
    fewer than 2 values would be kept: all n are kept), 1 when the scalar passes go on from
    the kept range ``count[_BELOW], count[_UP_TO]`` after one pass, or 2 when the winsorized
    fixed point was not found here and the scalar code redoes the pixel. The results are
    those of :func:`_clip_range`: the same prefix sums ``p1``/``p2``, median and spread, and
    the fixed point is the root of the same quadratic, of the segment the plain iteration
    reached (the iteration moves monotonically towards the fixed point the scalar walk finds,
    so no other fixed point lies between).
    """
    pivot, centre, spread = lane[_PIVOT], lane[_CENTRE], lane[_SPREAD]
    limit_lo, limit_hi = lane[_LIMIT_LO], lane[_LIMIT_HI]
    n_below, n_up_to = count[_BELOW], count[_UP_TO]
    mid = n // 2
    m = n
    for l in range(width):
        pivot[l] = np.float64(tile[mid, l])
        p1[0, l] = 0.0
        p2[0, l] = 0.0
    for k in range(n):
        for l in range(width):
            d = tile[k, l] - pivot[l]
            p1[k + 1, l] = p1[k, l] + d
            p2[k + 1, l] = p2[k, l] + d * d
    for l in range(width):
        if m % 2 == 1:
            centre[l] = tile[mid, l]
        else:
            centre[l] = 0.5 * (tile[mid - 1, l] + tile[mid, l])
        total = p1[n, l] - p1[0, l]
        squares = p2[n, l] - p2[0, l]
        var = (squares - total * total / m) / (m - 1)
        spread[l] = np.sqrt(var) if var > 0.0 else 0.0
        state[l] = 0
    if winsorize:
        _winsorized_lanes(tile, n, width, p1, p2, lane, count, state)
    _set_limits(width, centre, spread, k_low, k_high, limit_lo, limit_hi)
    _count_limits(tile, n, width, limit_lo, limit_hi, n_below, n_up_to)
    for l in range(width):
        na = n_below[l]
        nb = n_up_to[l]
        if state[l] == 0 and not (nb - na < 2 or (na == 0 and nb == n)):
            state[l] = 1


@numba.njit(cache=True, inline="always", error_model="numpy")
def _set_limits(width, centre, spread, k_low, k_high, limit_lo, limit_hi):
    """Per pixel: ``centre - k_low * spread`` and ``centre + k_high * spread``."""
    for l in range(width):
        limit_lo[l] = centre[l] - k_low * spread[l]
    for l in range(width):
        limit_hi[l] = centre[l] + k_high * spread[l]


@numba.njit(cache=True, inline="always", error_model="numpy")
def _count_limits(tile, n, width, limit_lo, limit_hi, n_below, n_up_to):
    """Per pixel of the sorted tile: values below ``limit_lo`` and values up to
    ``limit_hi`` (the first index kept, and one past the last)."""
    for l in range(width):
        n_below[l] = 0
    for l in range(width):
        n_up_to[l] = 0
    for r in range(n):
        for l in range(width):
            n_below[l] += 1 if tile[r, l] < limit_lo[l] else 0
        for l in range(width):
            n_up_to[l] += 1 if tile[r, l] <= limit_hi[l] else 0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _winsorized_lanes(tile, n, width, p1, p2, lane, count, state):
    """The winsorized spread of each pixel of the tile (see :func:`_first_pass_lanes`),
    replacing the sample spread in ``lane[_SPREAD]``; ``state`` 2 where it is left to the
    scalar walk."""
    k = _WINSOR_CLAMP
    m = n
    pivot, centre, spread, iterate = lane[_PIVOT], lane[_CENTRE], lane[_SPREAD], lane[_ITERATE]
    limit_lo, limit_hi = lane[_LIMIT_LO], lane[_LIMIT_HI]
    clamped_sum, clamped_squares = lane[_SUM], lane[_SQUARES]
    for l in range(width):
        iterate[l] = spread[l]
    for step in range(_WINSOR_STEPS + 1):
        _set_limits(width, centre, iterate, k, k, limit_lo, limit_hi)
        if step == _WINSOR_STEPS:
            break
        for l in range(width):
            clamped_sum[l] = 0.0
        for l in range(width):
            clamped_squares[l] = 0.0
        for r in range(n):
            for l in range(width):
                clamped_sum[l] += min(max(np.float64(tile[r, l]), limit_lo[l]),
                                      limit_hi[l]) - pivot[l]
            for l in range(width):
                x = min(max(np.float64(tile[r, l]), limit_lo[l]), limit_hi[l]) - pivot[l]
                clamped_squares[l] += x * x
        for l in range(width):
            t = clamped_sum[l]
            var = (clamped_squares[l] - t * t / m) / (m - 1)
            iterate[l] = _WINSOR_GAIN * np.sqrt(var) if var > 0.0 else 0.0
    # The segment of the last iterate: values [0, j1) clamped low, [j2, n) high.
    _count_limits(tile, n, width, limit_lo, limit_hi, count[_BELOW], count[_UP_TO])
    for l in range(width):
        s = iterate[l]
        if not spread[l] > 0.0:
            continue  # no spread: nothing to winsorize (as in _clip_range)
        j1 = count[_BELOW, l]
        j2 = count[_UP_TO, l]
        if not (s > 0.0 and j1 < j2):
            state[l] = 2
            continue
        c = centre[l]
        ha, hb, hc = _segment_quadratic(j1, n - j2, m, c - pivot[l], p1[j2, l] - p1[j1, l],
                                        p2[j2, l] - p2[j1, l])
        h = (ha * s + hb) * s + hc
        root = s
        if h > 0.0:  # shrinking: the largest root down to where the segment ends
            ends = max((c - tile[j1, l]) / k, (tile[j2 - 1, l] - c) / k, 0.0)
            root = _root_in(ha, hb, hc, ends, s, True)
        elif h < 0.0:  # growing: the smallest root up to where the segment ends
            ends = min((c - tile[j1 - 1, l]) / k if j1 > 0 else np.inf,
                       (tile[j2, l] - c) / k if j2 < n else np.inf)
            root = _root_in(ha, hb, hc, s, ends, False)
        if root > 0.0:
            spread[l] = root
        else:
            state[l] = 2


@numba.njit(cache=True, error_model="numpy")
def _percentile_range(sv, n, p_low, p_high):
    c = _median_sorted(sv, 0, n)
    if n < 3 or c == 0.0:
        return 0, n
    scale = abs(c)
    na = _lower_bound(sv, 0, n, c - p_low * scale)
    nb = _upper_bound(sv, na, n, c + p_high * scale)
    if nb - na < 2:
        return 0, n
    return na, nb


@numba.njit(cache=True, error_model="numpy")
def _linear_fit_clip(sv, n, state, kpos, kv, flag, k_low, k_high, max_iter):
    """Linear-fit clipping; marks ``state`` (-1 low, +1 high) and returns the kept count."""
    m = n
    for k in range(n):
        kpos[k] = k
        kv[k] = sv[k]
    passes = 0
    while m >= 3 and (max_iter <= 0 or passes < max_iter):
        mean_x = 0.5 * (m - 1)
        mean_y = 0.0
        for k in range(m):
            mean_y += kv[k]
        mean_y /= m
        sxy = 0.0
        sxx = 0.0
        for k in range(m):
            dx = k - mean_x
            sxy += dx * (kv[k] - mean_y)
            sxx += dx * dx
        slope = sxy / sxx
        icpt = mean_y - slope * mean_x
        sigma = 0.0
        for k in range(m):
            sigma += abs(kv[k] - (slope * k + icpt))
        sigma /= m
        if sigma == 0.0:
            break
        # Decide every value once (flag), then apply only if the pass is acceptable. The
        # residuals sum to zero, so a lone outlier sits exactly at (m/2)*sigma: limits get a
        # hair of tolerance so such ties are kept whatever the rounding.
        lim_low = k_low * sigma * _LINEAR_TIE
        lim_high = k_high * sigma * _LINEAR_TIE
        kept = 0
        for k in range(m):
            r = kv[k] - (slope * k + icpt)
            if -r > lim_low:
                flag[k] = -1
            elif r > lim_high:
                flag[k] = 1
            else:
                flag[k] = 0
                kept += 1
        if kept < 2 or kept == m:
            break
        out = 0
        for k in range(m):
            if flag[k] != 0:
                state[kpos[k]] = flag[k]
            else:
                kpos[out] = kpos[k]
                kv[out] = kv[k]
                out += 1
        m = out
        passes += 1
    return m


_TILE = 64
"""Pixels sorted together by the sorting network (SIMD lanes of the compare-exchanges)."""


def sorting_network(n: int) -> np.ndarray:
    """Compare-exchange pairs ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort for
    ``n`` inputs: applied in order (smaller value to ``i``) they sort any ``n`` values.

    Built for the next power of two and pruned to pairs inside ``n``; the pruning is exact
    because the missing inputs would be +inf and a pair involving them never swaps.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int32).reshape(-1, 2)


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _kernel_by_value(block, network, weights, method, median_combine, k_low, k_high, p_low,
                     p_high, max_iter, values, n_low, n_high, n_used, frame_counts):
    """Kernel for the methods whose kept values form a range of the sorted values (none,
    percentile, sigma, winsorized).

    Tiles of _TILE pixels are sorted together by a sorting network (branch-free min/max
    across the tile, which the compiler vectorises; NaN goes last as +inf). For sigma and
    winsorized clipping, the first pass of a tile whose pixels all have the same number of
    values runs across the tile too (:func:`_first_pass_lanes`); pixels it does not settle
    go on pixel by pixel. The kept range of each pixel gives two thresholds, and a pass in
    frame order counts and weights each frame's value.
    """
    n_frames, n_pix = block.shape
    n_chunks = frame_counts.shape[0]
    step = (n_pix + n_chunks - 1) // n_chunks
    n_pairs = network.shape[0]
    plain_mean = method == 0 and not median_combine
    for chunk in prange(n_chunks):
        p0 = chunk * step
        p1 = min(n_pix, p0 + step)
        tile = np.empty((n_frames, _TILE), np.float32)
        valid = np.empty(_TILE, np.int64)
        sv = np.empty(n_frames, np.float32)
        s1 = np.empty(n_frames + 1, np.float64)
        s2 = np.empty(n_frames + 1, np.float64)
        tile_s1 = np.empty((n_frames + 1, _TILE), np.float64)
        tile_s2 = np.empty((n_frames + 1, _TILE), np.float64)
        lane = np.empty((8, _TILE), np.float64)
        count = np.empty((2, _TILE), np.int64)
        state = np.empty(_TILE, np.int8)
        b_lo = np.empty(_TILE, np.float32)
        b_hi = np.empty(_TILE, np.float32)
        t_low = np.empty(_TILE, np.int64)
        t_high = np.empty(_TILE, np.int64)
        t_kept = np.empty(_TILE, np.int64)
        s_w = np.empty(_TILE, np.float64)
        s_wv = np.empty(_TILE, np.float64)
        counts = frame_counts[chunk]
        for t0 in range(p0, p1, _TILE):
            width = min(_TILE, p1 - t0)
            if not plain_mean:
                for l in range(_TILE):
                    valid[l] = 0
                for i in range(n_frames):
                    for l in range(width):
                        v = block[i, t0 + l]
                        if v == v:
                            tile[i, l] = v
                            valid[l] += 1
                        else:
                            tile[i, l] = np.inf
                    for l in range(width, _TILE):
                        tile[i, l] = np.inf
                for c in range(n_pairs):
                    ra = network[c, 0]
                    rb = network[c, 1]
                    for l in range(_TILE):
                        x = tile[ra, l]
                        y = tile[rb, l]
                        tile[ra, l] = x if x < y else y
                        tile[rb, l] = y if x < y else x
            lanes = False  # first pass across the tile's pixels (all with n valid values)?
            if method == 2 or method == 3:
                lanes = valid[0] >= 3
                for l in range(1, width):
                    if valid[l] != valid[0]:
                        lanes = False
                if lanes:
                    _first_pass_lanes(tile, valid[0], width, method == 3, k_low, k_high,
                                      tile_s1, tile_s2, lane, count, state)
            for l in range(width):
                b_lo[l] = -np.inf
                b_hi[l] = np.inf
            for l in range(width):
                if plain_mean:
                    break
                n = valid[l]
                if n == 0:
                    continue  # no value is counted: all are NaN
                for k in range(n):
                    sv[k] = tile[k, l]
                a = 0
                b = n
                if method == 1:
                    a, b = _percentile_range(sv, n, p_low, p_high)
                elif lanes and state[l] == 1:
                    for k in range(n + 1):
                        s1[k] = tile_s1[k, l]
                        s2[k] = tile_s2[k, l]
                    a, b = _clip_range(sv, s1, s2, n, method == 3, k_low, k_high,
                                       max_iter, count[_BELOW, l], count[_UP_TO, l], 1)
                elif (method == 2 or method == 3) and not (lanes and state[l] == 0):
                    pivot = np.float64(sv[n // 2])
                    s1[0] = 0.0
                    s2[0] = 0.0
                    for k in range(n):
                        d = sv[k] - pivot
                        s1[k + 1] = s1[k] + d
                        s2[k + 1] = s2[k] + d * d
                    a, b = _clip_range(sv, s1, s2, n, method == 3, k_low, k_high,
                                       max_iter, 0, n, 0)
                # Bounds never split equal values, so the kept values are exactly sv[a:b].
                b_lo[l] = sv[a]
                b_hi[l] = sv[b - 1]
                if median_combine:
                    values[t0 + l] = _median_sorted(sv, a, b)
            # Count and weight each frame's values against the bounds, across the tile: one
            # array written per loop, so that the compiler can vectorise each (NaN fails
            # every comparison).
            for l in range(width):
                t_low[l] = 0
                t_high[l] = 0
                t_kept[l] = 0
                s_w[l] = 0.0
                s_wv[l] = 0.0
            for i in range(n_frames):
                row = block[i, t0:t0 + width]
                w = weights[i]
                lows = 0
                for l in range(width):
                    x = 1 if row[l] < b_lo[l] else 0
                    lows += x
                    t_low[l] += x
                highs = 0
                for l in range(width):
                    x = 1 if row[l] > b_hi[l] else 0
                    highs += x
                    t_high[l] += x
                for l in range(width):
                    t_kept[l] += 1 if (row[l] >= b_lo[l] and row[l] <= b_hi[l]) else 0
                for l in range(width):
                    s_w[l] += w if (row[l] >= b_lo[l] and row[l] <= b_hi[l]) else 0.0
                for l in range(width):
                    s_wv[l] += w * row[l] if (row[l] >= b_lo[l] and row[l] <= b_hi[l]) else 0.0
                seen = 0
                for l in range(width):
                    seen += 1 if row[l] == row[l] else 0
                counts[i, 0] += lows
                counts[i, 1] += highs
                counts[i, 2] += seen
            for l in range(width):
                p = t0 + l
                if t_kept[l] == 0:
                    values[p] = np.nan
                elif not median_combine:
                    values[p] = s_wv[l] / s_w[l]
                n_low[p] = t_low[l]
                n_high[p] = t_high[l]
                n_used[p] = t_kept[l]


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _kernel_linear_fit(block, bits, weights, median_combine, k_low, k_high, max_iter, values,
                       n_low, n_high, n_used, frame_counts):
    """Kernel for linear-fit clipping, which judges each value by its rank: the values are
    sorted with their frames (keys of order-preserving float bits, then the frame index)."""
    n_frames, n_pix = block.shape
    n_chunks = frame_counts.shape[0]
    step = (n_pix + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        p0 = chunk * step
        p1 = min(n_pix, p0 + step)
        by_frame = np.empty(n_frames, np.float64)
        keys = np.empty(n_frames, np.uint64)
        tmp = np.empty(n_frames, np.uint64)
        sv = np.empty(n_frames, np.float64)
        si = np.empty(n_frames, np.int64)
        state = np.empty(n_frames, np.int8)
        kpos = np.empty(n_frames, np.int64)
        kv = np.empty(n_frames, np.float64)
        flag = np.empty(n_frames, np.int8)
        counts = frame_counts[chunk]
        for p in range(p0, p1):
            n = 0
            for i in range(n_frames):
                v = block[i, p]
                if v != v:
                    continue
                by_frame[i] = v
                u = np.uint64(bits[i, p])
                if u & _SIGN32:
                    u = (~u) & _LOW32
                else:
                    u = u | _SIGN32
                keys[n] = (u << _SHIFT32) | np.uint64(i)
                n += 1
                counts[i, 2] += 1
            if n == 0:
                values[p] = np.nan
                n_low[p] = 0
                n_high[p] = 0
                n_used[p] = 0
                continue
            _sort_keys(keys, tmp, n)
            for k in range(n):
                i = np.int64(keys[k] & _LOW32)
                si[k] = i
                sv[k] = by_frame[i]
                state[k] = 0
            kept = _linear_fit_clip(sv, n, state, kpos, kv, flag, k_low, k_high, max_iter)
            lows = 0
            highs = 0
            wsum = 0.0
            vsum = 0.0
            m = 0
            for k in range(n):
                st = state[k]
                if st < 0:
                    lows += 1
                    counts[si[k], 0] += 1
                elif st > 0:
                    highs += 1
                    counts[si[k], 1] += 1
                else:
                    w = weights[si[k]]
                    wsum += w
                    vsum += w * sv[k]
                    kv[m] = sv[k]
                    m += 1
            if median_combine:
                values[p] = _median_sorted(kv, 0, m)
            else:
                values[p] = vsum / wsum
            n_low[p] = lows
            n_high[p] = highs
            n_used[p] = kept


# --------------------------------------------------------------------------- public API

@functools.lru_cache(maxsize=32)
def _network(n: int) -> np.ndarray:
    return sorting_network(n)


def _n_chunks(n_pix: int) -> int:
    threads = numba.get_num_threads()
    return max(1, min(n_pix, 8 * threads))


def _check_weights(weights: np.ndarray | None, n_frames: int) -> np.ndarray:
    if weights is None:
        return np.ones(n_frames, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n_frames,):
        raise ValueError(f"weights must have one value per frame ({n_frames}), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("weights must be finite and > 0")
    return w


def reject_and_combine_into(
    block: np.ndarray,
    values: np.ndarray,
    n_low: np.ndarray,
    n_high: np.ndarray,
    n_used: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    params: RejectionParams = RejectionParams(),
    frame_counts: np.ndarray | None = None,
) -> None:
    """Like :func:`reject_and_combine`, writing into given 1-D arrays of length P.

    ``values`` is float32 or float64, the three count arrays uint16. ``frame_counts``, if
    given, is an (N, 3) int64 array to which each frame's low-rejected, high-rejected and
    valid (non-NaN) pixel counts are added.
    """
    if block.ndim != 2:
        raise ValueError(f"block must be (N, P), got shape {block.shape}")
    n_frames, n_pix = block.shape
    if n_frames > MAX_FRAMES:
        raise ValueError(f"at most {MAX_FRAMES} frames can be combined at once")
    block = np.ascontiguousarray(block, dtype=np.float32)
    w = _check_weights(weights, n_frames)
    chunks = _n_chunks(n_pix)
    scratch = np.zeros((chunks, n_frames, 3), dtype=np.int64)
    method = RejectionMethod(params.method)
    median = params.combine == CombineMethod.MEDIAN
    max_iter = int(params.max_iter or 0)
    if n_pix and method is RejectionMethod.LINEAR:
        _kernel_linear_fit(block, block.view(np.uint32), w, median, params.sigma_low,
                           params.sigma_high, max_iter, values, n_low, n_high, n_used, scratch)
    elif n_pix:
        _kernel_by_value(block, _network(n_frames), w, _METHOD_CODES[method], median,
                         params.sigma_low, params.sigma_high, params.percentile_low,
                         params.percentile_high, max_iter, values, n_low, n_high, n_used,
                         scratch)
    if frame_counts is not None:
        frame_counts += scratch.sum(axis=0)


def reject_and_combine(
    block: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    params: RejectionParams = RejectionParams(),
    frame_counts: np.ndarray | None = None,
) -> RejectionOutput:
    """Reject outliers and combine each pixel of an ``(N, P)`` float32 block.

    Returns ``(values, n_low, n_high, n_used)``: the combined float32 value (NaN where a
    pixel has no valid input) and uint16 counts of values rejected below, above, and kept.
    ``weights`` (N,) weight each frame in the mean. See the module docstring for the methods.
    """
    n_pix = block.shape[1] if block.ndim == 2 else 0
    out = RejectionOutput(
        np.empty(n_pix, np.float32),
        np.empty(n_pix, np.uint16),
        np.empty(n_pix, np.uint16),
        np.empty(n_pix, np.uint16),
    )
    reject_and_combine_into(block, *out, weights=weights, params=params,
                            frame_counts=frame_counts)
    return out



def warm_up(method: RejectionMethod | str = RejectionMethod.WINSORIZED) -> None:
    """Load ``method``'s kernel now (from numba's cache, or compiled): a process's first numba
    call also initialises numba, a quarter of a second better spent while other work runs."""
    reject_and_combine(np.zeros((3, 4), np.float32), params=RejectionParams(method))
