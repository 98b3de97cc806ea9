"""Demosaicing: a Bayer CFA mosaic ``(H, W)`` becomes an RGB image ``(H, W, 3)``, float32 in
and out. Pure functions; nothing here reads files.

The pattern is the frame's own (see :mod:`oscdeep.types`: arrays are top-down and the pattern
names the 2x2 cell at array rows 0-1, so ROWORDER was already dealt with on read).

Methods (:class:`DemosaicMethod`):

``bilinear``
    Each missing colour is the mean of its 2 or 4 nearest neighbours of that colour
    (OpenCV ``COLOR_Bayer<PAT>2RGB``).
``ea``
    OpenCV's edge-aware variant: green at red/blue sites is averaged along the direction
    (horizontal or vertical) with the smaller difference; red and blue as bilinear.
``vng``
    Variable Number of Gradients (Chang, Cheung & Pang 1999), computed here in float32 (a
    numba kernel): eight directional gradients over a 5x5 window, the directions whose
    gradient is at most ``1.5 min + 0.5 (max - min)`` are kept, and each missing colour is the
    pixel's own value plus the mean colour difference over the kept directions. OpenCV's own
    VNG takes only uint8: on a linear frame (sky 1000 ± 20 ADU, stars to 40000) that is a
    150 ADU step and a 67 ADU rms error, three times the sky noise, so it is not used.
``superpixel``
    2x2 binning, half the size in each axis: output pixel ``(i, j)`` holds R, the mean of the
    two G and B of the cell at mosaic rows ``2i, 2i+1``, columns ``2j, 2j+1``. Coordinates
    halve: the output pixel centre ``(x, y) = (j, i)`` lies at mosaic ``(2j + 0.5, 2i + 0.5)``.
    An odd last row or column is dropped.

Precision: OpenCV's bilinear and EA accept only integers, so the finite data range
``[lo, hi]`` of each call is mapped linearly onto 0..65535 (uint16), demosaiced, and mapped
back. Both methods only average, so nothing clips; the error is the rounding of the input and
of OpenCV's integer means: at most one step ``(hi - lo) / 65535``, rms ~0.35 step, plus a
+0.13 step bias (OpenCV rounds halves up), i.e. < 1.6e-5 of the data range. For 16-bit camera
data that is at most ~0.35 ADU rms, far below sky noise (measured against a float bilinear).
Negative values and values above 65535 are fine. One wild outlier (say 1e6 from a dead flat
pixel) widens the range and the step with it, so repair bad pixels before demosaicing.
``vng`` and ``superpixel`` are computed in float and need no scaling.

Borders: the mosaic is mirrored (reflect-101, which keeps the Bayer phase) by 2 pixels before
interpolating, so edge pixels are interpolated like inner ones.

Missing data: NaN and ±inf pixels are *no data*. For the full-resolution methods they are
first filled from the mean of their valid same-colour neighbours (so they do not spread into
their neighbours' interpolation), and the output pixel at each of them is NaN in all three
channels. For ``superpixel`` each channel is NaN where its site is missing, and green is the
valid one of the two greens when only one is missing.

Speed, CPU ms per 3000x2000 float32 frame on the 2-core development machine (busy, so
ranges): bilinear 45-90, ea 45-80, vng 55-70 (numba, SIMD; first call ever compiles for a few
seconds, then cached), superpixel ~12, cfa_luminance 5-8. NaN pixels add ~60-100 ms for the filling.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum

import cv2
import numba
import numpy as np

from oscdeep.cfa import cfa_sites, check_pattern, site_planes
from oscdeep.errors import ConfigError
from oscdeep.types import BAYER_PATTERNS, accept_aliases, choice

__all__ = ["DemosaicMethod", "debayer", "cfa_luminance", "luminance", "normalize_pattern", "warm_up"]

_U16_MAX = 65535.0
_PAD = 2  # even, so the padded mosaic keeps the Bayer phase
_MIRROR = cv2.BORDER_REFLECT_101  # mirrors about the edge pixel: keeps the Bayer phase too


@accept_aliases({"edge-aware": "ea", "edge": "ea", "bilin": "bilinear", "super": "superpixel",
                 "bin2": "superpixel", "2x2": "superpixel"})
class DemosaicMethod(StrEnum):
    """How missing colours are interpolated (see the module notes)."""

    BILINEAR = "bilinear"
    EA = "ea"
    VNG = "vng"
    SUPERPIXEL = "superpixel"

def normalize_pattern(pattern: object) -> str:
    """The Bayer pattern string in upper case; ConfigError if it is not one of the four."""
    text = pattern.strip().upper() if isinstance(pattern, str) else pattern
    if text is None:
        raise ConfigError("a mono frame has no Bayer pattern to demosaic "
                          f"(expected one of {', '.join(BAYER_PATTERNS)})")
    try:
        check_pattern(text)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return text  # type: ignore[return-value]


def _method(method: DemosaicMethod | str) -> DemosaicMethod:
    return choice(DemosaicMethod, method, "demosaic method")


def _as_mosaic(mosaic: np.ndarray, min_size: int) -> np.ndarray:
    """Native-endian float32 (H, W) data (cv2 reads big-endian FITS arrays as garbage)."""
    a = np.asarray(mosaic)
    if a.ndim != 2:
        raise ValueError(f"a CFA mosaic must be 2-D (H, W), got shape {a.shape}")
    if min(a.shape) < min_size:
        raise ValueError(f"mosaic {a.shape} too small: at least {min_size}x{min_size} pixels")
    return np.ascontiguousarray(a, dtype=np.float32)


# --- missing data ---------------------------------------------------------------------------

def _fill_plane(plane: np.ndarray, bad: np.ndarray, max_passes: int = 8) -> np.ndarray:
    """``plane`` (one site) with bad pixels replaced by the mean of their valid 8 neighbours,
    repeated to grow into larger holes; whatever is left gets the plane's median."""
    plane = np.where(bad, np.float32(0), plane).astype(np.float32)
    weight = (~bad).astype(np.float32)
    for _ in range(max_passes):
        if not bad.any():
            return plane
        total = cv2.boxFilter(plane, -1, (3, 3), normalize=False, borderType=_MIRROR)
        count = cv2.boxFilter(weight, -1, (3, 3), normalize=False, borderType=_MIRROR)
        grow = bad & (count > 0)
        plane[grow] = total[grow] / count[grow]
        weight[grow] = 1.0
        bad = bad & ~grow
    if bad.any():
        good = plane[~bad]
        plane[bad] = np.median(good) if good.size else 0.0
    return plane


def _fill_missing(m: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(mosaic with finite values everywhere, mask of the pixels that were NaN/inf or None)."""
    if np.isfinite(m).all():
        return m, None
    bad = ~np.isfinite(m)
    filled = m.copy()
    planes = zip(site_planes(filled, pattern), site_planes(bad, pattern), strict=True)
    for plane, plane_bad in planes:
        plane[...] = _fill_plane(np.ascontiguousarray(plane), np.ascontiguousarray(plane_bad))
    return filled, bad


# --- OpenCV (integer) demosaicers -----------------------------------------------------------

def _cv2_code(pattern: str, suffix: str) -> int:
    # The explicit 4-letter names: the legacy "BayerRG" codes are shifted by one pixel.
    return int(getattr(cv2, f"COLOR_Bayer{pattern}2RGB{suffix}"))


def _opencv_demosaic(m: np.ndarray, pattern: str, suffix: str) -> np.ndarray:
    """OpenCV bilinear (``suffix=""``) or EA (``"_EA"``) on finite float data, via uint16."""
    lo, hi = (float(v) for v in cv2.minMaxLoc(m)[:2])
    scale = _U16_MAX / (hi - lo) if hi > lo else 1.0
    q = cv2.addWeighted(m, scale, m, 0.0, -lo * scale, dtype=cv2.CV_16U)  # rounds, saturates
    q = cv2.copyMakeBorder(q, _PAD, _PAD, _PAD, _PAD, _MIRROR)
    rgb = cv2.cvtColor(q, _cv2_code(pattern, suffix))[_PAD:-_PAD, _PAD:-_PAD]
    return cv2.addWeighted(rgb, 1.0 / scale, rgb, 0.0, lo, dtype=cv2.CV_32F)


# --- VNG in float ---------------------------------------------------------------------------
#
# Gradients (Chang et al.'s definitions), for the direction u from the centre p0 with the unit
# step q across it: |p(u) - p(-u)| + |p(2u) - p0| + the same pairs shifted by ±q, weighted 1/2
# (cardinal). Diagonal: the first two terms, plus for a red/blue centre half the four
# green-green pairs one diagonal step apart beside them, and for a green centre the two
# same-colour pairs two diagonal steps apart beside them. Every direction totals weight 4.
#
# Layout for speed: each band of padded rows is split by column parity into contiguous planes,
# so that along a mosaic row every other pixel (one site type: R, B or one of the greens) is
# one unit-stride loop with no branch, which LLVM turns into SIMD code (8 pixels at a time
# with AVX2). Numba's ``error_model="numpy"`` matters: under Python's model a float division
# may raise ZeroDivisionError, and that check alone keeps the loop scalar (4-7x slower). The
# divisor here is never 0: the direction of the smallest gradient is always kept.

_VNG_BAND = 128  # output rows per band and thread


@numba.njit(cache=True, nogil=True, inline="always")
def _kept(gradient: float, threshold: float) -> float:
    return np.float32(1.0) if gradient <= threshold else np.float32(0.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _vng_sites(c: np.ndarray, n: np.ndarray, y: int, green: bool, own: np.ndarray,
               first: np.ndarray, second: np.ndarray) -> None:
    """VNG of the sites of one column parity in padded row ``y``.

    ``c`` holds the centres' parity, ``n`` the other parity, shifted so that for output q the
    pixel (dy, dx) from the centre is ``c[y + dy, q + 1 + dx // 2]`` for even dx and
    ``n[y + dy, q + (dx + 1) // 2]`` for odd dx. Writes the centre's own value, then the
    first other colour (horizontal neighbours' for a green centre, green for red/blue) and
    the second (vertical neighbours' for green, the diagonal colour for red/blue).

    Per kept direction u, each colour's estimate is the mean of its pixels in the region
    towards u (Chang et al.): the centre's colour from p0 and p(2u) (or p(u) when that is the
    same colour), the others from the nearest pixels of that colour on u's side. The output
    is p0 plus the mean over kept directions of (other colour - centre colour). Kept
    directions are 0/1 weights, not branches: the kept set is unpredictable on noisy data.
    """
    half = np.float32(0.5)
    quarter = np.float32(0.25)
    for q in range(own.shape[0]):
        # the 5x5 window: a<row><col> with row/col in 0..4, the centre is a22
        a00, a01, a02, a03, a04 = c[y-2, q], n[y-2, q], c[y-2, q+1], n[y-2, q+1], c[y-2, q+2]
        a10, a11, a12, a13, a14 = c[y-1, q], n[y-1, q], c[y-1, q+1], n[y-1, q+1], c[y-1, q+2]
        a20, a21, a22, a23, a24 = c[y, q], n[y, q], c[y, q+1], n[y, q+1], c[y, q+2]
        a30, a31, a32, a33, a34 = c[y+1, q], n[y+1, q], c[y+1, q+1], n[y+1, q+1], c[y+1, q+2]
        a40, a41, a42, a43, a44 = c[y+2, q], n[y+2, q], c[y+2, q+1], n[y+2, q+1], c[y+2, q+2]
        # vertical/horizontal pairs 2 apart, smoothed across by [1/2, 1, 1/2]
        v_mid = half * abs(a11 - a31) + abs(a12 - a32) + half * abs(a13 - a33)
        v_top = half * abs(a01 - a21) + abs(a02 - a22) + half * abs(a03 - a23)
        v_bot = half * abs(a21 - a41) + abs(a22 - a42) + half * abs(a23 - a43)
        h_mid = half * abs(a11 - a13) + abs(a21 - a23) + half * abs(a31 - a33)
        h_right = half * abs(a12 - a14) + abs(a22 - a24) + half * abs(a32 - a34)
        h_left = half * abs(a10 - a12) + abs(a20 - a22) + half * abs(a30 - a32)
        gn = v_mid + v_top
        gs = v_mid + v_bot
        ge = h_mid + h_right
        gw = h_mid + h_left
        if green:
            ne = abs(a03 - a21) + abs(a14 - a32)
            sw = abs(a23 - a41) + abs(a12 - a30)
            se = abs(a21 - a43) + abs(a12 - a34)
            nw = abs(a01 - a23) + abs(a10 - a32)
        else:
            anti = abs(a12 - a21) + abs(a23 - a32)
            main = abs(a21 - a32) + abs(a12 - a23)
            ne = half * (anti + abs(a03 - a12) + abs(a14 - a23))
            sw = half * (anti + abs(a32 - a41) + abs(a21 - a30))
            se = half * (main + abs(a32 - a43) + abs(a23 - a34))
            nw = half * (main + abs(a01 - a12) + abs(a10 - a21))
        anti2 = abs(a13 - a31)
        main2 = abs(a11 - a33)
        gne = ne + anti2 + abs(a04 - a22)
        gsw = sw + anti2 + abs(a22 - a40)
        gse = se + main2 + abs(a22 - a44)
        gnw = nw + main2 + abs(a00 - a22)
        gmin = min(min(min(gn, gne), min(ge, gse)), min(min(gs, gsw), min(gw, gnw)))
        gmax = max(max(max(gn, gne), max(ge, gse)), max(max(gs, gsw), max(gw, gnw)))
        t = np.float32(1.5) * gmin + half * (gmax - gmin)
        kn, ks, ke, kw = _kept(gn, t), _kept(gs, t), _kept(ge, t), _kept(gw, t)
        kne, kse, ksw, knw = _kept(gne, t), _kept(gse, t), _kept(gsw, t), _kept(gnw, t)
        if green:  # first: colour of the horizontal neighbours, second: of the vertical ones
            sc = (half * ((kn + ks + ke + kw) * a22 + kn * a02 + ks * a42 + ke * a24 + kw * a20)
                  + kne * a13 + kse * a33 + ksw * a31 + knw * a11)
            s1 = (ke * a23 + kw * a21
                  + quarter * (kn * (a23 + a21 + a03 + a01) + ks * (a23 + a21 + a43 + a41))
                  + half * (kne * (a03 + a23) + kse * (a43 + a23)
                            + ksw * (a41 + a21) + knw * (a01 + a21)))
            s2 = (kn * a12 + ks * a32
                  + quarter * (ke * (a12 + a32 + a14 + a34) + kw * (a12 + a32 + a10 + a30))
                  + half * (kne * (a14 + a12) + kse * (a34 + a32)
                            + ksw * (a30 + a32) + knw * (a10 + a12)))
        else:  # first: green, second: the diagonal colour
            sc = half * ((kn + ks + ke + kw + kne + kse + ksw + knw) * a22
                         + kn * a02 + ks * a42 + ke * a24 + kw * a20
                         + kne * a04 + kse * a44 + ksw * a40 + knw * a00)
            s1 = (kn * a12 + ks * a32 + ke * a23 + kw * a21
                  + quarter * (kne * (a03 + a23 + a12 + a14) + kse * (a23 + a43 + a32 + a34)
                               + ksw * (a21 + a41 + a32 + a30) + knw * (a01 + a21 + a12 + a10)))
            s2 = (kne * a13 + kse * a33 + ksw * a31 + knw * a11
                  + half * (kn * (a11 + a13) + ks * (a31 + a33)
                            + ke * (a13 + a33) + kw * (a11 + a31)))
        inv = np.float32(1.0) / (kn + ks + ke + kw + kne + kse + ksw + knw)
        own[q] = a22
        first[q] = a22 + (s1 - sc) * inv
        second[q] = a22 + (s2 - sc) * inv


@numba.njit(cache=True, nogil=True)
def _vng_band(even: np.ndarray, odd: np.ndarray, even_next: np.ndarray, cell: np.ndarray,
              row0: int, out: np.ndarray) -> None:
    """VNG of padded rows (2 extra each side) split into their even columns, odd columns and
    even columns from the second on, into ``out`` (h, W, 3); ``row0`` is the mosaic row of
    ``out[0]`` (for the Bayer phase)."""
    h, w = out.shape[0], out.shape[1]
    n = (w + 1) // 2
    values = np.empty((3, n), dtype=np.float32)
    for i in range(h):
        y = i + 2
        r = (row0 + i) & 1
        for par in range(2):
            colour = cell[r, par]
            if par == 0:  # padded column 2q + 2 is even[q + 1]
                _vng_sites(even, odd, y, colour == 1, values[0], values[1], values[2])
            else:
                _vng_sites(odd, even_next, y, colour == 1, values[0], values[1], values[2])
            if colour == 1:
                first, second = cell[r, 1 - par], cell[1 - r, par]
            else:
                first, second = 1, 2 - colour
            for q in range((w - par + 1) // 2):
                x = 2 * q + par
                out[i, x, colour] = values[0, q]
                out[i, x, first] = values[1, q]
                out[i, x, second] = values[2, q]


def _vng(m: np.ndarray, pattern: str) -> np.ndarray:
    """VNG over row bands, in as many threads as OpenCV may use (the kernels release the GIL;
    one inside the stacking workers, which are already one per core)."""
    cell = np.array([c for _, _, c in cfa_sites(pattern)], dtype=np.int64).reshape(2, 2)
    h, w = m.shape
    # an even padded width, so that both column parities have the same length
    padded = cv2.copyMakeBorder(m, _PAD, _PAD, _PAD, _PAD + (w & 1), _MIRROR)
    out = np.empty((h, w, 3), dtype=np.float32)

    def band(y0: int) -> None:
        rows = padded[y0: min(y0 + _VNG_BAND, h) + 2 * _PAD]
        _vng_band(np.ascontiguousarray(rows[:, 0::2]), np.ascontiguousarray(rows[:, 1::2]),
                  np.ascontiguousarray(rows[:, 2::2]), cell, y0, out[y0: y0 + _VNG_BAND])

    starts = range(0, h, _VNG_BAND)
    workers = min(len(starts), cv2.getNumThreads())
    if workers <= 1:
        for y0 in starts:
            band(y0)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(band, starts))
    return out


# --- super-pixel ----------------------------------------------------------------------------

def _superpixel(m: np.ndarray, pattern: str) -> np.ndarray:
    h2, w2 = m.shape[0] // 2, m.shape[1] // 2
    cells = m[: 2 * h2, : 2 * w2]
    out = np.empty((h2, w2, 3), dtype=np.float32)
    greens = []
    for dy, dx, colour in cfa_sites(pattern):
        plane = cells[dy::2, dx::2]
        if colour == 1:
            greens.append(plane)
        else:
            out[..., colour] = plane
    g1, g2 = greens
    np.add(g1, g2, out=out[..., 1])
    out[..., 1] *= np.float32(0.5)
    if not np.isfinite(out.sum(dtype=np.float64)):
        out[~np.isfinite(out)] = np.nan
        out[..., 1] = np.where(np.isfinite(g1), np.where(np.isfinite(g2), out[..., 1], g1),
                               np.where(np.isfinite(g2), g2, np.nan))
    return out


# --- public API -----------------------------------------------------------------------------

def debayer(mosaic: np.ndarray, pattern: str, *,
            method: DemosaicMethod | str = DemosaicMethod.BILINEAR) -> np.ndarray:
    """Demosaic a CFA ``mosaic`` (H, W) of Bayer ``pattern`` into float32 RGB.

    Returns (H, W, 3), or (H//2, W//2, 3) for ``superpixel``. Any real dtype and byte order is
    accepted; computation is on native float32. Raises ConfigError for an unknown pattern or
    method.
    """
    pattern = normalize_pattern(pattern)
    how = _method(method)
    m = _as_mosaic(mosaic, 2 if how is DemosaicMethod.SUPERPIXEL else 3)
    if how is DemosaicMethod.SUPERPIXEL:
        return _superpixel(m, pattern)
    filled, bad = _fill_missing(m, pattern)
    if how is DemosaicMethod.VNG:
        rgb = _vng(filled, pattern)
    else:
        rgb = _opencv_demosaic(filled, pattern, "_EA" if how is DemosaicMethod.EA else "")
    if bad is not None:
        rgb[bad] = np.nan
    return rgb


def warm_up(method: DemosaicMethod | str) -> None:
    """Load ``method``'s numba kernels now (VNG only; from numba's cache, or compiled the first
    time), e.g. before forking workers that will inherit them instead of each loading them."""
    if _method(method) is DemosaicMethod.VNG:
        debayer(np.zeros((4, 4), np.float32), "RGGB", method=DemosaicMethod.VNG)


LUMINANCE_KERNEL = np.array([0.25, 0.5, 0.25], dtype=np.float32)
"""1-D smoothing kernel :func:`cfa_luminance` applies along rows and columns (PSF fits model it)."""


def cfa_luminance(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Full-resolution luminance (R + 2G + B) / 4 straight from a mosaic, for star detection.

    The mosaic is smoothed with the 3x3 binomial kernel ``[1 2 1]^T [1 2 1] / 16``, which
    gives every colour its Bayer share at *every* pixel (whatever the site, R and B weigh 1/4
    and G 1/2), so the colour checkerboard cancels exactly for any colour and no stellar
    colour shifts a centroid. The kernel is symmetric, so centroids stay in mosaic
    coordinates, and it is a mild blur (sigma 0.71 px) that a detector's matched filter
    would apply anyway. NaN pixels are filled as in :func:`debayer` and stay NaN.

    Measured with sep windowed centroids on synthetic star fields of stellar colours (FWHM
    2-4 px): as accurate as the luminance of a bilinear demosaic (within 5 %) at a tenth of
    the cost; 1.3-2x better than the interpolated green channel on faint stars (green alone
    discards half the light); better than a 2x2 box, which also shifts by half a pixel, and
    than the luminance of a VNG demosaic. The raw mosaic fails outright (its checkerboard is
    detected as sources).
    """
    m, bad = _fill_missing(_as_mosaic(mosaic, 3), normalize_pattern(pattern))
    lum = cv2.sepFilter2D(m, -1, LUMINANCE_KERNEL, LUMINANCE_KERNEL, borderType=_MIRROR)
    if bad is not None:
        lum[bad] = np.nan
    return lum


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(R + 2G + B) / 4 of an (H, W, 3) image as float32 (H, W): the weights of
    :func:`cfa_luminance`, so both give the same scale for the same sky."""
    a = np.ascontiguousarray(rgb, dtype=np.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    return cv2.transform(a, np.array([[0.25, 0.5, 0.25]], dtype=np.float32))
