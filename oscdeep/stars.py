"""Star detection and measurement, and one-line quality summaries of a frame.

Pure functions on float32 ``(H, W)`` luminance arrays (NaN = no data); no files, no database.
How a frame is analysed (each choice measured in ``benchmarks/bench_stars.py``):

1. Background and noise maps: ``sep.Background`` (Source Extractor's sigma-clipped mode in
   ``box`` px meshes, median-filtered and spline-interpolated): within 0.5 % of the true
   level with a gradient, but its noise reads 1-7 % high on crowded fields (star light in
   the meshes), so the frame's ``noise`` is measured again between the detected stars
   (MAD): within 0.5 %. Frames of a megapixel or more are measured on every other pixel
   (4x faster, same accuracy in ``benchmarks/bench_stars.py``).
2. Detection: local maxima of the image convolved with a Gaussian of 0.7 times the stars'
   sigma, above ``threshold`` times the noise of that filtered image (a matched filter that
   keeps ~94 % of the optimal signal-to-noise and still separates pairs ~1 FWHM apart). Each
   local maximum is one star, so close pairs come apart without a deblending pass. On
   3000x2000 fields of 2000 stars this found 94-99 % of the stars >= 10 sigma with 0-2.5 %
   false (all unresolved pairs or faint stars >1 px off) in 0.08 s, against 91-98 % and
   0.3-3.6 % in 0.27 s for ``sep.extract`` (whose isophotes merge faint stars into bright
   neighbours; its default cleaning lost another 3-9 %).
   A first pass with a 1 px kernel on the central part of the frame gives the PSF size.
   The filtered noise is measured, not assumed: demosaiced frames have correlated noise.
3. Shapes: an elliptical Moffat (beta free, the Gaussian as its limit, pixel area modelled)
   is fitted to up to ``fit_stars`` bright, isolated, unsaturated stars (:mod:`oscdeep.psf`):
   within 1 % of the true FWHM for Gaussian and Moffat (beta 2.5-4.5) stars of 2-6 px. A
   Gaussian fit or Gaussian-windowed moments read beta 2.5 stars 7-14 % wide. The other
   stars get windowed second moments scaled by the fitted/moments FWHM ratio of the fitted
   stars of the same frame. A smoothing ``kernel`` already applied to the image (e.g. by
   :func:`oscdeep.debayer.cfa_luminance`) is put into the fitted model, so the FWHM is that
   of the stars before smoothing.
4. Centroids: Gaussian-windowed (Source Extractor's XWIN), or the PSF fit for fitted stars;
   both reach the noise limit (same errors as ``sep.winpos``, which was 10x slower here).
5. Flux: an aperture of radius ``1.5 * FWHM`` (``sep.sum_circle``), its error from the noise
   map (plus shot noise when ``gain`` is given); ``snr = flux / error``.

Detections are dropped, and counted in ``StarCatalog.rejected``, when they are saturated
(a pixel >= ``saturation``; without it, at the image maximum when 5 or more pixels have
exactly that value; or a flat top: more core pixels within 1 % of the peak than a star can
have), in a saturated star's halo, hot-pixel-like (the four neighbours of the peak hold less
than a quarter of it, or a bright detection is narrower than ``min_fwhm``), extended (a
bright detection whose major axis exceeds ``max_fwhm`` or three times that of the fitted
stars: clouds, galaxies, nebula knots), on a trail (a line through at least 6 elongated
detections aligned with it: satellites, aircraft), or truncated (their core, a disc
of one FWHM, reaches the frame edge or NaN pixels).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numba
import numpy as np
import sep
from scipy.spatial import cKDTree

from oscdeep.psf import (
    FWHM_PER_SIGMA,
    Shape,
    cut_stamps,
    disc_touches,
    fit_psf,
    peak_neighbourhood,
    ring_radius,
    windowed_measure,
)
from oscdeep.robust import median_sigma

__all__ = [
    "COLUMNS", "FLAG_CROWDED", "FLAG_FITTED", "FLAG_MASKED", "REJECTION_REASONS", "Background",
    "FrameQuality", "StarCatalog", "background_rms", "detect_stars", "estimate_background",
    "frame_quality", "measure_stars", "warm_up",
]

COLUMNS: tuple[str, ...] = ("x", "y", "flux", "peak", "background", "fwhm", "roundness",
                            "eccentricity", "angle", "snr", "flags")
"""Catalog columns, all float32: position (px, 0 at the first pixel centre), aperture flux and
peak pixel above the background, local background level, FWHM (px, geometric mean of the
axes), minor/major FWHM, eccentricity, major-axis angle (radians from +x towards +y),
aperture signal-to-noise, and a bit set of ``FLAG_*``."""

FLAG_FITTED = 1
"""The shape and position come from a PSF fit (else windowed moments scaled to the fits)."""
FLAG_CROWDED = 2
"""Another star lies within the flux aperture radius plus one FWHM."""
FLAG_MASKED = 4
"""NaN pixels (no data) inside the flux aperture."""

REJECTION_REASONS = ("saturated", "halo", "hot", "trail", "extended", "edge")

_MAGIC = b"OSCSTAR1"
_SAMPLED_PIXELS = 1_000_000  # frames this large are sampled for background and noise
_GAIN_CROP = 640  # px, central square where the filtered-noise gain is measured
_NOISE_SAMPLE = 250_000  # pixels the sky noise is measured on
_FIRST_KERNEL_SIGMA = 1.0  # px, first detection pass
_FIRST_PASS_SIZE = 1024  # px, central square searched by the first pass
_KERNEL_PER_SIGMA = 0.7  # second pass: kernel sigma / star sigma
_MIN_KERNEL_SIGMA = 0.6
_APERTURE_PER_FWHM = 1.5
_HOT_NEIGHBOUR_RATIO = 0.25
_FLAT_TOP = 0.01  # a saturated core: pixels within 1 % of the peak
_HALO_EDGE = 0.25  # ring median / noise where a saturated star's halo ends
_HALO_MAX_RADIUS = 64
_MAX_HALOS = 200  # saturated stars whose halo is measured (brightest first)
_SURE_SNR = 20.0  # size tests apply to stars at least this bright
_TRAIL_MIN = 6  # elongated detections on one line that make it a trail
_TRAIL_ROUNDNESS = 0.5  # a trail piece is at least 2:1
_TRAIL_ANGLE = math.radians(20)  # its long axis within this of the line
_REDETECT = 0.3  # detect again when the fitted FWHM is this far from the first guess
_SNR_OPT_PER_FLUX = math.sqrt(math.pi / (2.0 * math.log(2.0)))  # Gaussian noise area / FWHM


# --- background -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Background:
    """Sky level and noise of a frame: (H, W) float32 maps and their global values."""

    level: np.ndarray
    rms: np.ndarray
    global_level: float
    global_rms: float


def _native(image: np.ndarray) -> np.ndarray:
    """C-contiguous native-endian float32 (sep and OpenCV misread anything else)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"star analysis needs a (H, W) image, got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.dtype(np.float32).newbyteorder("="))


def estimate_background(image: np.ndarray, *, box: int = 64, filter_size: int = 3,
                        mask: np.ndarray | None = None, stride: int = 1) -> Background:
    """Background level and noise maps, robust to stars and to gradients larger than ``box``.

    ``sep.Background``: per ``box`` x ``box`` mesh a sigma-clipped mode (2.5 median - 1.5 mean)
    and standard deviation, median-filtered over ``filter_size`` meshes, then interpolated
    with a bicubic spline. NaN pixels and ``mask`` (True = ignore) are left out. A constant
    image has an rms of 0; an image without valid pixels gives NaN.

    ``stride`` > 1 measures every ``stride``-th pixel of every ``stride``-th row (meshes keep
    their size in image pixels) and interpolates the maps back: ``stride ** 2`` times less
    work for the same level. The noise is then that of one pixel parity, which differs by a
    few per cent from the average where the noise has a 2x2 pattern (a demosaiced channel).
    """
    stride = max(1, int(stride))
    full = _native(image)
    data = full[::stride, ::stride] if stride > 1 else full
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)[::stride, ::stride]
    bkg = _sep_background(np.ascontiguousarray(data), max(1, box // stride), filter_size, mask)
    if stride > 1 and bkg.level.shape != full.shape:
        size = (full.shape[1], full.shape[0])
        bkg = Background(*(cv2.resize(m, size, interpolation=cv2.INTER_LINEAR)
                           for m in (bkg.level, bkg.rms)), bkg.global_level, bkg.global_rms)
    return bkg


def background_rms(image: np.ndarray, *, box: int = 64, filter_size: int = 3) -> float:
    """The image's global background noise: :func:`estimate_background`'s ``global_rms``
    without building the full-size maps (NaN for an image without valid pixels)."""
    return _sep_background(_native(image), box, filter_size, None, maps=False).global_rms


def _sep_background(data: np.ndarray, box: int, filter_size: int,
                    mask: np.ndarray | None, *, maps: bool = True) -> Background:
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= mask
    if bad.all():
        nan = np.full(data.shape, np.nan, np.float32)
        return Background(nan, nan.copy(), math.nan, math.nan)
    has_bad = bool(bad.any())
    valid = data[~bad] if has_bad else data
    lo, hi = float(valid.min()), float(valid.max())
    if lo == hi:  # sep would report an rms of 1
        return Background(np.full(data.shape, lo, np.float32),
                          np.zeros(data.shape, np.float32), lo, 0.0)
    if has_bad:
        data = np.where(bad, np.float32(0), data)
    h, w = data.shape
    bkg = sep.Background(data, mask=bad if has_bad else None, bw=min(box, w), bh=min(box, h),
                         fw=filter_size, fh=filter_size)
    if not maps:
        empty = np.zeros((0, 0), np.float32)
        return Background(empty, empty, float(bkg.globalback), float(bkg.globalrms))
    return Background(level=bkg.back(dtype=np.float32), rms=bkg.rms(dtype=np.float32),
                      global_level=float(bkg.globalback), global_rms=float(bkg.globalrms))


# --- catalog ----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class StarCatalog:
    """Measured stars of one frame, brightest first: a float32 structured array of ``COLUMNS``.

    ``shape`` is the (H, W) of the measured image; ``rejected`` counts the dropped detections
    by reason (see ``REJECTION_REASONS``).
    """

    data: np.ndarray
    shape: tuple[int, int]
    rejected: Mapping[str, int] = field(default_factory=dict)

    DTYPE = np.dtype([(name, "<f4") for name in COLUMNS])

    @classmethod
    def empty(cls, shape: tuple[int, ...], rejected: Mapping[str, int] | None = None
              ) -> StarCatalog:
        return cls(np.zeros(0, cls.DTYPE), (int(shape[0]), int(shape[1])), dict(rejected or {}))

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray], shape: tuple[int, ...],
                     rejected: Mapping[str, int] | None = None) -> StarCatalog:
        """Build from per-column arrays (missing columns are NaN), sorted by flux descending."""
        n = len(next(iter(columns.values()))) if columns else 0
        data = np.zeros(n, cls.DTYPE)
        for name in COLUMNS:
            data[name] = columns.get(name, np.full(n, np.nan))
        flux = np.nan_to_num(data["flux"].astype(np.float64), nan=-np.inf)
        data = data[np.argsort(-flux, kind="stable")]
        return cls(data, (int(shape[0]), int(shape[1])), dict(rejected or {}))

    def __len__(self) -> int:
        return len(self.data)

    @property
    def count(self) -> int:
        """Number of stars (same as ``len``)."""
        return len(self.data)

    def __getitem__(self, name: str) -> np.ndarray:
        """One column (float32)."""
        return self.data[name]

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) float64 positions (x, y)."""
        return np.stack([self.data["x"], self.data["y"]], axis=1).astype(np.float64)

    def brightest(self, n: int) -> StarCatalog:
        """The ``n`` brightest stars."""
        return StarCatalog(self.data[:max(0, n)], self.shape, self.rejected)

    def with_positions(self, xy: np.ndarray) -> StarCatalog:
        """The same stars at other (N, 2) positions (e.g. mapped through a transform)."""
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape != (len(self), 2):
            raise ValueError(f"need ({len(self)}, 2) positions, got {xy.shape}")
        data = self.data.copy()
        data["x"], data["y"] = xy[:, 0], xy[:, 1]
        return StarCatalog(data, self.shape, self.rejected)

    def select(self, keep: np.ndarray) -> StarCatalog:
        """The stars that ``keep`` (bool mask or indices) selects, in catalog order."""
        return StarCatalog(self.data[keep], self.shape, self.rejected)

    def to_bytes(self) -> bytes:
        """Compact blob: magic, a JSON header (columns, shape, counts), then zlib of the
        float32 columns with their bytes regrouped by significance (compresses ~25 % better)."""
        header = json.dumps({"columns": list(COLUMNS), "n": len(self), "shape": list(self.shape),
                             "rejected": dict(self.rejected)}, separators=(",", ":")).encode()
        cols = np.stack([self.data[c].astype("<f4") for c in COLUMNS]) if len(self) else \
            np.zeros((len(COLUMNS), 0), "<f4")
        shuffled = cols.view(np.uint8).reshape(-1, 4).T.tobytes()
        return _MAGIC + struct.pack("<I", len(header)) + header + zlib.compress(shuffled, 6)

    @classmethod
    def from_bytes(cls, blob: bytes) -> StarCatalog:
        """Inverse of :meth:`to_bytes` (bit-exact); unknown columns are ignored."""
        try:
            if blob[:len(_MAGIC)] != _MAGIC:
                raise ValueError("not an oscdeep star catalog blob")
            (size,) = struct.unpack_from("<I", blob, len(_MAGIC))
            start = len(_MAGIC) + 4
            header = json.loads(blob[start:start + size])
            n, names = int(header["n"]), list(header["columns"])
            raw = np.frombuffer(zlib.decompress(blob[start + size:]), dtype=np.uint8)
        except (struct.error, zlib.error, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"damaged star catalog blob: {exc}") from exc
        if raw.size != 4 * n * len(names):
            raise ValueError("damaged star catalog blob: wrong length")
        cols = raw.reshape(4, -1).T.copy().view("<f4").reshape(len(names), n)
        data = np.zeros(n, cls.DTYPE)
        for name, col in zip(names, cols):
            if name in COLUMNS:
                data[name] = col
        return cls(data, (int(header["shape"][0]), int(header["shape"][1])),
                   {str(k): int(v) for k, v in header.get("rejected", {}).items()})


# --- detection --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray  # native float32
    sub: np.ndarray  # background-subtracted, NaN kept
    filled: np.ndarray  # background-subtracted, NaN -> 0
    valid: np.ndarray | None  # None: every pixel is valid
    rms: np.ndarray  # noise map, > 0
    background: Background


def _prepare(img: np.ndarray, background: Background | None, box: int) -> _Prepared | None:
    """Background-subtract; None when the frame has no noise to measure against."""
    bkg = background or _frame_background(img, box)
    if not (math.isfinite(bkg.global_rms) and bkg.global_rms > 0):
        return None
    sub = img - bkg.level
    valid = None
    filled = sub
    if np.isnan(sub.sum(dtype=np.float64)):
        valid = np.isfinite(sub)
        filled = np.where(valid, sub, np.float32(0))
    rms = np.maximum(bkg.rms, np.float32(1e-3 * bkg.global_rms))
    return _Prepared(img, sub, filled, valid, rms, bkg)


def _frame_background(img: np.ndarray, box: int) -> Background:
    """The background a detection works against: from every other pixel once the frame has
    a megapixel or more (4x faster; the detection threshold only needs the noise to a few
    per cent and the frame's ``noise`` figure is measured again between the stars)."""
    return estimate_background(img, box=box, stride=2 if img.size >= _SAMPLED_PIXELS else 1)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3.0 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _filtered_noise_gain(filled: np.ndarray, filt: np.ndarray, kernel: np.ndarray,
                         valid: np.ndarray | None) -> float:
    """Noise of the filtered image per unit of pixel noise.

    White noise gives ``sqrt(sum of the 2-D kernel squared) = sum(k^2)``. Neighbouring pixels
    of a demosaiced or resampled frame share noise, so their filtered noise is larger (2-3x
    after an edge-aware demosaic, which turned noise into thousands of "5 sigma stars" in
    real Seestar frames): the ratio of the clipped rms of both images, measured on every
    other pixel of the central ``_GAIN_CROP`` square, is used when it is larger.
    """
    white = float(np.sum(kernel.astype(np.float64) ** 2))
    h, w = filled.shape
    y0, x0 = max(0, (h - _GAIN_CROP) // 2), max(0, (w - _GAIN_CROP) // 2)
    part = np.s_[y0:y0 + _GAIN_CROP:2, x0:x0 + _GAIN_CROP:2]
    a, b = (np.ascontiguousarray(im[part]) for im in (filled, filt))
    if min(a.shape) < 16:
        return white
    mask = None if valid is None else ~np.ascontiguousarray(valid[part])
    if mask is not None and mask.mean() > 0.5:  # mostly no data in the centre: use it all
        a, b = (np.ascontiguousarray(im[::2, ::2]) for im in (filled, filt))
        mask = ~np.ascontiguousarray(valid[::2, ::2])
    box = min(32, *a.shape)
    rms_a, rms_b = (sep.Background(im, mask=mask, bw=box, bh=box).globalrms for im in (a, b))
    if not (rms_a > 0 and math.isfinite(rms_b)):
        return white
    return max(white, rms_b / rms_a)


def _find_peaks(filled: np.ndarray, rms: np.ndarray, valid: np.ndarray | None,
                kernel_sigma: float, threshold: float, min_area: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima (3x3) of the filtered image above ``threshold`` filtered-noise units with
    at least ``min_area`` pixels of their 3x3 block above it: integer (x, y) and SNR of each,
    highest first."""
    k = _gauss_kernel(kernel_sigma)
    filt = cv2.sepFilter2D(filled, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT)
    gain = np.float32(_filtered_noise_gain(filled, filt, k, valid))
    has_valid = valid is not None
    ys, xs = _peak_pixels(filt, rms, valid if has_valid else np.ones((1, 1), bool), has_valid,
                          float(gain * np.float32(threshold)), min(max(min_area, 1), 9))
    snr = filt[ys, xs] / (rms[ys, xs] * gain)
    order = np.argsort(-snr, kind="stable")
    return xs[order], ys[order], snr[order]


@numba.njit(cache=True, nogil=True)
def _peak_pixels(filt: np.ndarray, rms: np.ndarray, valid: np.ndarray, has_valid: bool,
                 limit: float, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns), in row-major order, of the pixels above ``limit * rms`` (and valid)
    that are the maximum of their 3x3 block (which ends at the frame's edge) and have at
    least ``min_count`` such pixels in it (counted with the edge pixels repeated outside).
    One pass, without the full-frame masks of the array formulation."""
    h, w = filt.shape
    lim = np.float32(limit)
    cap = 1024
    ys = np.empty(cap, np.int64)
    xs = np.empty(cap, np.int64)
    n = 0
    for y in range(h):
        for x in range(w):
            v = filt[y, x]
            if not v > rms[y, x] * lim or (has_valid and not valid[y, x]):
                continue
            count = 0
            top = True
            for dy in range(-1, 2):
                yy = y + dy
                yc = min(max(yy, 0), h - 1)
                for dx in range(-1, 2):
                    xx = x + dx
                    xc = min(max(xx, 0), w - 1)
                    if 0 <= yy < h and 0 <= xx < w and filt[yy, xx] > v:
                        top = False
                    if filt[yc, xc] > rms[yc, xc] * lim and (not has_valid or valid[yc, xc]):
                        count += 1
            if top and count >= min_count:
                if n == cap:
                    cap *= 2
                    ys = np.concatenate((ys, np.empty(cap - n, np.int64)))
                    xs = np.concatenate((xs, np.empty(cap - n, np.int64)))
                ys[n] = y
                xs[n] = x
                n += 1
    return ys[:n], xs[:n]


def warm_up() -> None:
    """Load the detection's numba kernels now (from numba's cache, or compiled the first
    time), e.g. before forking workers that will inherit them instead of each loading them:
    the peak finder for a whole frame's noise map and for a crop of it, the windowed
    centroids and the PSF fit."""
    image = np.zeros((4, 4), np.float32)
    for rms in (np.ones((4, 4), np.float32), np.ones((4, 5), np.float32)[:, :4]):
        _peak_pixels(image, rms, np.ones((1, 1), bool), False, 1.0, 1)
    windowed_measure(image, np.ones(1), np.ones(1), sigma=1.0)
    fit_psf(np.zeros((9, 9), np.float32), np.full(1, 4.0), np.full(1, 4.0), fwhm_guess=2.0,
            kernel=np.ones(3) / 3)


def _merge_close(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Indices kept when every peak within ``radius`` of a brighter kept one is dropped (input
    brightest first). Also removes the twin maxima of flat-topped stars."""
    if len(x) < 2:
        return np.arange(len(x))
    pairs = cKDTree(np.stack([x, y], axis=1)).query_pairs(radius, output_type="ndarray")
    drop = np.zeros(len(x), bool)
    pairs.sort(axis=1)
    for i, j in pairs[np.argsort(pairs[:, 0], kind="stable")]:
        if not drop[i]:
            drop[j] = True
    return np.flatnonzero(~drop)


def _first_pass_fwhm(prep: _Prepared, threshold: float) -> float:
    """FWHM guess from bright peaks of a 1 px-kernel detection in the central square (the
    whole frame if that holds fewer than 10); NaN without any peak."""
    h, w = prep.filled.shape
    size = _FIRST_PASS_SIZE
    for y0, x0, hh, ww in ((max((h - size) // 2, 0), max((w - size) // 2, 0), size, size),
                           (0, 0, h, w)):
        part = np.s_[y0:y0 + hh, x0:x0 + ww]
        valid = prep.valid[part] if prep.valid is not None else None
        px, py, snr = _find_peaks(np.ascontiguousarray(prep.filled[part]), prep.rms[part], valid,
                                  _FIRST_KERNEL_SIGMA, threshold, 3)
        bright = snr > max(3.0 * threshold, 20.0)
        whole = hh >= h and ww >= w
        if bright.sum() >= 10 or whole:
            pick = bright if bright.sum() >= 3 else np.ones(len(px), bool)
            return _guess_fwhm(prep.sub, px[pick] + x0, py[pick] + y0)
    return math.nan


def _guess_fwhm(sub: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Rough FWHM (px): the area above half the peak as a circle, median over up to 50 peaks
    (single hot pixels left out)."""
    if len(x) == 0:
        return math.nan
    stamps = cut_stamps(sub, x[:50], y[:50], 15)
    peak = stamps[:, stamps.shape[1] // 2]
    with np.errstate(invalid="ignore"):
        area = np.sum(stamps >= 0.5 * peak[:, None], axis=1)
    area = area[area > 1] if np.any(area > 1) else area
    return float(np.median(np.sqrt(4.0 * area / math.pi)))


def detect_stars(image: np.ndarray, *, threshold: float = 5.0, min_area: int = 3,
                 saturation: float | None = None, max_stars: int | None = None,
                 deblend: bool = True, background: Background | None = None,
                 fwhm: float | None = None, fit_stars: int = 50, gain: float | None = None,
                 box: int = 64, min_fwhm: float = 1.0, max_fwhm: float = 25.0,
                 kernel: np.ndarray | None = None) -> StarCatalog:
    """Find and measure the stars of a frame; rejected detections are only counted.

    ``threshold`` is in units of the matched-filter noise; ``min_area`` is the least number of
    pixels of the 3x3 block around a peak that must be above it in the filtered image.
    ``saturation`` is the level (image units, background included) at which pixels clip.
    Without ``deblend`` peaks within 3 FWHM of a brighter peak are dropped. ``fwhm`` replaces
    the first-pass PSF size. ``gain`` (electrons per image unit) adds shot noise to the flux
    errors. Up to ``fit_stars`` bright isolated stars get a PSF fit. ``kernel`` is a 1-D
    smoothing kernel the image was already filtered with along both axes (e.g. the binomial
    ``[1, 2, 1] / 4`` of :func:`oscdeep.debayer.cfa_luminance`): the fits model it, so FWHM
    and roundness are those of the unsmoothed stars (it adds 10-20 % to a 3 px FWHM).
    """
    img = _native(image)
    prep = _prepare(img, background, box)
    if prep is None:
        return StarCatalog.empty(img.shape)
    return _detect(prep, threshold=threshold, min_area=min_area, saturation=saturation,
                   max_stars=max_stars, deblend=deblend, fwhm=fwhm, fit_stars=fit_stars,
                   gain=gain, min_fwhm=min_fwhm, max_fwhm=max_fwhm, kernel=kernel)


def _detect(prep: _Prepared, *, threshold: float, min_area: int, saturation: float | None,
            max_stars: int | None, deblend: bool, fwhm: float | None, fit_stars: int,
            gain: float | None, min_fwhm: float, max_fwhm: float,
            kernel: np.ndarray | None) -> StarCatalog:
    guess = fwhm if fwhm is not None else _first_pass_fwhm(prep, threshold)
    if not math.isfinite(guess):
        return StarCatalog.empty(prep.image.shape)
    cat = StarCatalog.empty(prep.image.shape)
    for _ in range(2):  # once more if the stars turn out much sharper or wider than guessed
        guess = float(np.clip(guess, min_fwhm, max_fwhm))
        sigma = max(_MIN_KERNEL_SIGMA, _KERNEL_PER_SIGMA * guess / FWHM_PER_SIGMA)
        px, py, _ = _find_peaks(prep.filled, prep.rms, prep.valid, sigma, threshold, min_area)
        keep = _merge_close(px.astype(np.float64), py.astype(np.float64),
                            1.5 if deblend else 3.0 * guess)
        cat = _measure(prep, px[keep].astype(np.float64), py[keep].astype(np.float64),
                       fwhm=guess, saturation=saturation, fit_stars=fit_stars, gain=gain,
                       min_fwhm=min_fwhm, max_fwhm=max_fwhm, kernel=kernel)
        fitted = _fitted(cat)
        if fwhm is not None or not fitted.any():
            break
        measured = float(np.median(cat["fwhm"][fitted]))
        if kernel is not None:  # back to the smoothed image the guess describes
            measured = math.hypot(measured, FWHM_PER_SIGMA * _kernel_sigma(kernel))
        if abs(measured / guess - 1.0) <= _REDETECT:
            break
        guess = measured
    return cat.brightest(max_stars) if max_stars is not None else cat


def _kernel_sigma(kernel: np.ndarray) -> float:
    """Standard deviation (px) of a 1-D smoothing kernel."""
    k = np.asarray(kernel, dtype=np.float64).ravel()
    i = np.arange(len(k)) - (len(k) - 1) / 2
    return math.sqrt(float(np.sum(k * i * i) / np.sum(k)))


def _fitted(cat: StarCatalog) -> np.ndarray:
    return (cat["flags"].astype(np.int32) & FLAG_FITTED) != 0


# --- measurement ------------------------------------------------------------------------------

def measure_stars(image: np.ndarray, x: np.ndarray, y: np.ndarray, *,
                  background: Background | None = None, fwhm: float | None = None,
                  saturation: float | None = None, max_stars: int | None = None,
                  fit_stars: int = 50, gain: float | None = None, box: int = 64,
                  min_fwhm: float = 1.0, max_fwhm: float = 25.0,
                  kernel: np.ndarray | None = None) -> StarCatalog:
    """Measure the stars near given positions (e.g. a reference catalog moved onto a frame).

    Centroids are refined, shapes measured (PSF fit for up to ``fit_stars`` bright isolated
    stars, scaled windowed moments for the rest), and saturated, hot-pixel-like, extended and
    truncated ones dropped as in :func:`detect_stars`. ``fwhm`` is a starting guess (default:
    from the image around the brightest positions).
    """
    img = _native(image)
    prep = _prepare(img, background, box)
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if prep is None or len(x) == 0:
        return StarCatalog.empty(img.shape)
    if fwhm is None:
        fwhm = _guess_fwhm(prep.sub, np.rint(x).astype(np.int64), np.rint(y).astype(np.int64))
    fwhm = float(np.clip(fwhm if math.isfinite(fwhm) else 3.0, min_fwhm, max_fwhm))
    cat = _measure(prep, x, y, fwhm=fwhm, saturation=saturation, fit_stars=fit_stars,
                   gain=gain, min_fwhm=min_fwhm, max_fwhm=max_fwhm, kernel=kernel)
    return cat.brightest(max_stars) if max_stars is not None else cat


def _measure(prep: _Prepared, x: np.ndarray, y: np.ndarray, *, fwhm: float,
             saturation: float | None, fit_stars: int, gain: float | None, min_fwhm: float,
             max_fwhm: float, kernel: np.ndarray | None) -> StarCatalog:
    h, w = prep.image.shape
    rejected = dict.fromkeys(REJECTION_REASONS, 0)
    ix = np.clip(np.rint(x), 0, w - 1).astype(np.int64)
    iy = np.clip(np.rint(y), 0, h - 1).astype(np.int64)
    clip = _clip_level(prep, saturation)
    peak, bad = _reject_peaks(prep, ix, iy, fwhm, clip if math.isfinite(clip) else None,
                              kernel, rejected)
    x, y, ix, iy, peak = x[~bad], y[~bad], ix[~bad], iy[~bad], peak[~bad]
    if len(x) == 0:
        return StarCatalog.empty(prep.image.shape, rejected)

    win = windowed_measure(prep.sub, x, y, sigma=max(fwhm / FWHM_PER_SIGMA, 0.6))
    xc = np.where(win.converged, win.x, ix)
    yc = np.where(win.converged, win.y, iy)
    edge = (xc < fwhm - 0.5) | (yc < fwhm - 0.5) | (xc > w - 0.5 - fwhm) | (yc > h - 0.5 - fwhm)
    if prep.valid is not None:
        edge |= disc_touches(~prep.valid, xc, yc, fwhm)
    rejected["edge"] += int(edge.sum())
    keep = ~edge
    xc, yc, ix, iy, peak = xc[keep], yc[keep], ix[keep], iy[keep], peak[keep]
    major, minor, angle = (a[keep].copy() for a in (win.shape.fwhm_major, win.shape.fwhm_minor,
                                                    win.shape.angle))
    flags = np.zeros(len(xc), np.int32)
    if len(xc) == 0:
        return StarCatalog.empty(prep.image.shape, rejected)

    # Shapes: PSF fits of bright isolated stars; moments scaled to them for the rest.
    # Stars within 20 % of the clip level may already be non-linear.
    fit = _fit_subsample(prep, xc, yc, peak, fwhm, fit_stars, 0.8 * clip, kernel)
    frame_fwhm = fwhm
    if fit is not None:
        ratio = fit.shape.fwhm / np.sqrt(major[fit.index] * minor[fit.index])
        ratio = ratio[np.isfinite(ratio)]
        scale = float(np.median(ratio)) if ratio.size else 1.0
        major, minor = major * scale, minor * scale
        i = fit.index
        xc[i], yc[i] = fit.x, fit.y
        major[i], minor[i], angle[i] = fit.shape.fwhm_major, fit.shape.fwhm_minor, fit.shape.angle
        flags[i] |= FLAG_FITTED
        frame_fwhm = float(np.median(fit.shape.fwhm))

    # Aperture photometry at a radius tied to the frame's FWHM.
    radius = max(2.0, _APERTURE_PER_FWHM * frame_fwhm)
    mask = None if prep.valid is None else ~prep.valid
    flux, ferr, aflag = sep.sum_circle(prep.filled, xc, yc, radius, err=prep.rms, mask=mask,
                                       gain=gain, subpix=5)
    flags[(aflag & sep.APER_HASMASKED) != 0] |= FLAG_MASKED
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(ferr > 0, flux / ferr, np.nan)
        star_fwhm = np.sqrt(major * minor)
        roundness = minor / major
    trail = _on_trails(xc, yc, roundness, angle, frame_fwhm)
    # Sizes of fainter stars are too noisy to judge them by. Extended: a major axis above
    # max_fwhm or 3x the stars' (pieces of a bright satellite trail measure 10x).
    sure = ~trail & (snr >= _SURE_SNR)
    typical = major[(flags & FLAG_FITTED) != 0] if fit is not None else major[sure]
    limit = max_fwhm
    if np.isfinite(typical).any():
        limit = min(max_fwhm, 3.0 * float(np.nanmedian(typical)))
    extended = sure & ~(major <= limit)
    tiny = sure & (star_fwhm < min_fwhm)
    rejected["trail"] += int(trail.sum())
    rejected["extended"] += int(extended.sum())
    rejected["hot"] += int(tiny.sum())
    keep = ~(trail | extended | tiny)
    if keep.sum() > 1:
        pts = np.stack([xc[keep], yc[keep]], 1)
        near = cKDTree(pts).query(pts, k=2)[0][:, 1]
        flags[np.flatnonzero(keep)[near < radius + frame_fwhm]] |= FLAG_CROWDED
    columns = {"x": xc, "y": yc, "flux": flux, "peak": peak,
               "background": prep.background.level[iy, ix], "fwhm": star_fwhm,
               "roundness": roundness, "eccentricity": np.sqrt(np.clip(1 - roundness**2, 0, 1)),
               "angle": angle, "snr": snr, "flags": flags.astype(np.float32)}
    return StarCatalog.from_columns({k: v[keep] for k, v in columns.items()}, prep.image.shape,
                                    rejected)


def _reject_peaks(prep: _Prepared, ix: np.ndarray, iy: np.ndarray, fwhm: float,
                  saturation: float | None, kernel: np.ndarray | None,
                  rejected: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Peak value of each detection and which ones are saturated, in a saturated star's halo
    or hot-pixel-like (counted into ``rejected``)."""
    peak, nb, flat = peak_neighbourhood(prep.sub, ix, iy, _FLAT_TOP)
    noise = prep.rms[iy, ix]

    sat = np.zeros(len(ix), bool)
    if saturation is not None:
        raw = cut_stamps(prep.image, ix, iy, 1)
        sat |= np.max(np.nan_to_num(raw, nan=-np.inf), axis=1) >= saturation
    # A flat top: more core pixels within 1 % of the peak than an unsaturated star has (4 for
    # one centred on a pixel corner, plus the area where its profile is within 1 % of the top).
    sat |= (flat >= 5 + 0.05 * (fwhm / 2) ** 2) & (peak > _SURE_SNR * noise)
    # Around a saturated star its halo stays above the detection threshold and noise makes
    # local maxima on it.
    halo = np.zeros(len(ix), bool)
    if sat.any():
        halo = ~sat & _in_halo(prep, ix[sat], iy[sat], ix, iy, fwhm)
    # Hot pixels and cosmic rays: the four neighbours hold less than a quarter of the peak by
    # more than twice their noise (sigma / 2); a star of FWHM >= 1.5 px keeps >= 0.3 there.
    # A smoothing kernel gives a lone pixel neighbours of k[c-1] / k[c] of its peak (0.5 for
    # [1, 2, 1]): the limit moves up by as much (a 2 px star smoothed so keeps 0.7).
    spread = 0.0
    if kernel is not None and len(kernel) >= 3:
        c = len(kernel) // 2
        spread = float(kernel[c - 1] / kernel[c])
    limit = spread + (1.0 - spread) * _HOT_NEIGHBOUR_RATIO
    with np.errstate(invalid="ignore"):
        hot = ~sat & ~halo & (nb < limit * peak - noise)
    for reason, which in (("saturated", sat), ("halo", halo), ("hot", hot)):
        rejected[reason] += int(which.sum())
    return peak, sat | halo | hot


def _in_halo(prep: _Prepared, sx: np.ndarray, sy: np.ndarray, x: np.ndarray, y: np.ndarray,
             fwhm: float) -> np.ndarray:
    """Which (x, y) lie in the halo of a saturated star at (sx, sy): closer than the radius
    where the median of the star's 1 px rings falls below a quarter of the noise (at least
    2 FWHM, at most 64 px)."""
    order = np.argsort(-prep.sub[sy, sx], kind="stable")[:_MAX_HALOS]
    sx, sy = sx[order], sy[order]
    radii = ring_radius(prep.sub, sx, sy, _HALO_EDGE * prep.rms[sy, sx], _HALO_MAX_RADIUS)
    radii = np.maximum(radii, 2.0 * fwhm)
    d, j = cKDTree(np.stack([sx, sy], 1).astype(np.float64)).query(
        np.stack([x, y], 1).astype(np.float64))
    return d < radii[j]


def _on_trails(x: np.ndarray, y: np.ndarray, roundness: np.ndarray, angle: np.ndarray,
               fwhm: float, max_lines: int = 5) -> np.ndarray:
    """Detections on satellite or aircraft trails: a Hough search (1 degree steps, bands one
    trail-width wide) for a line through at least 6 elongated detections whose long axes lie
    along it; every detection within 1.5 FWHM of such a line is a trail piece."""
    out = np.zeros(len(x), bool)
    cand = np.flatnonzero(np.isfinite(roundness) & (roundness < _TRAIL_ROUNDNESS))
    width = max(3.0, 1.5 * fwhm)
    thetas = np.radians(np.arange(0.0, 180.0, 1.0))
    sin, cos = np.sin(thetas)[:, None], np.cos(thetas)[:, None]
    for _ in range(max_lines):
        if cand.size < _TRAIL_MIN:
            break
        # Long axis along the line: angle difference modulo pi.
        diff = np.abs((angle[cand][None, :] - thetas[:, None] + np.pi / 2) % np.pi - np.pi / 2)
        aligned = diff < _TRAIL_ANGLE
        rho = x[cand][None, :] * sin - y[cand][None, :] * cos
        best = (0, 0, 0.0)
        for t in np.flatnonzero(aligned.sum(axis=1) >= _TRAIL_MIN):
            r = np.sort(rho[t, aligned[t]])
            counts = np.searchsorted(r, r + width, side="right") - np.arange(r.size)
            j = int(np.argmax(counts))
            if counts[j] > best[0]:
                best = (int(counts[j]), int(t), float(r[j] + width / 2))
        count, t, rho0 = best
        if count < _TRAIL_MIN:
            break
        dist = np.abs(x * np.sin(thetas[t]) - y * np.cos(thetas[t]) - rho0)
        out |= dist < width
        cand = cand[~out[cand]]
    return out


@dataclass(frozen=True)
class _FitResult:
    index: np.ndarray  # into the measured stars
    x: np.ndarray
    y: np.ndarray
    shape: Shape


def _clip_level(prep: _Prepared, saturation: float | None) -> float:
    """The level where pixels clip: ``saturation``, else the image maximum if at least 5
    pixels have exactly that value (as clipped pixels do before flat-fielding; noise never
    makes several unclipped pixels equal to the maximum), else infinity."""
    if saturation is not None:
        return float(saturation)
    top = np.nanmax(prep.image)
    if not (np.isfinite(top) and top > 0):
        return math.inf
    return float(top) if np.count_nonzero(prep.image == top) >= 5 else math.inf


def _fit_subsample(prep: _Prepared, x: np.ndarray, y: np.ndarray, peak: np.ndarray,
                   fwhm: float, count: int, raw_limit: float,
                   kernel: np.ndarray | None) -> _FitResult | None:
    """PSF fits of up to ``count`` stars with the highest peaks whose pixels stay below
    ``raw_limit`` (image units, background included) and no other star within two fit
    radii."""
    if count <= 0 or len(x) == 0:
        return None
    radius = max(4, math.ceil(1.5 * fwhm))
    h, w = prep.sub.shape
    ok = (x >= radius) & (y >= radius) & (x <= w - 1 - radius) & (y <= h - 1 - radius)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(peak) & (peak + prep.background.level[iy, ix] < raw_limit)
    if len(x) > 1:
        pts = np.stack([x, y], 1)
        ok &= cKDTree(pts).query(pts, k=2)[0][:, 1] > 2.0 * radius
    candidates = np.flatnonzero(ok)
    candidates = candidates[np.argsort(-peak[candidates], kind="stable")][:count]
    if candidates.size == 0:
        return None
    fit = fit_psf(prep.sub, x[candidates], y[candidates], fwhm_guess=fwhm, radius=radius,
                  kernel=kernel)
    f = fit.shape.fwhm
    good = fit.ok & np.isfinite(f) & (np.hypot(fit.x - x[candidates], fit.y - y[candidates]) < 1)
    if good.sum() >= 3:  # drop outliers: galaxies, blends, cosmic rays
        med = np.median(f[good])
        good &= (f > 0.5 * med) & (f < 2.0 * med)
    if not good.any():
        return None
    shape = Shape(fit.shape.fwhm_major[good], fit.shape.fwhm_minor[good], fit.shape.angle[good])
    return _FitResult(candidates[good], fit.x[good], fit.y[good], shape)


# --- frame summary ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FrameQuality:
    """One frame in numbers; ``reason`` says why it could not be measured (``weight`` is then 0
    and the star figures are NaN or come from too few stars to trust).

    ``fwhm``, ``roundness`` and ``eccentricity`` are medians over the PSF-fitted stars (all
    stars when none could be fitted). ``background`` is the global sky level and ``noise``
    the sky noise between the stars. ``snr`` is the background-limited signal-to-noise that
    optimal photometry reaches on a reference flux, ``flux / (noise * fwhm * sqrt(pi /
    (2 ln 2)))`` (exact for a Gaussian star); the reference flux is the median over the stars
    ranked K to 2K - 1 by flux (K = ``reference_stars``, saturated stars counted in the
    ranking, so every frame of a field uses the same stars whatever its transparency), and
    ``weight = snr ** 2``: it falls as 1 / noise^2, 1 / FWHM^2 and transparency^2, so it ranks
    the frames of one field for stacking. Higher is better.
    """

    star_count: int
    fwhm: float
    roundness: float
    eccentricity: float
    background: float
    noise: float
    snr: float
    weight: float
    reason: str | None
    catalog: StarCatalog

    def as_dict(self) -> dict[str, Any]:
        """The numbers (no catalog), e.g. for database columns."""
        return {k: getattr(self, k) for k in ("star_count", "fwhm", "roundness", "eccentricity",
                                               "background", "noise", "snr", "weight", "reason")}


def frame_quality(image: np.ndarray, *, threshold: float = 5.0, saturation: float | None = None,
                  min_stars: int = 5, reference_stars: int = 20,
                  background: Background | None = None, catalog: StarCatalog | None = None,
                  gain: float | None = None, box: int = 64, fit_stars: int = 50,
                  kernel: np.ndarray | None = None) -> FrameQuality:
    """Detect and measure the stars of a frame and summarise its quality. Never raises on
    black, blank, cloudy or starless frames: they come back with ``reason`` set.

    A ``catalog`` measured earlier (same image) is used instead of detecting again; the
    other options are those of :func:`detect_stars`.
    """
    img = _native(image)
    nan = math.nan
    empty = StarCatalog.empty(img.shape)
    if not np.isfinite(img).any():
        return FrameQuality(0, nan, nan, nan, nan, nan, nan, 0.0, "no valid pixels", empty)
    bkg = background or _frame_background(img, box)
    prep = _prepare(img, bkg, box)
    if prep is None:
        return FrameQuality(0, nan, nan, nan, bkg.global_level, bkg.global_rms, nan, 0.0,
                            "blank frame: no noise to measure against (constant image)", empty)
    cat = catalog if catalog is not None else _detect(
        prep, threshold=threshold, min_area=3, saturation=saturation, max_stars=None,
        deblend=True, fwhm=None, fit_stars=fit_stars, gain=gain, min_fwhm=1.0, max_fwhm=25.0,
        kernel=kernel)
    level, noise = bkg.global_level, _sky_noise(prep, cat)
    n = len(cat)
    if n == 0:
        return FrameQuality(0, nan, nan, nan, level, noise, nan, 0.0, "no stars detected", cat)
    use = _fitted(cat) if _fitted(cat).any() else np.ones(n, bool)
    fwhm, roundness, ecc = (float(np.nanmedian(cat[c][use])) if np.isfinite(cat[c][use]).any()
                            else nan for c in ("fwhm", "roundness", "eccentricity"))
    # Ranks K..2K-1 with saturated stars counted: the same stars in every frame of a field
    # whatever the transparency (a hazier frame has fewer saturated stars).
    start = max(0, min(reference_stars - int(cat.rejected.get("saturated", 0)),
                       n - reference_stars))
    ref_flux = float(np.median(cat["flux"][start:start + reference_stars]))
    snr = ref_flux / (noise * fwhm * _SNR_OPT_PER_FLUX)
    reason = None
    if n < min_stars:
        reason = f"only {n} star{'s' if n != 1 else ''} detected (at least {min_stars} needed)"
    elif not math.isfinite(fwhm):
        reason = "no star could be measured"
    weight = 0.0 if reason or not math.isfinite(snr) else max(snr, 0.0) ** 2
    return FrameQuality(n, fwhm, roundness, ecc, level, noise, snr, weight, reason, cat)


def _sky_noise(prep: _Prepared, cat: StarCatalog) -> float:
    """Robust sky noise between the stars: MAD of every n-th pixel of every n-th row (n >= 3,
    about 250 000 pixels: the MAD to 0.2 %) outside a disc around each star whose radius
    grows with the star's peak. (The per-mesh clipping of the background map leaves 2-3 %
    of star light in the noise of crowded fields.)"""
    stride = max(3, math.ceil(math.sqrt(prep.sub.size / _NOISE_SAMPLE)))
    sample = prep.sub[::stride, ::stride]
    mask = np.zeros(sample.shape, np.uint8)
    if len(cat):
        fwhm = np.nan_to_num(cat["fwhm"], nan=3.0)
        rel = np.maximum(np.nan_to_num(cat["peak"] / prep.background.global_rms, nan=1.0), 1.0)
        radius = np.clip(fwhm, 1, 25) * (1.0 + np.log10(rel)) / stride
        centres = np.rint(cat.xy / stride).astype(int)
        for (x, y), r in zip(centres, np.ceil(radius).astype(int)):
            cv2.circle(mask, (int(x), int(y)), int(r), 1, -1)
    values = sample[(mask == 0) & np.isfinite(sample)]
    if values.size < 100:
        return prep.background.global_rms
    sigma = median_sigma(values)[1]
    return sigma if sigma > 0 else prep.background.global_rms
