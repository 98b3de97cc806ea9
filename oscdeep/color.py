"""Colour calibration of a linear RGB stack: a neutral sky and white-balanced stars.

Works on the linear ``(H, W, 3)`` float32 stack after gradient removal (NaN = no data: ignored
by every statistic and still NaN in the result). Two steps, each optional:

1. Background neutralisation. The sky level of each channel is a sigma-clipped median of sky
   pixels: the image is cut into tiles (about 8 along the short side) and the darkest quarter
   of them by median luminance is kept, so a nebula or galaxy filling part of the frame is
   left out; in those tiles pixels whose luminance is more than 3 sigma above the sky, and a
   4 px margin around them (star wings), are dropped, as are pixels of an optional ``mask``
   (True = not sky). Each channel then gets an offset that brings its sky to the *mean* of
   the three sky levels: the sky turns grey at its former overall brightness, and stays
   positive whenever the three levels are.
2. Star white balance. Stars are found on the luminance with
   :func:`oscdeep.stars.detect_stars` and measured in each channel by aperture photometry
   (radius 1.5 FWHM, all pixels whose centre lies inside) minus the sigma-clipped median of
   a local annulus (2.5-4 FWHM): a star on a coloured nebula is measured against that
   nebula, and a neighbour in the annulus is clipped away. Stars are dropped when saturated
   in any channel (a pixel at ``saturation``; without it, within 1 % of the channel's
   maximum when 8 or more pixels are that close to it; or a flat top: more aperture
   pixels within 1 % of the star's peak than an unclipped star has), when their annulus
   leaves the image or their aperture holds NaN, when a channel's flux is not positive,
   and when the signal-to-noise of their R+G+B flux is below ``min_snr``
   (background-limited: annulus noise over the aperture and annulus areas). That cut is
   made again with the channels balanced by the factors found, twice: judged in camera
   colours it keeps more stars of the colour the camera is most sensitive to, which
   biased the result by 1.5-2 % on the test fields. Each star's colour is the pair
   ``ln(R/G), ln(B/G)``; the reference colour is

   * ``average``: the mean of those indices over all stars (the average star becomes
     white), weighted by ``1 / (measurement variance + the stars' own colour scatter)``
     and clipped at 3 sigma, iterated;
   * ``solar``: the same mean over the third of the stars closest (in that plane) to the
     median colour. This approximates a G2V white point without a catalogue: it assumes
     the typical star of the field is roughly solar-type in colour, which holds only
     loosely (a field of reddened or of young blue stars shifts it), but it is insensitive
     to the tails (red giants, hot blue stars) that pull an average.

   The factors ``exp(-ln(R/G)), 1, exp(-ln(B/G))`` (green fixed at 1) are applied around the
   neutral sky level, ``out = sky + factor * (in - sky)``, so the sky stays neutral. With
   fewer than ``min_stars`` usable stars the factors stay 1 (the star count is reported).

:func:`boost_saturation` scales the chroma of a stretched display image around its
luminance. Nothing here prints, reads files or touches the database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from oscdeep.errors import ConfigError
from oscdeep.robust import MAD_TO_SIGMA, median_sigma

__all__ = [
    "COLOR_SPECS", "REFERENCES", "ColorOptions", "ColorResult", "StarColors", "boost_saturation",
    "calibrate_color", "estimate_sky_levels", "measure_star_colors", "neutralize_background",
    "parse_color_spec", "star_white_balance", "white_balance_factors",
]

REFERENCES: tuple[str, ...] = ("average", "solar")
"""White references of the star white balance."""
COLOR_SPECS: tuple[str, ...] = ("auto", "none", "average", "solar", "background")
"""Spellings of :func:`parse_color_spec`."""

LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
"""Rec. 709 luminance weights used by :func:`boost_saturation`."""

_TILES = 8  # tiles along the short side of the image for the sky search
_DARK_FRACTION = 0.25  # darkest fraction of the tiles taken as sky
_MIN_TILES = 4
_STAR_SIGMA = 3.0  # luminance above the sky by this many sigma: star or target
_STAR_MARGIN = 4  # px dropped around such pixels
_MAX_SKY_SAMPLES = 400_000
_CLIP_SIGMA = 3.0
_APERTURE_PER_FWHM = 1.5
_ANNULUS_PER_FWHM = (2.5, 4.0)
_FLAT_TOP = 0.01
_MIN_CLIPPED = 8  # pixels near the channel maximum that show clipping
_SURE_SNR = 20.0  # a flat top counts only on a peak this many sigma above the sky
_SOLAR_FRACTION = 1.0 / 3.0
_SELECTION_PASSES = 3  # camera space, then twice in balanced space
_MIN_SOLAR_STARS = 5


# --- options and results ----------------------------------------------------------------------

@dataclass(frozen=True)
class ColorOptions:
    """What :func:`calibrate_color` does.

    ``neutralize``: make the sky grey; ``white_balance``: scale the channels so the reference
    star colour (``reference``, one of ``REFERENCES``) is white; stars need a signal-to-noise
    of ``min_snr`` on their balanced R+G+B flux and at least ``min_stars`` of them are
    needed; ``saturation`` is the level (image units) where pixels clip, None to find
    clipped stars from the data.
    """

    neutralize: bool = True
    white_balance: bool = True
    reference: str = "average"
    min_stars: int = 10
    min_snr: float = 20.0
    saturation: float | None = None

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ConfigError(f"unknown white reference {self.reference!r}: "
                              f"use one of {', '.join(REFERENCES)}")
        if self.min_stars < 1:
            raise ConfigError("min_stars must be at least 1")
        if not self.min_snr >= 0:
            raise ConfigError("min_snr must not be negative")


@dataclass(frozen=True, eq=False)
class ColorResult:
    """The calibrated image and what was done: ``out = sky + offsets + factors * (in - sky)``.

    ``sky_levels`` are the measured sky levels of the input (R, G, B), ``offsets`` what
    neutralisation added (zeros without it), ``factors`` the white-balance gains (ones
    without it or with too few stars), ``n_stars`` the stars the factors come from (or the
    too few that were found), ``reference`` the white reference (None without white balance).
    """

    image: np.ndarray
    sky_levels: np.ndarray
    offsets: np.ndarray
    factors: np.ndarray
    n_stars: int
    reference: str | None

    def describe(self) -> str:
        """One line for logs and FITS HISTORY cards."""
        rgb = "/".join(f"{v:.4g}" for v in self.sky_levels)
        parts = [f"sky R/G/B {rgb}"]
        if np.any(self.offsets != 0):
            parts.append("offsets " + "/".join(f"{v:+.4g}" for v in self.offsets))
        if self.reference is not None:
            parts.append(f"white balance {self.reference} from {self.n_stars} stars: "
                         + "/".join(f"{v:.4f}" for v in self.factors))
        return "colour: " + ", ".join(parts)


@dataclass(frozen=True, eq=False)
class StarColors:
    """Stars measured for the white balance, brightest (R+G+B flux) first.

    ``flux`` and ``error`` are (N, 3) float64 background-subtracted aperture fluxes in R, G, B
    and their background-limited errors; ``fwhm`` the stars' median FWHM (px); ``rejected``
    counts dropped detections by reason (``saturated``, ``edge``, plus the detector's own).
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    fwhm: float
    rejected: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def snr(self, factors: np.ndarray | None = None) -> np.ndarray:
        """(N,) signal-to-noise of the star's R+G+B flux after scaling the channels by
        ``factors`` (default 1)."""
        f = np.ones(3) if factors is None else np.asarray(factors, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.flux @ f) / np.sqrt((self.error**2) @ (f * f))

    @property
    def color_indices(self) -> np.ndarray:
        """(N, 2) ``ln(R/G), ln(B/G)`` (NaN where a flux is not positive)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.flux[:, [0, 2]] / self.flux[:, [1]]
            return np.where((self.flux > 0).all(axis=1)[:, None], np.log(ratio), np.nan)


def parse_color_spec(text: str) -> ColorOptions | None:
    """``auto`` (= ``average``): neutral sky and white balance on the average star;
    ``solar``: the same on near-median (roughly solar) stars; ``background``: neutral sky
    only; ``none``: no colour calibration (None)."""
    key = str(text).strip().lower()
    if key == "none":
        return None
    if key in ("auto", "average"):
        return ColorOptions(reference="average")
    if key == "solar":
        return ColorOptions(reference="solar")
    if key == "background":
        return ColorOptions(white_balance=False)
    raise ConfigError(f"unknown colour calibration {text!r}: use one of {', '.join(COLOR_SPECS)}")


# --- helpers ----------------------------------------------------------------------------------

def _native_rgb(image: np.ndarray) -> np.ndarray:
    """C-contiguous native float32 (H, W, 3) (sep and OpenCV misread anything else)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"colour calibration needs an (H, W, 3) image, got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.dtype(np.float32).newbyteorder("="))


def _luminance(img: np.ndarray) -> np.ndarray:
    """Mean of the three channels; NaN where any is NaN."""
    return (img.sum(axis=2, dtype=np.float32) / np.float32(3)).astype(np.float32)


def _clipped_median(values: np.ndarray, sigma: float = _CLIP_SIGMA, iters: int = 10) -> float:
    """Median after iterative clipping at ``sigma`` robust (MAD) standard deviations."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan
    med, spread = median_sigma(v)
    for _ in range(iters):
        if spread == 0:
            break
        keep = np.abs(v - med) <= sigma * spread
        if keep.all():
            break
        v = v[keep]
        med, spread = median_sigma(v)
    return med


# --- background -------------------------------------------------------------------------------

def _dark_tiles(lum: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Pixels of the darkest tiles (by median luminance) of a grid over the image."""
    h, w = lum.shape
    size = max(16, min(h, w) // _TILES)
    boxes, medians = [], []
    for y0 in range(0, h, size):
        for x0 in range(0, w, size):
            tile = (slice(y0, min(y0 + size, h)), slice(x0, min(x0 + size, w)))
            sub_ok = usable[tile][::2, ::2]
            if sub_ok.sum() < 0.25 * sub_ok.size:
                continue
            boxes.append(tile)
            medians.append(float(np.median(lum[tile][::2, ::2][sub_ok])))
    chosen = np.zeros((h, w), bool)
    if not boxes:
        return chosen
    count = max(min(_MIN_TILES, len(boxes)), math.ceil(_DARK_FRACTION * len(boxes)))
    for i in np.argsort(np.asarray(medians), kind="stable")[:count]:
        chosen[boxes[i]] = True
    return chosen


def estimate_sky_levels(image: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
    """(3,) float64 sky level of R, G, B: a sigma-clipped median of the star-free pixels of
    the darkest tiles (see the module notes). ``mask`` (H, W), True = not sky, is left out.
    NaN when no pixel is usable."""
    img = _native_rgb(image)
    lum = _luminance(img)
    usable = np.isfinite(lum)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != lum.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the image {lum.shape}")
        usable &= ~mask
    if not usable.any():
        return np.full(3, np.nan)
    dark = _dark_tiles(lum, usable) & usable
    if not dark.any():
        dark = usable
    values = lum[dark]
    centre, spread = median_sigma(values)
    bright = (np.nan_to_num(lum, nan=-np.inf) > centre + _STAR_SIGMA * spread).astype(np.uint8)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _STAR_MARGIN + 1,) * 2)
    sky = dark & (cv2.dilate(bright, disc) == 0)
    if sky.sum() < 100:
        sky = dark
    index = np.flatnonzero(sky)
    if index.size > _MAX_SKY_SAMPLES:
        index = index[:: math.ceil(index.size / _MAX_SKY_SAMPLES)]
    pixels = img.reshape(-1, 3)[index]
    return np.array([_clipped_median(pixels[:, c]) for c in range(3)])


def neutralize_background(image: np.ndarray, *, mask: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add per-channel offsets so the sky of R, G and B sits at the mean of their levels.

    Returns ``(image, sky_levels, offsets)``; without a usable sky pixel the image comes back
    unchanged with NaN levels and zero offsets.
    """
    img = _native_rgb(image)
    sky = estimate_sky_levels(img, mask=mask)
    if not np.isfinite(sky).all():
        return img.copy(), sky, np.zeros(3)
    offsets = sky.mean() - sky
    return (img + offsets.astype(np.float32)).astype(np.float32), sky, offsets


# --- stars ------------------------------------------------------------------------------------

def _clip_levels(img: np.ndarray, saturation: float | None) -> np.ndarray:
    """Per channel, where pixels clip: ``saturation``; else 1 % below the channel maximum
    when at least 8 pixels lie that close to it (clipped cores, whose values a stack spreads
    a little; an unclipped star has at most 4 pixels within 1 % of its peak, so it takes
    several stars within 1 % of the brightest one to mimic this); else infinity."""
    if saturation is not None:
        return np.full(3, float(saturation))
    levels = np.full(3, np.inf)
    for c in range(3):
        top = float(np.nanmax(img[..., c])) if np.isfinite(img[..., c]).any() else math.nan
        if math.isfinite(top) and top > 0:
            level = (1.0 - _FLAT_TOP) * top
            if np.count_nonzero(img[..., c] >= level) >= _MIN_CLIPPED:
                levels[c] = level
    return levels


def measure_star_colors(image: np.ndarray, *, saturation: float | None = None,
                        threshold: float = 5.0, max_stars: int = 3000) -> StarColors:
    """Detect stars on the luminance and measure their R, G, B fluxes (see the module notes).

    ``saturation`` (image units) is where pixels clip, None to find clipped stars from the
    data; ``threshold`` is the detection threshold in noise units. Saturated stars and stars
    whose annulus leaves the image or whose aperture holds NaN are dropped; of the others at
    most ``max_stars`` with the largest R+G+B flux are returned (no signal-to-noise cut).
    """
    from oscdeep.stars import detect_stars

    img = _native_rgb(image)
    h, w, _ = img.shape
    cat = detect_stars(_luminance(img), threshold=threshold, fit_stars=30)
    rejected = {k: int(v) for k, v in cat.rejected.items() if v}
    if len(cat) == 0 or not np.isfinite(cat["fwhm"]).any():
        return StarColors(np.zeros(0), np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)),
                          math.nan, rejected)
    fwhm = float(np.nanmedian(cat["fwhm"]))
    r_ap = max(2.5, _APERTURE_PER_FWHM * fwhm)
    r_in = max(r_ap + 2.0, _ANNULUS_PER_FWHM[0] * fwhm)
    r_out = max(r_in + 4.0, _ANNULUS_PER_FWHM[1] * fwhm)
    radius = math.ceil(r_out)

    x, y = cat["x"].astype(np.float64), cat["y"].astype(np.float64)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    inside = (ix >= radius) & (iy >= radius) & (ix < w - radius) & (iy < h - radius)
    x, y, ix, iy = x[inside], y[inside], ix[inside], iy[inside]

    # Aperture: pixels whose centre lies within r_ap of the star centre. Annulus: a fixed
    # ring of offsets around the nearest pixel (half a pixel does not matter there).
    box = math.ceil(r_ap + 0.5)
    ay, ax = (a.ravel() for a in np.mgrid[-box:box + 1, -box:box + 1])
    ry, rx = (a.ravel() for a in np.mgrid[-radius:radius + 1, -radius:radius + 1])
    ring_r2 = rx * rx + ry * ry
    in_ring = (ring_r2 >= r_in * r_in) & (ring_r2 <= r_out * r_out)
    ry, rx = ry[in_ring], rx[in_ring]

    ring = img[iy[:, None] + ry, ix[:, None] + rx].astype(np.float64)  # (N, R, 3)
    bkg, noise, n_ann = _clipped_level(ring)
    core = img[iy[:, None] + ay, ix[:, None] + ax].astype(np.float64)  # (N, A, 3)
    d2 = (ax - (x - ix)[:, None]) ** 2 + (ay - (y - iy)[:, None]) ** 2
    aperture = (d2 <= r_ap * r_ap)[..., None]
    above = core - bkg[:, None, :]
    flux = np.where(aperture, above, 0.0).sum(axis=1)
    n_ap = aperture[..., 0].sum(axis=1).astype(np.float64)
    error = noise * np.sqrt(n_ap + n_ap**2 * (math.pi / 2) / np.maximum(n_ann, 1))[:, None]
    edge = ~np.isfinite(flux).all(axis=1) | (n_ann < 0.5 * len(rx))

    with np.errstate(invalid="ignore"):
        raw_top = np.max(np.where(aperture, core, -np.inf), axis=1)
        top = np.max(np.where(aperture, above, -np.inf), axis=1)
        near_top = np.sum(aperture & (above >= (1 - _FLAT_TOP) * top[:, None, :]), axis=1)
        flat = (near_top >= 5 + 0.05 * (fwhm / 2) ** 2) & (top > _SURE_SNR * noise)
        sat = np.any((raw_top >= _clip_levels(img, saturation)[None, :]) | flat, axis=1)
    sat &= ~edge
    keep = ~(edge | sat) & (flux.sum(axis=1) > 0)

    rejected["edge"] = rejected.get("edge", 0) + int((~inside).sum() + edge.sum())
    rejected["saturated"] = rejected.get("saturated", 0) + int(sat.sum())
    order = np.argsort(-flux[keep].sum(axis=1), kind="stable")[:max_stars]
    return StarColors(x[keep][order], y[keep][order], flux[keep][order], error[keep][order],
                      fwhm, rejected)


def _sorted_median(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Median of ``s[..., lo:hi, ...]`` along axis 1 of a sorted (N, M, C) array; NaN where
    the range is empty."""
    a = np.clip((lo + hi - 1) // 2, 0, s.shape[1] - 1)
    b = np.clip((lo + hi) // 2, 0, s.shape[1] - 1)
    med = 0.5 * (np.take_along_axis(s, a[:, None], 1)[:, 0] +
                 np.take_along_axis(s, b[:, None], 1)[:, 0])
    return np.where(hi > lo, med, np.nan)


def _clipped_level(ring: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per star and channel of (N, M, 3) annulus pixels (NaN = no data): the median after one
    clip at 3 robust sigma (neighbour stars out), the robust sigma of the kept pixels, and
    the number of pixels kept in green."""
    s = np.sort(ring, axis=1)  # NaN sorts last
    zero = np.zeros(s.shape[::2], np.int64)
    med = _sorted_median(s, zero, np.isfinite(s).sum(axis=1))
    with np.errstate(invalid="ignore"):
        dev = np.sort(np.abs(s - med[:, None, :]), axis=1)
        sigma = MAD_TO_SIGMA * _sorted_median(dev, zero, np.isfinite(dev).sum(axis=1))
        lo = np.sum(s < (med - _CLIP_SIGMA * sigma)[:, None, :], axis=1)
        hi = np.sum(s <= (med + _CLIP_SIGMA * sigma)[:, None, :], axis=1)
    level = _sorted_median(s, lo, hi)
    rank = np.arange(s.shape[1])[None, :, None]
    kept = (rank >= lo[:, None, :]) & (rank < hi[:, None, :])
    with np.errstate(invalid="ignore"):
        dev = np.sort(np.where(kept, np.abs(s - level[:, None, :]), np.nan), axis=1)
        sigma = MAD_TO_SIGMA * _sorted_median(dev, zero, hi - lo)
    return level, sigma, (hi - lo)[:, 1]


def _weighted_clipped_mean(values: np.ndarray, variance: np.ndarray,
                           sigma: float = _CLIP_SIGMA, iters: int = 10) -> float:
    """Mean of ``values`` weighted by ``1 / (variance + s^2)``, where ``s^2`` is the scatter
    the variances do not explain (the stars' own colours); values more than ``sigma`` of
    their expected scatter from the centre are clipped, until nothing changes."""
    keep = np.ones(values.size, bool)
    centre = float(np.median(values))
    for _ in range(iters):
        resid = values[keep] - centre
        scatter = (MAD_TO_SIGMA * float(np.median(np.abs(resid)))) ** 2
        intrinsic = max(scatter - float(np.median(variance[keep])), 0.0)
        total = np.maximum(variance + intrinsic, 1e-12)
        weights = 1.0 / total[keep]
        centre = float(np.sum(weights * values[keep]) / np.sum(weights))
        new = np.abs(values - centre) <= sigma * np.sqrt(total)
        if np.array_equal(new, keep) or new.sum() < 2:
            break
        keep = new
    return centre


def _reference_color(indices: np.ndarray, variance: np.ndarray, reference: str
                     ) -> tuple[np.ndarray, int]:
    """(2,) reference ``ln(R/G), ln(B/G)`` and the number of stars it comes from."""
    use = np.arange(len(indices))
    if reference == "solar":
        dist = np.hypot(*(indices - np.median(indices, axis=0)).T)
        count = min(len(indices),
                    max(_MIN_SOLAR_STARS, math.ceil(_SOLAR_FRACTION * len(indices))))
        use = np.argsort(dist, kind="stable")[:count]
    colour = np.array([_weighted_clipped_mean(indices[use, k], variance[use, k])
                       for k in range(2)])
    return colour, len(use)


def white_balance_factors(stars: StarColors, *, reference: str = "average",
                          min_snr: float = 20.0, min_stars: int = 10) -> tuple[np.ndarray, int]:
    """Factors (green = 1) making the reference colour of ``stars`` white, and the number of
    stars used: those with ``snr >= min_snr`` on their R+G+B flux *after* balancing (the
    selection is repeated with the factors found), so the camera's colour cast does not
    decide which stars take part. Fewer than ``min_stars``: factors 1."""
    if reference not in REFERENCES:
        raise ConfigError(f"unknown white reference {reference!r}: "
                          f"use one of {', '.join(REFERENCES)}")
    indices = stars.color_indices
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (stars.error / stars.flux) ** 2
    variance = rel[:, [0, 2]] + rel[:, [1]]
    factors, count = np.ones(3), 0
    for _ in range(_SELECTION_PASSES):
        with np.errstate(invalid="ignore"):
            use = (stars.snr(factors) >= min_snr) & np.isfinite(indices).all(axis=1)
        count = int(use.sum())
        if count < min_stars:
            return np.ones(3), count
        colour, count = _reference_color(indices[use], variance[use], reference)
        new = np.array([math.exp(-colour[0]), 1.0, math.exp(-colour[1])])
        if not np.isfinite(new).all():
            return np.ones(3), count
        factors = new
    return factors, count


def star_white_balance(image: np.ndarray, *, reference: str = "average",
                       saturation: float | None = None, min_snr: float = 20.0,
                       min_stars: int = 10) -> tuple[np.ndarray, int]:
    """(3,) channel factors (green = 1) that make the reference star colour white, and the
    number of stars they come from (:func:`measure_star_colors` then
    :func:`white_balance_factors`). With fewer than ``min_stars`` usable stars the factors
    are 1 and the count says how many were found."""
    if reference not in REFERENCES:  # before the expensive part
        raise ConfigError(f"unknown white reference {reference!r}: "
                          f"use one of {', '.join(REFERENCES)}")
    stars = measure_star_colors(image, saturation=saturation)
    return white_balance_factors(stars, reference=reference, min_snr=min_snr,
                                 min_stars=min_stars)


# --- the whole step ---------------------------------------------------------------------------

def calibrate_color(image: np.ndarray, options: ColorOptions = ColorOptions(), *,
                    mask: np.ndarray | None = None) -> ColorResult:
    """Neutralise the sky and white-balance the stars of a linear RGB stack (module notes).

    ``mask`` (H, W), True = not sky (target, stars), is left out of the sky estimate.
    """
    img = _native_rgb(image)
    sky = estimate_sky_levels(img, mask=mask)
    offsets = np.zeros(3)
    factors = np.ones(3)
    n_stars = 0
    reference = options.reference if options.white_balance else None
    if not np.isfinite(sky).all():  # nothing to measure: leave the image alone
        return ColorResult(img.copy(), sky, offsets, factors, 0, reference)
    if options.neutralize:
        offsets = sky.mean() - sky
    if options.white_balance:
        # Star fluxes are measured against local annuli, so offsets do not change them.
        factors, n_stars = star_white_balance(
            img, reference=options.reference, saturation=options.saturation,
            min_snr=options.min_snr, min_stars=options.min_stars)
    gain = factors.astype(np.float32)
    shift = (sky + offsets - factors * sky).astype(np.float32)
    out = img * gain + shift
    return ColorResult(out.astype(np.float32, copy=False), sky, offsets, factors, n_stars,
                       reference)


# --- display ----------------------------------------------------------------------------------

def boost_saturation(rgb01: np.ndarray, amount: float) -> np.ndarray:
    """Scale the chroma of a stretched (H, W, 3) image in [0, 1] by ``1 + amount`` around its
    Rec. 709 luminance, which is kept; per pixel the scale is lowered where a channel would
    leave [0, 1]. ``amount`` 0 returns a copy, -1 gives grey; NaN stays NaN."""
    if not amount >= -1.0:
        raise ConfigError(f"saturation amount {amount!r} must be at least -1")
    img = np.asarray(rgb01, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"saturation needs an (H, W, 3) image, got shape {img.shape}")
    if amount == 0:
        return img.copy()
    img = np.clip(img, 0.0, 1.0)
    luma = img @ LUMA_WEIGHTS
    chroma = img - luma[..., None]
    scale = np.full(luma.shape, 1.0 + amount, np.float32)
    if amount > 0:
        # The luminance-weighted chroma sums to 0, so one channel is above the luminance and
        # one below (or all equal): those two set how far the chroma can grow.
        c0, c1, c2 = chroma[..., 0], chroma[..., 1], chroma[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            up = (1.0 - luma) / np.maximum(np.maximum(c0, c1), c2)
            down = luma / -np.minimum(np.minimum(c0, c1), c2)
        room = np.fmin(np.where(up > 0, up, np.inf), np.where(down > 0, down, np.inf))
        scale = np.minimum(scale, np.maximum(room, np.float32(1.0)))
        scale[np.isnan(luma)] = np.nan
    chroma *= scale[..., None]
    chroma += luma[..., None]
    return np.clip(chroma, 0.0, 1.0, out=chroma)
