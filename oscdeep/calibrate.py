"""Applying master calibration frames to a CFA (or mono) mosaic: pure functions, float32.

    calibrated = (light - zero - k * thermal) / flat,  then cosmetic correction

* ``zero`` is the master bias when there is one. It already contains the camera's black
  level and any FITS pedestal (bias frames went through the same camera and writer), so
  those are then *not* subtracted again. Without a bias master the black level (camera raw)
  plus the pedestal (FITS) are subtracted instead.
* ``thermal`` is the dark signal alone: a master dark built from raw darks still holds the
  bias (``dark_includes_bias=True``, the default) and ``thermal = dark - bias``; a dark that
  was bias-subtracted when it was built (``dark_includes_bias=False``) is used as it is.
  A dark that holds the bias with no bias master can only be scaled through the black level
  and pedestal; with none of them it can only be subtracted whole (``k = 1``): then
  ``light - dark`` removes bias and dark current together.
* ``k`` scales the dark current, which grows in proportion to exposure: by default the
  exposure ratio (so a longer dark, the nearest longer one being the usual choice, serves a
  shorter light), a fixed number, or the value that minimises the noise of the result
  (:func:`optimize_dark_scale`), for darks taken at another temperature.
* ``flat`` is normalised to 1 in the centre of *each CFA site* (:func:`prepare_flat`), so
  dividing by it removes vignetting and dust but never changes the colour balance.

Hot and cold pixels (see :mod:`oscdeep.cosmetic`) are repaired from same-colour neighbours
after the arithmetic. Every result carries a :class:`CalibrationRecord` of what was applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple

import numpy as np

from oscdeep.cfa import check_pattern, site_planes
from oscdeep.cosmetic import (
    BadPixelMap,
    bad_pixel_map,
    cosmetic_correct,
    find_cold_pixels,
    find_hot_pixels,
    nan_median_rows,
    neighbour_values,
    sampled_median_sigma,
)
from oscdeep.errors import ConfigError

__all__ = [
    "BadPixelMap",
    "CalibratedFrame",
    "CalibrationMasters",
    "CalibrationRecord",
    "bad_pixel_map",
    "calibrate_light",
    "cosmetic_correct",
    "dark_scale_factor",
    "find_cold_pixels",
    "find_hot_pixels",
    "optimize_dark_scale",
    "pick_dark",
    "prepare_flat",
    "robust_stats",
    "scale_dark",
]

DarkScale = float | Literal["exposure", "optimize"] | None


def _float32(a: np.ndarray | None, name: str) -> np.ndarray | None:
    """Native-endian, C-contiguous float32 (FITS data may be big-endian)."""
    if a is None:
        return None
    out = np.ascontiguousarray(a, dtype=np.float32)
    if out.ndim != 2:
        raise ConfigError(f"master {name} must be a 2-D (H, W) frame, got shape {out.shape}")
    return out


# --- masters --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CalibrationMasters:
    """The masters for one camera set-up, each (H, W) or None.

    ``dark_exposure`` (s) is needed to scale the dark; ``dark_includes_bias`` says whether
    ``dark`` still holds the bias (see the module notes). ``flat`` is already prepared
    (:func:`prepare_flat`: 1 in the centre of each CFA site). ``bad_pixels`` is a bool map
    (:func:`oscdeep.cosmetic.bad_pixel_map`). ``ids`` names each master for provenance, e.g.
    ``{"bias": 12, "dark": 15}``; calibrated frames copy the ids of the masters they used.
    Arrays are converted to native float32 once, here.
    """

    bias: np.ndarray | None = None
    dark: np.ndarray | None = None
    dark_exposure: float | None = None
    dark_includes_bias: bool = True
    flat: np.ndarray | None = None
    bad_pixels: np.ndarray | None = None
    pattern: str | None = None
    ids: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_pattern(self.pattern)
        for name in ("bias", "dark", "flat"):
            object.__setattr__(self, name, _float32(getattr(self, name), name))
        if self.bad_pixels is not None:
            object.__setattr__(self, "bad_pixels", np.asarray(self.bad_pixels, dtype=bool))
        shapes = {n: a.shape for n in ("bias", "dark", "flat", "bad_pixels")
                  if (a := getattr(self, n)) is not None}
        if len(set(shapes.values())) > 1:
            raise ConfigError("master frames differ in size: "
                              + ", ".join(f"{n} {w}x{h}" for n, (h, w) in shapes.items()))
        if self.dark_exposure is not None and not self.dark_exposure > 0:
            raise ConfigError(f"master dark exposure must be positive, got {self.dark_exposure}")
        if self.flat is not None and not np.all(self.flat > 0):
            raise ConfigError("master flat has zero, negative or NaN pixels: prepare it with "
                              "prepare_flat, which floors them")

    @property
    def shape(self) -> tuple[int, int] | None:
        """(H, W) of the masters, None when there are none."""
        for a in (self.bias, self.dark, self.flat, self.bad_pixels):
            if a is not None:
                return a.shape  # type: ignore[return-value]
        return None

    @cached_property
    def thermal(self) -> np.ndarray | None:
        """The dark current alone (dark - bias), or None when it cannot be separated here."""
        if self.dark is None:
            return None
        if not self.dark_includes_bias:
            return self.dark
        if self.bias is None:
            return None
        return self.dark - self.bias

    @cached_property
    def dark_hot_pixels(self) -> np.ndarray | None:
        """Hot and warm pixels of the dark, the pixels that tell the dark scale (cached)."""
        if self.dark is None:
            return None
        return find_hot_pixels(self.dark, pattern=self.pattern)

    @cached_property
    def bad_index(self) -> np.ndarray:
        """Flat indices of the bad pixels (computed once for all lights)."""
        if self.bad_pixels is None:
            return np.empty(0, dtype=np.intp)
        return np.flatnonzero(self.bad_pixels)


class CalibrationRecord(NamedTuple):
    """What was applied to one frame: the provenance a calibrated frame carries.

    ``masters`` names the masters used, in order of application; ``master_ids`` their ids
    (from :attr:`CalibrationMasters.ids`). ``zero`` says what was subtracted as the zero
    level ('bias', 'black level', 'pedestal', 'black level + pedestal' or 'none') and
    ``zero_level`` its value when it was a constant. ``dark_scale`` is the factor k applied
    to the dark current and ``dark_scale_method`` how it was chosen ('exposure', 'optimize',
    'fixed', 'unscaled'). ``n_corrected`` pixels were repaired by cosmetic correction.
    """

    masters: tuple[str, ...]
    master_ids: dict[str, Any]
    zero: str
    zero_level: float | tuple[float, ...] | None
    dark_scale: float | None
    dark_scale_method: str | None
    n_corrected: int
    exposure: float | None

    def history(self) -> list[str]:
        """One line per step, for FITS HISTORY cards."""
        ids = self.master_ids
        tag = lambda n: f" (master {ids[n]})" if n in ids else ""  # noqa: E731
        lines = []
        if self.zero == "bias":
            lines.append(f"Calibrated: bias subtracted{tag('bias')}")
        elif self.zero != "none":
            lines.append(f"Calibrated: {self.zero} {self.zero_level} subtracted")
        if "dark" in self.masters:
            lines.append(f"Calibrated: dark{tag('dark')} scaled by {self.dark_scale:.5g} "
                         f"({self.dark_scale_method}) subtracted")
        if "flat" in self.masters:
            lines.append(f"Calibrated: divided by flat{tag('flat')}")
        if "bad_pixels" in self.masters:
            lines.append(f"Calibrated: {self.n_corrected} bad pixels replaced from same-colour "
                         f"neighbours{tag('bad_pixels')}")
        return lines


class CalibratedFrame(NamedTuple):
    """A calibrated (H, W) float32 frame and the record of how it was made."""

    image: np.ndarray
    record: CalibrationRecord


# --- flats ----------------------------------------------------------------------------------

def _central(plane: np.ndarray, fraction: float) -> np.ndarray:
    h, w = plane.shape
    dy, dx = int(h * (1 - fraction) / 2), int(w * (1 - fraction) / 2)
    return plane[dy:h - dy, dx:w - dx]


def _clipped_mean(values: np.ndarray, k: float = 5.0) -> float:
    """Mean of the finite values within ``k`` robust sigmas of their median.

    A mean rather than a median: the four CFA sites sample the vignetting half a pixel
    apart, and over a central box the mean's dependence on such a shift nearly cancels while
    the median's does not (0.3 % between sites for a steep fall-off).
    """
    med, sigma = sampled_median_sigma(values)
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    inside = v[np.abs(v - med) <= k * sigma] if sigma > 0 else v
    return float(inside.mean(dtype=np.float64))


def prepare_flat(master_flat: np.ndarray, *, pattern: str | None,
                 bias: np.ndarray | float | None = None,
                 darkflat: np.ndarray | None = None, center_fraction: float = 0.5,
                 floor: float = 0.05) -> np.ndarray:
    """Turn a master flat (as combined from raw flats) into a flat to divide by.

    The dark-flat is subtracted if given (it holds bias and the flats' dark current), else
    the bias (master or a constant black level). Each CFA site (the whole frame for mono) is
    then divided by its mean over the central ``center_fraction`` of the width and height
    (dead and hot pixels left out by a 5-sigma clip around the median), so every colour has
    level 1 in the centre. Pixels below ``floor`` (or not finite) would blow up on division:
    they are raised to ``floor``. Isolated ones are dead pixels, which
    :func:`find_cold_pixels` then flags (they sit far below their neighbours); a whole region
    without response (an obstruction) stays floored and is not a cosmetic defect.
    Returns the flat as (H, W) float32.
    """
    check_pattern(pattern)
    flat = np.array(master_flat, dtype=np.float32)  # a native copy we can modify
    if flat.ndim != 2:
        raise ConfigError(f"master flat must be (H, W), got shape {flat.shape}")
    zero = darkflat if darkflat is not None else bias
    if zero is not None:
        zero_arr = np.asarray(zero, dtype=np.float32)
        if zero_arr.ndim and zero_arr.shape != flat.shape:
            raise ConfigError(f"flat {flat.shape} and its bias/dark-flat {zero_arr.shape} "
                              "differ in size")
        flat -= zero_arr
    if not 0 < center_fraction <= 1:
        raise ConfigError(f"center_fraction must be in (0, 1], got {center_fraction}")
    for plane in site_planes(flat, pattern):
        level = _clipped_mean(_central(plane, center_fraction))
        if not level > 0:
            raise ConfigError(f"master flat has no signal above its bias (central level "
                              f"{level:.4g}): is it a flat, and the right bias or dark-flat?")
        plane /= np.float32(level)
    with np.errstate(invalid="ignore"):
        flat[~(flat >= floor)] = floor  # NaN too
    return flat


# --- darks ----------------------------------------------------------------------------------

def dark_scale_factor(light_exposure: float, dark_exposure: float) -> float:
    """Factor on the dark current for a light of another exposure: dark current grows in
    proportion to exposure time."""
    if not (light_exposure > 0 and dark_exposure > 0):
        raise ConfigError(f"cannot scale a {dark_exposure} s dark to a {light_exposure} s "
                          "light: exposures must be positive")
    return float(light_exposure) / float(dark_exposure)


def scale_dark(dark_minus_bias: np.ndarray, factor: float) -> np.ndarray:
    """The dark current ``dark_minus_bias`` scaled by ``factor``, as a new float32 array."""
    return np.multiply(dark_minus_bias, np.float32(factor), dtype=np.float32)


def pick_dark(dark_exposures: Sequence[float], light_exposure: float, *,
              rtol: float = 0.01) -> int:
    """Index of the dark to use for a light: one of the same exposure (within ``rtol``), else
    the nearest longer one (scaling down shrinks its noise), else the longest shorter one."""
    if len(dark_exposures) == 0:
        raise ValueError("no darks to choose from")
    t = np.asarray(dark_exposures, dtype=float)
    same = np.flatnonzero(np.abs(t - light_exposure) <= rtol * light_exposure)
    if same.size:
        return int(same[np.argmin(np.abs(t[same] - light_exposure))])
    longer = np.flatnonzero(t > light_exposure)
    if longer.size:
        return int(longer[np.argmin(t[longer])])
    return int(np.argmax(t))


def optimize_dark_scale(light: np.ndarray, bias: np.ndarray | float, dark_current: np.ndarray,
                        *, pattern: str | None, guess: float = 1.0,
                        bounds: tuple[float, float] | None = None, sigma: float = 5.0,
                        trim: float = 0.2, min_pixels: int = 50, max_pixels: int = 20000,
                        hot: np.ndarray | None = None) -> float:
    """The factor k for which ``light - bias - k * dark_current`` has the least noise.

    Noise is measured on a high-pass residual: each pixel minus the median of its
    same-colour neighbours, which removes sky, gradients, nebula and the uniform part of the
    dark current. Only the dark's structure can tell k, so the residual is taken at the
    pixels that stand out in the dark (its hot and warm pixels, found as in
    :func:`oscdeep.cosmetic.find_hot_pixels` at ``sigma``, or given as the bool map ``hot``
    to save that search when many lights share one dark; at most ``max_pixels`` of them,
    evenly spread over their brightness ranking); with fewer than ``min_pixels`` of those, at
    a regular grid of ordinary pixels instead (then the dark's pixel-to-pixel non-uniformity
    decides, as in Siril's ``-opt``). The noise is the RMS of the residuals with the largest
    ``trim`` fraction left out, so a star on a hot pixel does not pull k. It is minimised
    over ``bounds`` (default ``(0, 4 * guess)``) by a grid of 81 values and then Brent's
    bounded method between the grid neighbours of the best value.
    """
    check_pattern(pattern)
    light = np.asarray(light, dtype=np.float32)
    dark = np.asarray(dark_current, dtype=np.float32)
    if light.shape != dark.shape or light.ndim != 2:
        raise ConfigError(f"light {light.shape} and dark {dark.shape} differ in size")
    if hot is None:
        hot = find_hot_pixels(dark, pattern=pattern, sigma=sigma)
    elif hot.shape != dark.shape:
        raise ConfigError(f"hot-pixel map {hot.shape} and dark {dark.shape} differ in size")
    index = np.flatnonzero(hot)
    if index.size >= min_pixels:
        if index.size > max_pixels:
            order = index[np.argsort(dark.ravel()[index])]
            index = order[np.linspace(0, order.size - 1, max_pixels).astype(np.intp)]
    else:
        step = max(2, int(math.sqrt(light.size / max_pixels)) // 2 * 2 + 1)  # odd: all sites
        yy, xx = np.mgrid[2:light.shape[0] - 2:step, 2:light.shape[1] - 2:step]
        index = np.ravel_multi_index((yy.ravel(), xx.ravel()), light.shape)
        hot = None
    y, x = np.divmod(index, light.shape[1])
    signal = light - np.asarray(bias, dtype=np.float32)
    nb_signal = neighbour_values(signal, y, x, pattern=pattern, exclude=hot)
    nb_dark = neighbour_values(dark, y, x, pattern=pattern, exclude=hot)
    # High-pass residual at each pixel; the neighbours exclude the dark's other hot pixels,
    # so their medians hardly depend on k and the residual is linear in it: a - k d.
    a = signal[y, x] - nan_median_rows(nb_signal)
    d = dark[y, x] - nan_median_rows(nb_dark)
    ok = np.isfinite(a) & np.isfinite(d)
    a, d = a[ok].astype(np.float64), d[ok].astype(np.float64)
    if a.size == 0:
        return float(guess)
    keep = max(1, int(round(a.size * (1.0 - trim))))

    def noise(k: float) -> float:
        r2 = (a - k * d) ** 2
        return float(np.sqrt(np.partition(r2, keep - 1)[:keep].mean()))

    lo, hi = bounds if bounds is not None else (0.0, 4.0 * guess)
    grid = np.linspace(lo, hi, 81)
    i = int(np.argmin([noise(k) for k in grid]))
    a_lo, a_hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    from scipy.optimize import minimize_scalar  # imported here: it costs 0.3 s at start-up

    best = minimize_scalar(noise, bounds=(a_lo, a_hi), method="bounded",
                           options={"xatol": 1e-5 * max(hi - lo, 1e-12)})
    return float(best.x) if best.fun <= noise(grid[i]) else float(grid[i])


# --- lights ---------------------------------------------------------------------------------

def _zero_level(black_level: float | Sequence[float], pedestal: float, pattern: str | None
                ) -> tuple[float, ...]:
    """The constant zero level per CFA site (one value for mono)."""
    levels = np.atleast_1d(np.asarray(black_level, dtype=float)) + float(pedestal)
    n_sites = 1 if pattern is None else 4
    if levels.size == 1:
        return (float(levels[0]),) * n_sites
    if levels.size != n_sites:
        raise ConfigError(f"black level needs 1 or {n_sites} values (one per CFA site), "
                          f"got {levels.size}")
    return tuple(float(v) for v in levels)


def _subtract_sites(image: np.ndarray, levels: tuple[float, ...], pattern: str | None) -> None:
    if len(set(levels)) == 1:
        if levels[0]:
            image -= np.float32(levels[0])
        return
    for plane, level in zip(site_planes(image, pattern), levels, strict=True):
        plane -= np.float32(level)


def calibrate_light(raw: np.ndarray, masters: CalibrationMasters, *,
                    exposure: float | None = None, black_level: float | Sequence[float] = 0.0,
                    pedestal: float = 0.0, dark_scale: DarkScale = None,
                    cosmetic: bool = True) -> CalibratedFrame:
    """Calibrate one light (or any frame) mosaic: ``(raw - zero - k * thermal) / flat``.

    ``black_level`` (camera raw; one value or four in CFA site order) and ``pedestal`` (the
    amount a FITS writer added to the values, always a positive offset to subtract) are used
    only when there is no master bias, which already contains them. ``dark_scale``: None
    scales by the exposure ratio when both exposures are known (else 1); 'exposure' insists on
    it; 'optimize' minimises the noise (:func:`optimize_dark_scale`, starting from the
    exposure ratio); a number is used as given. ``cosmetic`` repairs the masters' bad pixels.
    Returns float32 (a new array; ``raw`` is not modified).
    """
    pattern = masters.pattern
    img = np.array(raw, dtype=np.float32)  # native-endian copy, also from big-endian FITS
    if img.ndim != 2:
        raise ConfigError(f"calibration needs an (H, W) mosaic, got shape {img.shape}")
    if masters.shape is not None and masters.shape != img.shape:
        (mh, mw), (h, w) = masters.shape, img.shape
        raise ConfigError(f"masters are {mw}x{mh} but the frame is {w}x{h}")
    used: list[str] = []
    zero_levels = _zero_level(black_level, pedestal, pattern)
    if masters.bias is not None:
        img -= masters.bias
        zero, zero_value = "bias", None
        used.append("bias")
    else:
        _subtract_sites(img, zero_levels, pattern)
        names = [n for n, v in (("black level", np.any(black_level)), ("pedestal", pedestal))
                 if v]
        zero = " + ".join(names) if names else "none"
        zero_value = (zero_levels[0] if len(set(zero_levels)) == 1 else zero_levels) \
            if names else None

    k = method = None
    if masters.dark is not None:
        thermal = masters.thermal
        if thermal is None:  # dark holds the bias and there is no bias master
            thermal = masters.dark.copy()
            _subtract_sites(thermal, zero_levels, pattern)
        k, method = _choose_dark_scale(img, thermal, masters, exposure, dark_scale)
        if masters.thermal is None and zero == "none" and abs(k - 1.0) > 1e-6:
            raise ConfigError(
                f"the master dark holds the bias, so scaling it by {k:.4g} needs a master "
                "bias or the camera black level: add a bias, or use a dark of the light's "
                "exposure")
        if k == 1.0:
            img -= thermal
        else:
            img -= scale_dark(thermal, k)
        used.append("dark")
    if masters.flat is not None:
        img /= masters.flat
        used.append("flat")
    n_corrected = 0
    if cosmetic and masters.bad_pixels is not None:
        n_corrected = int(masters.bad_index.size)
        cosmetic_correct(img, masters.bad_index, pattern=pattern, inplace=True)
        used.append("bad_pixels")
    record = CalibrationRecord(
        masters=tuple(used), master_ids={n: masters.ids[n] for n in used if n in masters.ids},
        zero=zero, zero_level=zero_value, dark_scale=k, dark_scale_method=method,
        n_corrected=n_corrected, exposure=exposure)
    return CalibratedFrame(img, record)


def _choose_dark_scale(signal: np.ndarray, thermal: np.ndarray, masters: CalibrationMasters,
                       exposure: float | None, dark_scale: DarkScale) -> tuple[float, str]:
    """The dark current factor k and how it was chosen; ``signal`` has its zero removed."""
    ratio = None
    if exposure is not None and masters.dark_exposure is not None:
        ratio = dark_scale_factor(exposure, masters.dark_exposure)
    if dark_scale is None:
        return (ratio, "exposure") if ratio is not None else (1.0, "unscaled")
    if dark_scale == "exposure":
        if ratio is None:
            raise ConfigError("dark scaling by exposure needs the light's and the master "
                              "dark's exposure times")
        return ratio, "exposure"
    if dark_scale == "optimize":
        k = optimize_dark_scale(signal, 0.0, thermal, pattern=masters.pattern,
                                guess=ratio if ratio is not None else 1.0,
                                hot=masters.dark_hot_pixels)
        return k, "optimize"
    if isinstance(dark_scale, str):
        raise ConfigError(f"dark_scale must be 'exposure', 'optimize', a number or None, "
                          f"not {dark_scale!r}")
    k = float(dark_scale)
    if not (math.isfinite(k) and k >= 0):
        raise ConfigError(f"dark scale factor must be a non-negative number, got {k}")
    return k, "fixed"


# --- statistics -----------------------------------------------------------------------------

def robust_stats(image: np.ndarray, *, pattern: str | None = None
                 ) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Median and MAD-based sigma (1.4826 MAD) of a frame's finite values.

    Floats for mono (``pattern=None``); with a pattern, float64 arrays of the 4 CFA sites in
    site order. Frames over ~1 Mpx per site are subsampled on a regular grid of rows and
    columns (every n-th), which keeps a 24 Mpx frame to tens of milliseconds.
    """
    check_pattern(pattern)
    img = np.asarray(image)
    stats = [sampled_median_sigma(p) for p in site_planes(img, pattern)]
    if pattern is None:
        return stats[0]
    arr = np.array(stats, dtype=float)
    return arr[:, 0], arr[:, 1]
