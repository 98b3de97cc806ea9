"""Star profile measurement on small stamps: PSF fits, windowed moments and the stamp tests
that stars.py uses to reject detections (numpy, and numba for the per-star loops).

The fitted profile is an elliptical Moffat written so that its half maximum sits at ``Q = 1``::

    f(d) = amp * (1 + Q * (2**g - 1)) ** (-1 / g) + bkg,     Q = d^T A d,  d = pixel - centre

with ``g = 1/beta``. For ``g -> 0`` this is the Gaussian ``amp * 2**-Q``, so one smooth family
covers Gaussian and Moffat stars and the FWHM along each principal axis is exactly
``2 / sqrt(eigenvalue of A)`` whatever the shape. ``g`` may go a little below 0 (profiles
with a sharper edge than a Gaussian): with the Gaussian strictly at the edge of the range,
noisy fits of Gaussian stars piled up at the bound and read the FWHM 2 % small. Pixels
integrate the light over their area; the model does the same, to second order
(``f + (f_xx + f_yy) / 24``) and, below 2.5 px FWHM, on 2 x 2 sub-pixel cells. A
point-sampled fit reads a 2 px star 6 % wide.

Each star is fitted by Levenberg-Marquardt (one 8x8 solve per iteration) in a numba loop over
the stars, twice as fast as the same algorithm vectorised over the stars with numpy, with the
same results; the profile's logarithm and exponential per pixel are most of the cost. Only a
subsample of bright, isolated stars is fitted; the other stars get Gaussian-windowed second
moments (:func:`windowed_measure`), which the caller can scale to the fitted FWHM of the same
frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_LN2 = math.log(2.0)
GAMMA_RANGE = (-0.2, 0.8)  # 1/beta; below 0 the profile is sharper-edged than a Gaussian
_GAMMA_EPS = 1e-6
_N_PARAMS = 8  # x0, y0, amp, bkg, a, b, c, g


@dataclass(frozen=True)
class Shape:
    """Ellipse of a star profile: FWHM (px) along the major and minor axes, angle of the
    major axis (radians from +x towards +y, in (-pi/2, pi/2])."""

    fwhm_major: np.ndarray
    fwhm_minor: np.ndarray
    angle: np.ndarray

    @property
    def fwhm(self) -> np.ndarray:
        """Geometric mean of the axes: the FWHM of a round star of the same area at half max."""
        return np.sqrt(self.fwhm_major * self.fwhm_minor)

    @property
    def roundness(self) -> np.ndarray:
        """Minor / major FWHM (1 = round)."""
        return self.fwhm_minor / self.fwhm_major

    @property
    def eccentricity(self) -> np.ndarray:
        return np.sqrt(np.clip(1.0 - self.roundness**2, 0.0, 1.0))


@dataclass(frozen=True)
class PsfFit:
    """Result of :func:`fit_psf` per star: absolute position, shape and fit status."""

    x: np.ndarray
    y: np.ndarray
    amplitude: np.ndarray
    background: np.ndarray
    gamma: np.ndarray
    shape: Shape
    ok: np.ndarray
    iterations: int

    @property
    def beta(self) -> np.ndarray:
        """Moffat beta (inf for Gaussian or sharper profiles)."""
        with np.errstate(divide="ignore"):
            return np.where(self.gamma > 0, 1.0 / self.gamma, np.inf)

    @property
    def flux(self) -> np.ndarray:
        """Integral of the fitted profile (amplitude x area), in image units."""
        return self.amplitude * profile_area(self.shape.fwhm_major, self.shape.fwhm_minor,
                                             self.gamma)


def profile_area(fwhm_major: np.ndarray, fwhm_minor: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Integral of the unit-peak profile: pi * hwhm_a * hwhm_b / ((2**g - 1) * (1/g - 1))."""
    g = np.asarray(g, dtype=np.float64)
    g = np.where(np.abs(g) < _GAMMA_EPS, _GAMMA_EPS, g)
    k = np.expm1(g * _LN2)
    return math.pi * (fwhm_major / 2) * (fwhm_minor / 2) / (k * (1.0 / g - 1.0))


def stamp_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer (dx, dy) offsets of a square stamp of half-size ``radius``, flattened."""
    k = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(k, k, indexing="ij")
    return dx.ravel(), dy.ravel()


def cut_stamps(image: np.ndarray, ix: np.ndarray, iy: np.ndarray, radius: int
               ) -> np.ndarray:
    """(N, (2r+1)^2) float64 pixels around integer centres; outside the image -> NaN."""
    h, w = image.shape
    dx, dy = stamp_offsets(radius)
    cols = ix[:, None] + dx[None, :]
    rows = iy[:, None] + dy[None, :]
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    out = image[np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)].astype(np.float64)
    out[~inside] = np.nan
    return out


def peak_neighbourhood(image: np.ndarray, ix: np.ndarray, iy: np.ndarray, flat: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Around each integer position: the highest pixel of the 3x3 block (the peak), the mean
    of its four neighbours, and how many pixels of the 5x5 block reach ``1 - flat`` of it."""
    n = np.arange(len(ix))
    core = cut_stamps(image, ix, iy, 2).reshape(-1, 5, 5)
    j = np.argmax(np.nan_to_num(core[:, 1:4, 1:4].reshape(-1, 9), nan=-np.inf), axis=1)
    jy, jx = j // 3 + 1, j % 3 + 1
    peak = core[n, jy, jx]
    nb = np.stack([core[n, jy - 1, jx], core[n, jy + 1, jx], core[n, jy, jx - 1],
                   core[n, jy, jx + 1]], axis=1)
    with np.errstate(invalid="ignore"):
        near_top = np.sum(core.reshape(-1, 25) >= (1.0 - flat) * peak[:, None], axis=1)
    return peak, np.nan_to_num(nb, nan=0.0).mean(axis=1), near_top


def ring_radius(image: np.ndarray, x: np.ndarray, y: np.ndarray, level: np.ndarray,
                max_radius: int) -> np.ndarray:
    """Radius (px) of the first 1 px ring around each integer (x, y) whose median falls below
    ``level`` (``max_radius`` if none does): where a bright star's halo ends."""
    dx, dy = stamp_offsets(max_radius)
    ring = np.rint(np.hypot(dx, dy)).astype(np.int64)
    stamps = cut_stamps(image, x, y, max_radius)
    radii = np.full(len(x), float(max_radius))
    open_ = np.ones(len(x), bool)
    for k in range(1, max_radius + 1):
        with np.errstate(all="ignore"):
            med = np.nanmedian(stamps[:, ring == k], axis=1)
        ends = open_ & (med < level)
        radii[ends] = k
        open_ &= ~ends
        if not open_.any():
            break
    return radii


def disc_touches(mask: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """True where a True pixel of ``mask`` (or the image edge) lies within ``radius`` of
    (x, y)."""
    r = max(1, math.ceil(radius))
    stamp = cut_stamps(mask, np.rint(x).astype(np.int64), np.rint(y).astype(np.int64), r)
    dx, dy = stamp_offsets(r)
    inside = dx * dx + dy * dy <= radius * radius
    return np.any(np.nan_to_num(stamp[:, inside], nan=1.0) > 0, axis=1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _profile(p: np.ndarray, r_grid: int, sub: int, model: np.ndarray, jac: np.ndarray) -> None:
    """Model and Jacobian (8 columns) of the profile ``p`` on the square grid of half-size
    ``r_grid`` (row-major, y then x), point-sampled (``sub`` 0) or pixel-integrated over
    ``sub`` x ``sub`` cells with each cell's second-order area term ``(f_xx + f_yy) h^2 / 24``
    (``h = 1 / sub``). The Jacobian leaves the area term out (a few per cent):
    Levenberg-Marquardt still converges to the minimum of the integrated model."""
    x0, y0, amp, bkg, a, b, c, g = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    if abs(g) < _GAMMA_EPS:
        g = _GAMMA_EPS  # the Gaussian limit, g -> 0
    k = math.expm1(g * _LN2)
    n_sub = max(sub, 1)
    cells = n_sub * n_sub
    area = 1.0 / (24.0 * cells)
    side = 2 * r_grid + 1
    for iy in range(side):
        for ix in range(side):
            pix = iy * side + ix
            m_sum = 0.0
            j0 = j1 = j2 = j4 = j5 = j6 = j7 = 0.0
            for sy in range(n_sub):
                for sx in range(n_sub):
                    u = ix - r_grid - x0
                    v = iy - r_grid - y0
                    if n_sub > 1:
                        u += (sx + 0.5) / n_sub - 0.5
                        v += (sy + 0.5) / n_sub - 0.5
                    au = a * u + b * v
                    bv = b * u + c * v
                    q = u * au + v * bv
                    one_qk = max(1.0 + q * k, 1e-300)  # g < 0: the profile ends at Q = -1/k
                    log_term = math.log(one_qk)
                    prof = math.exp(-log_term / g)
                    d_q = -prof * k / (g * one_qk)
                    d_g = prof * (log_term / (g * g) - q * _LN2 * (k + 1.0) / (g * one_qk))
                    amp_dq = amp * d_q
                    j0 += -2.0 * amp_dq * au
                    j1 += -2.0 * amp_dq * bv
                    j2 += prof
                    j4 += amp_dq * u * u
                    j5 += 2.0 * amp_dq * u * v
                    j6 += amp_dq * v * v
                    j7 += amp * d_g
                    if sub >= 1:
                        s = k / one_qk
                        d_qq = prof * s * s * (1.0 + g) / (g * g)
                        prof += (d_qq * 4.0 * (au * au + bv * bv) + d_q * 2.0 * (a + c)) * area
                    m_sum += amp * prof + bkg
            model[pix] = m_sum / cells
            jac[pix, 0] = j0 / cells
            jac[pix, 1] = j1 / cells
            jac[pix, 2] = j2 / cells
            jac[pix, 3] = 1.0
            jac[pix, 4] = j4 / cells
            jac[pix, 5] = j5 / cells
            jac[pix, 6] = j6 / cells
            jac[pix, 7] = j7 / cells


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _evaluate(p: np.ndarray, radius: int, sub: int, kernel: np.ndarray, raw_model: np.ndarray,
              raw_jac: np.ndarray, tmp: np.ndarray, model: np.ndarray, jac: np.ndarray) -> None:
    """Model and Jacobian on the stamp of half-size ``radius``: the profile on a grid widened
    by the kernel's half-width, then smoothed by ``kernel`` along both axes ('valid'), as the
    image was (an empty kernel: no smoothing)."""
    nk = kernel.shape[0]
    if nk == 0:
        _profile(p, radius, sub, model, jac)
        return
    pad = nk // 2
    big = 2 * (radius + pad) + 1
    side = 2 * radius + 1
    _profile(p, radius + pad, sub, raw_model, raw_jac)
    for col in range(9):  # 0..7: Jacobian columns, 8: the model
        for iy in range(big):  # along x first, into tmp (big rows x side columns)
            for ix in range(side):
                acc = 0.0
                for t in range(nk):
                    src = iy * big + ix + t
                    acc += kernel[t] * (raw_model[src] if col == 8 else raw_jac[src, col])
                tmp[iy * side + ix] = acc
        for iy in range(side):
            for ix in range(side):
                acc = 0.0
                for t in range(nk):
                    acc += kernel[t] * tmp[(iy + t) * side + ix]
                if col == 8:
                    model[iy * side + ix] = acc
                else:
                    jac[iy * side + ix, col] = acc


@numba.njit(cache=True, inline="always")
def _valid(p: np.ndarray) -> bool:
    a, b, c = p[4], p[5], p[6]
    return (p[2] > 0.0 and a > 0.0 and c > 0.0 and a * c - b * b > 0.0 and abs(p[0]) < 3.0
            and abs(p[1]) < 3.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _solve8(matrix: np.ndarray, rhs: np.ndarray, hold_gamma: bool, step: np.ndarray) -> None:
    """``step`` = solution of the damped normal equations (Gaussian elimination with partial
    pivoting); with ``hold_gamma`` the last parameter gets no step. An exactly singular
    system (never seen) gives no step."""
    n = 8
    m = np.empty((n, n + 1))
    for i in range(n):
        for j in range(n):
            m[i, j] = matrix[i, j]
        m[i, n] = rhs[i]
    if hold_gamma:
        for j in range(n):
            m[7, j] = 0.0
            m[j, 7] = 0.0
        m[7, 7] = 1.0
        m[7, n] = 0.0
    for col in range(n):
        piv = col
        for i in range(col + 1, n):
            if abs(m[i, col]) > abs(m[piv, col]):
                piv = i
        if m[piv, col] == 0.0:
            step[:] = 0.0
            return
        if piv != col:
            for j in range(n + 1):
                m[col, j], m[piv, j] = m[piv, j], m[col, j]
        for i in range(col + 1, n):
            f = m[i, col] / m[col, col]
            for j in range(col, n + 1):
                m[i, j] -= f * m[col, j]
    for i in range(n - 1, -1, -1):
        acc = m[i, n]
        for j in range(i + 1, n):
            acc -= m[i, j] * step[j]
        step[i] = acc / m[i, i]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _lm_stars(data: np.ndarray, weight: np.ndarray, params: np.ndarray, radius: int, sub: int,
              kernel: np.ndarray, max_iter: int, fix_gamma: bool, g_lo: float, g_hi: float,
              ok: np.ndarray) -> int:
    """Levenberg-Marquardt of every star in turn (``params`` updated in place, ``ok`` set):
    minimise sum(weight * (data - model)^2) over the stamps of half-size ``radius``, the
    model pixel-integrated with ``sub`` cells per axis (0 = point-sampled) and smoothed by
    the 1-D ``kernel`` the image was filtered with (empty: none). Returns the iteration count
    of a joint loop (the most any star needed, plus the pass that found none left, at most
    ``max_iter``)."""
    n_pix = data.shape[1]
    pad = kernel.shape[0] // 2
    big = (2 * (radius + pad) + 1) ** 2
    raw_model = np.empty(big)
    raw_jac = np.empty((big, 8))
    tmp = np.empty(big)
    model = np.empty(n_pix)
    jac = np.empty((n_pix, 8))
    t_model = np.empty(n_pix)
    t_jac = np.empty((n_pix, 8))
    hess = np.empty((8, 8))
    grad = np.empty(8)
    step = np.empty(8)
    trial = np.empty(8)
    most = 0
    for s in range(params.shape[0]):
        p = params[s]
        w = weight[s]
        d = data[s]
        _evaluate(p, radius, sub, kernel, raw_model, raw_jac, tmp, model, jac)
        cost = 0.0
        for i in range(n_pix):
            cost += w[i] * (d[i] - model[i]) ** 2
        lam = 1e-3
        active = np.isfinite(cost)
        done = 0
        while active and done < max_iter:
            done += 1
            for j in range(8):
                grad[j] = 0.0
                for k in range(8):
                    hess[j, k] = 0.0
            for i in range(n_pix):
                r = d[i] - model[i]
                for j in range(8):
                    wj = jac[i, j] * w[i]
                    grad[j] += wj * r
                    for k in range(8):
                        hess[j, k] += wj * jac[i, k]
            for j in range(8):
                hess[j, j] += lam * max(hess[j, j], 1e-12)
            _solve8(hess, grad, fix_gamma, step)
            g_new = p[7] + step[7]
            if (g_new < g_lo or g_new > g_hi) and not fix_gamma:
                _solve8(hess, grad, True, step)  # hold g at the bound and solve again
            for j in range(8):
                trial[j] = p[j] + step[j]
            trial[7] = min(max(trial[7], g_lo), g_hi)
            _evaluate(trial, radius, sub, kernel, raw_model, raw_jac, tmp, t_model, t_jac)
            t_cost = 0.0
            for i in range(n_pix):
                t_cost += w[i] * (d[i] - t_model[i]) ** 2
            if _valid(trial) and np.isfinite(t_cost) and t_cost <= cost:
                gain = (cost - t_cost) / max(cost, 1e-300)
                moved = max(abs(step[0]), abs(step[1]))
                p[:] = trial
                model[:] = t_model
                jac[:, :] = t_jac
                cost = t_cost
                lam = max(lam / 5.0, 1e-7)
                if gain < 1e-6 or (gain < 1e-4 and moved < 1e-3):
                    active = False
            else:
                lam *= 4.0
                if lam > 1e4:
                    active = False
        most = max(most, done)
        ok[s] = np.isfinite(cost) and _valid(p)
    return min(most + 1, max_iter)


def shape_from_matrix(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> Shape:
    """Axes and angle of the half-maximum ellipse ``d^T [[a, b], [b, c]] d = 1``: the FWHM
    along an axis is 2 / sqrt(eigenvalue)."""
    tr, diff = (a + c) / 2.0, (a - c) / 2.0
    rad = np.hypot(diff, b)
    lo, hi = tr - rad, tr + rad  # eigenvalues of A; the major axis belongs to the smaller
    with np.errstate(divide="ignore", invalid="ignore"):
        major = 2.0 / np.sqrt(lo)
        minor = 2.0 / np.sqrt(hi)
    angle = 0.5 * np.arctan2(-2.0 * b, c - a)
    return Shape(major, minor, angle)


def cov_shape(xx: np.ndarray, xy: np.ndarray, yy: np.ndarray, fwhm_per_sigma: float
              ) -> Shape:
    """Shape of a covariance matrix [[xx, xy], [xy, yy]] given the FWHM per sigma."""
    tr, diff = (xx + yy) / 2.0, (xx - yy) / 2.0
    rad = np.hypot(diff, xy)
    hi, lo = tr + rad, np.maximum(tr - rad, 1e-12)
    angle = 0.5 * np.arctan2(2.0 * xy, xx - yy)
    return Shape(fwhm_per_sigma * np.sqrt(hi), fwhm_per_sigma * np.sqrt(lo), angle)


_SETTLE_ITER = 6  # iterations of the pixel-integrated run that follows the point-sampled one


def fit_psf(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, fwhm_guess: float,
            radius: int | None = None, integrate: bool = True, max_iter: int = 40,
            gaussian: bool = False, subsample: int | None = None,
            kernel: np.ndarray | None = None) -> PsfFit:
    """Fit the elliptical Moffat/Gaussian profile to stars at ~(x, y) in a background-
    subtracted image (NaN pixels are ignored).

    ``radius`` is the half-size of the square stamp, by default ``1.5 * fwhm_guess`` (at
    least 4 px): a larger stamp measured no better on Gaussian or Moffat (beta 2.5-4.5) stars
    and costs more. ``gaussian`` fixes the profile to a Gaussian (g = 0). ``integrate=False``
    samples the profile at pixel centres; otherwise it is integrated over each pixel, with
    ``subsample`` x ``subsample`` cells (default 2 below 2.5 px FWHM, else 1). ``kernel`` is
    a 1-D smoothing kernel the image was filtered with along both axes (e.g. ``[1, 2, 1] /
    4``): the model is smoothed the same way, so the shape is that of the unsmoothed stars.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    r = int(radius if radius is not None else max(4, math.ceil(1.5 * fwhm_guess)))
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    data = cut_stamps(image, ix, iy, r)
    weight = np.isfinite(data).astype(np.float64)
    data = np.nan_to_num(data, nan=0.0)
    dx, dy = (d.astype(np.float64) for d in stamp_offsets(r))
    p0 = np.zeros((n, _N_PARAMS))
    p0[:, 0], p0[:, 1] = x - ix, y - iy
    centre = (dx == 0) & (dy == 0)
    p0[:, 2] = np.maximum(data[:, centre][:, 0], 1e-6)
    p0[:, 4] = p0[:, 6] = 4.0 / fwhm_guess**2
    p0[:, 7] = 0.0 if gaussian else 0.25
    # A point-sampled fit converges fast (exact Jacobian); the pixel-area term then
    # moves the optimum by a few per cent, which a second short run settles: its Jacobian
    # leaves the term out, so it creeps on for ~17 more iterations, but after 3 the FWHM is
    # within 0.05 % and the centroid within 1e-4 px of where it ends (measured on frames of
    # the benchmark nights).
    k = np.zeros(0) if kernel is None else np.asarray(kernel, dtype=np.float64).ravel()
    p, ok = p0, np.zeros(n, bool)  # p is fitted in place
    it = _lm_stars(data, weight, p, r, 0, k, max_iter, gaussian, *GAMMA_RANGE, ok)
    if integrate:
        sub = subsample if subsample is not None else _subsamples(fwhm_guess)
        it += _lm_stars(data, weight, p, r, sub, k, min(max_iter, _SETTLE_ITER), gaussian,
                        *GAMMA_RANGE, ok)
    shape = shape_from_matrix(p[:, 4], p[:, 5], p[:, 6])
    ok &= np.isfinite(shape.fwhm_major) & np.isfinite(shape.fwhm_minor)
    return PsfFit(x=ix + p[:, 0], y=iy + p[:, 1], amplitude=p[:, 2], background=p[:, 3],
                  gamma=p[:, 7], shape=shape, ok=ok, iterations=it)


def _subsamples(fwhm: float) -> int:
    """Sub-pixel samples per axis: the second-order area term alone reads a 2 px star 1.2 %
    small and a 1.5 px star 4 % small; 2 x 2 cells with the term are within 0.5 % (Gaussian)
    down to 1.2 px."""
    return 1 if fwhm >= 2.5 else 2


@dataclass(frozen=True)
class Windowed:
    """Gaussian-windowed centroid and second moments of stars (see :func:`windowed_measure`)."""

    x: np.ndarray
    y: np.ndarray
    shape: Shape
    converged: np.ndarray


@numba.njit(cache=True, nogil=True, error_model="numpy",
            fastmath={"reassoc", "contract"})  # sums may be reordered; NaN stays NaN
def _windowed_moments(image: np.ndarray, ix: np.ndarray, iy: np.ndarray, cx: np.ndarray,
                      cy: np.ndarray, r: int, inv2s2: float, max_iter: int,
                      active: np.ndarray, moments: np.ndarray) -> None:
    """The windowed centroid iteration of each star, then its windowed moments.

    ``cx``/``cy`` (float32 offsets from the integer centres) are updated in place; ``active``
    is left True for stars still moving after ``max_iter``; ``moments[i]`` gets (sum w I,
    sum w I u^2, sum w I v^2, sum w I u v). The Gaussian window is separable, so a pass takes
    2 (2r + 1) exponentials and sums each stamp row once. Pixels outside the image or not
    finite are left out.
    """
    h, w = image.shape
    side = 2 * r + 1
    k = np.float32(inv2s2)
    wx = np.empty(side, np.float32)
    wy = np.empty(side, np.float32)
    us = np.empty(side, np.float32)
    for i in range(ix.shape[0]):
        x0, y0 = cx[i], cy[i]
        c_x, c_y = x0, y0
        b0, b1 = max(0, r - ix[i]), min(side, w - ix[i] + r)
        a0, a1 = max(0, r - iy[i]), min(side, h - iy[i] + r)
        for it in range(max_iter + 1):
            for j in range(side):
                us[j] = np.float32(j - r) - c_x
                dv = np.float32(j - r) - c_y
                wx[j] = np.exp(-(us[j] * us[j]) * k)
                wy[j] = np.exp(-(dv * dv) * k)
            s0 = su = sv = suu = svv = suv = 0.0
            for a in range(a0, a1):
                row = iy[i] + a - r
                r0 = np.float32(0.0)
                r1 = np.float32(0.0)
                r2 = np.float32(0.0)
                for b in range(b0, b1):
                    val = image[row, ix[i] + b - r]
                    t = wx[b] * val if np.isfinite(val) else np.float32(0.0)
                    r0 += t
                    r1 += t * us[b]
                    r2 += t * us[b] * us[b]
                v = np.float32(a - r) - c_y
                s0 += wy[a] * r0
                su += wy[a] * r1
                sv += wy[a] * v * r0
                suu += wy[a] * r2
                svv += wy[a] * v * v * r0
                suv += wy[a] * v * r1
            if it == max_iter or not active[i]:
                moments[i, 0], moments[i, 1], moments[i, 2], moments[i, 3] = s0, suu, svv, suv
                break
            sx = min(max(2.0 * su / s0, -1.0), 1.0)
            sy = min(max(2.0 * sv / s0, -1.0), 1.0)
            bad = not (np.isfinite(sx) and np.isfinite(sy) and s0 > 0)
            if bad:
                sx, sy = 0.0, 0.0
            c_x += np.float32(sx)
            c_y += np.float32(sy)
            far = abs(c_x) > r - 2 or abs(c_y) > r - 2
            if far:
                c_x, c_y = x0, y0
            if bad or far or math.hypot(sx, sy) < 1e-4:
                active[i] = False  # one more pass measures the moments where it stopped
        cx[i], cy[i] = c_x, c_y


def windowed_measure(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, sigma: float,
                     max_iter: int = 10) -> Windowed:
    """Windowed centroids and shapes of stars near (x, y) in a background-subtracted image.

    The centroid iterates ``x += 2 * sum(w I dx) / sum(w I)`` with a Gaussian window ``w`` of
    ``sigma`` px (Source Extractor's XWIN_IMAGE; the factor 2 makes it converge in a few
    steps for round stars). The second moments then have the window divided out as for a
    Gaussian star and the pixel box removed, so the shape is the Gaussian-equivalent one;
    for other profiles the caller scales it. NaN pixels are ignored; NaN where undefined.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    r = max(3, math.ceil(3.0 * sigma) + 1)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    cx, cy = (x - ix).astype(np.float32), (y - iy).astype(np.float32)
    active = np.ones(len(x), bool)
    moments = np.zeros((len(x), 4))
    img = image if image.dtype in (np.float32, np.float64) else image.astype(np.float32)
    _windowed_moments(img, ix, iy, cx, cy, r, 0.5 / sigma**2, max_iter, active, moments)
    converged = ~active
    s0, sum_uu, sum_vv, sum_uv = moments.T
    with np.errstate(divide="ignore", invalid="ignore"):
        mxx, myy, mxy = sum_uu / s0, sum_vv / s0, sum_uv / s0
        # Divide out the window, S = (M^-1 - I / sigma^2)^-1, then remove the pixel box.
        det = mxx * myy - mxy * mxy
        ia, ib, ic = myy / det - 1 / sigma**2, -mxy / det, mxx / det - 1 / sigma**2
        det2 = ia * ic - ib * ib
        sxx, sxy, syy = ic / det2 - 1 / 12, -ib / det2, ia / det2 - 1 / 12
        bad = ~((s0 > 0) & (det > 0) & (det2 > 0) & (ia > 0) & (sxx > 0) & (syy > 0)
                & (sxx * syy - sxy * sxy > 0))
    shape = cov_shape(np.where(bad, np.nan, sxx), np.where(bad, np.nan, sxy),
                      np.where(bad, np.nan, syy), FWHM_PER_SIGMA)
    return Windowed(ix + cx.astype(np.float64), iy + cy.astype(np.float64), shape,
                    converged & ~bad)
