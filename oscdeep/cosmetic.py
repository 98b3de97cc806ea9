"""Hot and cold pixels: finding them in master darks and flats, and repairing them in frames.

Detection compares each pixel with the median of its 8 nearest same-colour neighbours (in
its own CFA site plane, so within 2 mosaic pixels), which follows vignetting, amp glow and
gradients, and thresholds the excess at ``sigma`` robust standard deviations (1.4826 MAD)
measured per CFA site, so a channel with more noise does not hide defects in a quieter one.

Repair replaces each bad pixel by the median of its good same-colour neighbours: for Bayer,
the 8 pixels two steps away (plus the 4 diagonal greens for a green site); for mono, the 8
adjacent pixels. It is vectorised over pixels (no Python loop per pixel).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from oscdeep.cfa import check_pattern, is_green, site_planes
from oscdeep.robust import median_sigma

_MAX_SAMPLES = 1 << 20  # robust statistics use at most ~this many values per site

_RING2 = ((-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 2), (2, -2), (2, 0), (2, 2))
_DIAGONAL1 = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_RING1 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class BadPixelMap(NamedTuple):
    """Union of hot (from the dark) and cold (from the flat) pixels."""

    mask: np.ndarray
    n_hot: int
    n_cold: int

    @property
    def count(self) -> int:
        """Number of bad pixels (hot and cold may overlap, so not always n_hot + n_cold)."""
        return int(np.count_nonzero(self.mask))


# --- robust statistics ----------------------------------------------------------------------

def subsample(values: np.ndarray, limit: int = _MAX_SAMPLES) -> np.ndarray:
    """A flat sample of at most ~``limit`` values, taking every n-th row (and column)."""
    if values.size <= limit:
        return values.ravel()
    step = int(np.ceil(np.sqrt(values.size / limit)))
    if values.ndim == 2:
        return values[::step, ::step].ravel()
    return values.ravel()[:: step * step]


def sampled_median_sigma(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation of (a subsample of) finite ``values``."""
    return median_sigma(subsample(values))


def _median3(plane: np.ndarray) -> np.ndarray:
    """3x3 median of a (site) plane, itself included, with mirrored borders (float32)."""
    padded = cv2.copyMakeBorder(np.ascontiguousarray(plane, dtype=np.float32), 1, 1, 1, 1,
                                cv2.BORDER_REFLECT_101)
    return cv2.medianBlur(padded, 3)[1:-1, 1:-1]


def _neighbour_rank_sample(plane: np.ndarray, rank: int, limit: int = 1 << 16
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Values on a regular grid of inner pixels and the ``rank``-th smallest of their 8
    neighbours."""
    h, w = plane.shape
    step = max(1, int(np.ceil(np.sqrt(max(h - 2, 1) * max(w - 2, 1) / limit))))
    yy, xx = np.mgrid[1:h - 1:step, 1:w - 1:step]
    y, x = yy.ravel(), xx.ravel()
    nb = neighbour_values(plane, y, x, pattern=None)
    return plane[y, x], np.partition(nb, rank, axis=1)[:, rank]


def _outliers(image: np.ndarray, pattern: str | None, sigma: float, *, high: bool,
              relative: bool, min_excess: float = 0.0) -> np.ndarray:
    """Pixels standing out from their 8 same-colour neighbours by more than ``sigma`` robust
    sigmas of that excess, measured per CFA site. ``high``: brighter than the upper median of
    the neighbours (else darker than the lower median); ``relative``: the excess is a ratio
    (value / neighbours - 1) rather than a difference; it must also exceed ``min_excess``.

    OpenCV's fast 3x3 median includes the pixel itself, but for a pixel above the upper
    (below the lower) median of its 8 neighbours it *equals* that neighbour median, so the
    threshold test on it is exact. Its distribution, though, has a spike at 0 (the pixel is
    the median 1 time in 9) that would shrink the MAD, so the spread is measured on a
    subsample against the 8 neighbours alone.
    """
    mask = np.zeros(image.shape, dtype=bool)
    rank = 4 if high else 3
    for plane, out in zip(site_planes(image, pattern), site_planes(mask, pattern), strict=True):
        plane = np.ascontiguousarray(plane, dtype=np.float32)
        if min(plane.shape) < 3:
            continue
        ref = _median3(plane)
        value, ref_sample = _neighbour_rank_sample(plane, rank)
        with np.errstate(divide="ignore", invalid="ignore"):
            if relative:
                excess = np.where(ref > 0, plane / ref - 1.0, -np.inf)
                sample = np.where(ref_sample > 0, value / ref_sample - 1.0, np.nan)
            else:
                excess, sample = plane - ref, value - ref_sample
            med, s = sampled_median_sigma(sample)
            s = max(s, 1e-6 * max(1.0, abs(med)))  # noiseless data: any step stands out
            out[...] = excess > max(med + sigma * s, min_excess) if high else \
                excess < min(med - sigma * s, -min_excess)
    return mask


def find_hot_pixels(master_dark: np.ndarray, *, pattern: str | None,
                    sigma: float = 5.0) -> np.ndarray:
    """(H, W) bool map of the hot pixels of a master dark (with or without its bias): pixels
    brighter than their same-colour neighbours by more than ``sigma`` robust sigmas of that
    excess."""
    check_pattern(pattern)
    return _outliers(np.asarray(master_dark), pattern, sigma, high=True, relative=False)


def find_cold_pixels(master_flat: np.ndarray, *, pattern: str | None, sigma: float = 5.0,
                     min_depth: float = 0.1) -> np.ndarray:
    """(H, W) bool map of the cold or dead pixels of a flat (raw or normalised): response
    below the same-colour neighbours by more than ``sigma`` robust sigmas *and* by more than
    ``min_depth`` (a fraction). The second test keeps ordinary pixel-to-pixel response
    differences, which flat division corrects, out of the map even in a very clean flat.
    Non-finite and non-positive values are always cold."""
    check_pattern(pattern)
    flat = np.asarray(master_flat, dtype=np.float32)
    mask = _outliers(flat, pattern, sigma, high=False, relative=True, min_excess=min_depth)
    mask |= ~np.isfinite(flat) | (flat <= 0)
    return mask


def bad_pixel_map(master_dark: np.ndarray | None, master_flat: np.ndarray | None, *,
                  pattern: str | None, hot_sigma: float = 5.0, cold_sigma: float = 5.0,
                  cold_min_depth: float = 0.1) -> BadPixelMap:
    """Hot pixels of ``master_dark`` OR cold pixels of ``master_flat`` (either may be None)."""
    if master_dark is None and master_flat is None:
        raise ValueError("bad_pixel_map needs a master dark, a master flat or both")
    first = master_dark if master_dark is not None else master_flat
    shape = np.shape(first)
    mask = np.zeros(shape, dtype=bool)
    n_hot = n_cold = 0
    if master_dark is not None:
        hot = find_hot_pixels(master_dark, pattern=pattern, sigma=hot_sigma)
        mask |= hot
        n_hot = int(np.count_nonzero(hot))
    if master_flat is not None:
        if master_flat.shape != shape:
            raise ValueError(f"master flat {master_flat.shape} and dark {shape} differ in shape")
        cold = find_cold_pixels(master_flat, pattern=pattern, sigma=cold_sigma,
                                min_depth=cold_min_depth)
        mask |= cold
        n_cold = int(np.count_nonzero(cold))
    return BadPixelMap(mask, n_hot, n_cold)


# --- repair ---------------------------------------------------------------------------------

def neighbour_values(image: np.ndarray, y: np.ndarray, x: np.ndarray, *, pattern: str | None,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """(n, m) values of the same-colour neighbours of pixels (y, x); NaN where a neighbour is
    outside the frame or ``exclude`` is set. m = 12 for Bayer (the 4 diagonal slots are NaN
    for red and blue pixels), 8 for mono."""
    check_pattern(pattern)
    h, w = image.shape
    y, x = np.asarray(y, dtype=np.intp), np.asarray(x, dtype=np.intp)
    offsets = _RING1 if pattern is None else _RING2 + _DIAGONAL1
    out = np.full((y.size, len(offsets)), np.nan, dtype=np.float32)
    green = is_green(pattern, y, x) if pattern is not None else None
    for j, (dy, dx) in enumerate(offsets):
        ny, nx = y + dy, x + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        if green is not None and j >= len(_RING2):
            ok &= green
        ny, nx = ny[ok], nx[ok]
        if exclude is not None:
            keep = ~exclude[ny, nx]
            ok[ok] = keep
            ny, nx = ny[keep], nx[keep]
        out[ok, j] = image[ny, nx]
    return out


def nan_median_rows(values: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN where a row has none), without Python loops."""
    v = np.sort(values, axis=1)  # NaN sort last
    n = np.count_nonzero(np.isfinite(v), axis=1)
    lo = np.maximum((n - 1) // 2, 0)[:, None]
    hi = np.maximum(n // 2, 0)[:, None]
    med = 0.5 * (np.take_along_axis(v, lo, 1) + np.take_along_axis(v, hi, 1))[:, 0]
    med[n == 0] = np.nan
    return med


def cosmetic_correct(mosaic: np.ndarray, bad_pixels: np.ndarray, *, pattern: str | None,
                     inplace: bool = False, max_passes: int = 4) -> np.ndarray:
    """Replace bad pixels by the median of their good same-colour neighbours.

    ``bad_pixels`` is an (H, W) bool map or a 1-D array of flat pixel indices. Pixels whose
    neighbours are all bad (clusters) are filled in further passes from the pixels repaired
    before them; after ``max_passes`` any left keep their value. Returns float32 (the input
    itself when ``inplace`` and it is float32).
    """
    img = np.asarray(mosaic)
    if img.ndim != 2:
        raise ValueError(f"cosmetic correction needs an (H, W) frame, got shape {img.shape}")
    if not inplace or img.dtype != np.float32:
        img = img.astype(np.float32, copy=True)
    bad = np.asarray(bad_pixels)
    if bad.dtype == bool:
        if bad.shape != img.shape:
            raise ValueError(f"bad-pixel map {bad.shape} and frame {img.shape} differ in shape")
        index = np.flatnonzero(bad)
        exclude = bad
    else:
        index = bad.astype(np.intp).ravel()
        exclude = np.zeros(img.shape, dtype=bool)
        exclude.ravel()[index] = True
    if index.size == 0:
        return img
    exclude = exclude.copy()
    y, x = np.divmod(index, img.shape[1])
    for _ in range(max_passes):
        med = nan_median_rows(neighbour_values(img, y, x, pattern=pattern, exclude=exclude))
        done = np.isfinite(med)
        img[y[done], x[done]] = med[done]
        exclude[y[done], x[done]] = False
        y, x = y[~done], x[~done]
        if y.size == 0:
            break
    return img
