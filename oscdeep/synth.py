"""Seeded synthetic nights with a known truth: sky, optics and detector, one frame at a time.

Shared by the tests, ``oscdeep demo`` and the benchmarks. Pure numpy/OpenCV: arrays in and
out, no files (``oscdeep.pipeline.sample_night`` writes them).

Geometry: each light has a 3x3 matrix ``T`` (``FrameTruth.transform``) that maps a
reference-sky pixel ``(x, y, 1)`` to the frame pixel it lands on, with 0 at the first pixel
centre; ``FrameTruth.inverse`` maps frame pixels back to the sky. Light 0 has ``T = I``, so the
reference grid is light 0's pixel grid. A rotation by ``theta`` uses
``[[cos, -sin], [sin, cos]]`` on ``(x, y)`` about the image centre ``((W-1)/2, (H-1)/2)``.

Units: the sky is in electrons per second per pixel (RGB, before the flat field). Frames are
uint16 ADU, top-down, in the configured Bayer pattern, as a camera writes them::

    ADU = round(clip(Poisson(flat * sky * t + dark_rate(temp) * t) / e_per_adu
                     + bias + Normal(0, read_noise / e_per_adu), 0, white_level))

Everything is drawn from ``numpy.random.default_rng([seed, ...])`` streams keyed by what is
drawn, so a frame can be rendered alone and the same config always gives identical bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.special import erf

from oscdeep.cfa import cfa_channels, cfa_sites, mosaic  # noqa: F401  (mosaic is re-exported)
from oscdeep.errors import ConfigError
from oscdeep.types import BAYER_PATTERNS, FrameKind

ROW_ORDERS = ("TOP-DOWN", "BOTTOM-UP")
FILE_FORMATS = ("fits", "dng")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# rng stream keys: one independent stream per purpose (and per frame).
_SKY, _DETECTOR, _PLAN = 1, 2, 3
_FRAME_STREAM = {FrameKind.LIGHT: 10, FrameKind.DARK: 11, FrameKind.FLAT: 12, FrameKind.BIAS: 13}
# Below this many electrons the shot noise is drawn from a Poisson law; above it a normal law
# with the same variance is used (6x faster, and indistinguishable at these counts).
_POISSON_LIMIT = 30.0
_STAMP_RADII = (3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96)

# Star colours as R:G:B flux ratios: blue-white, white, yellow, orange-red.
_STAR_COLOURS = np.array([[0.75, 1.0, 1.30], [0.95, 1.0, 0.95], [1.20, 1.0, 0.70],
                          [1.60, 1.0, 0.45]])
_STAR_COLOUR_P = (0.15, 0.25, 0.35, 0.25)
_HALPHA_RGB = np.array([1.0, 0.15, 0.30], dtype=np.float32)
_OIII_RGB = np.array([0.08, 0.75, 0.65], dtype=np.float32)
_GRADIENT_WEIGHT = (1.0, 0.85, 0.45)  # light pollution gradient is strongest in red and green
_VIGNETTING_WEIGHT = (1.08, 1.0, 0.92)
_DUST_WEIGHT = (0.9, 1.0, 1.12)
_FLAT_COLOUR = (0.88, 1.0, 0.92)
_TRAIL_RGB = (1.0, 1.0, 0.85)
_SCALE_FRAME = 1.08


@dataclass(frozen=True)
class NightConfig:
    """Everything that shapes a synthetic night. Same config (and seed) -> identical frames.

    ``gain`` and ``offset`` are header values; the physics uses ``e_per_adu`` and
    ``bias_level``. Temperatures in degrees C, times in s.
    """

    width: int = 1200
    height: int = 800
    pattern: str = "RGGB"
    row_order: str = "TOP-DOWN"
    file_format: str = "fits"
    n_lights: int = 16
    n_darks: int = 10
    n_flats: int = 10
    n_bias: int = 10
    exposure: float = 120.0
    flat_exposure: float = 2.0
    gain: float = 100.0  # camera setting (FITS GAIN)
    offset: int = 50  # camera setting (FITS OFFSET)
    e_per_adu: float = 0.8  # electrons per ADU (FITS EGAIN)
    bias_level: float = 800.0  # ADU
    read_noise: float = 3.5  # e-
    white_level: int = 65535
    iso: int = 800  # DNG only
    temperature: float = -10.0
    set_temperature: float = -10.0
    dark_current: float = 0.02  # e-/s/px at dark_reference_temperature
    dark_reference_temperature: float = 0.0
    dark_doubling: float = 6.0  # C per doubling of the dark current
    hot_pixel_fraction: float = 5e-4
    cold_pixel_fraction: float = 5e-5
    bias_pattern: float = 0.5  # ADU rms of the fixed row and column offsets
    prnu: float = 0.004  # pixel-to-pixel response rms
    vignetting: float = 0.3  # flat fall-off at the corners (green)
    n_dust: int = 4
    flat_level: float = 0.45  # flats' green level as a fraction of white_level
    star_density: float = 600.0  # stars per megapixel
    psf: str = "gaussian"
    moffat_beta: float = 4.0
    sky_level: tuple[float, float, float] = (2.4, 3.0, 1.6)  # e-/s/px RGB
    gradient: float = 0.25  # light-pollution slope across the frame (red)
    nebula: float = 0.08  # nebula peak as a fraction of the sky level
    fwhm_range: tuple[float, float] = (2.5, 4.5)
    bad_fwhm_range: tuple[float, float] = (6.0, 8.0)
    n_bad_seeing: int = 2
    cloud: bool = True
    satellite: bool = True
    include_flip: bool = False
    include_scale: bool = False
    max_shift: float = 20.0  # px of dither
    max_rotation: float = 0.3  # degrees
    seed: int = 1
    target: str = "M42"
    instrument: str = "ZWO ASI2600MC Pro"
    telescope: str = "Synthetic 80/480 APO"
    camera_make: str = "oscdeep"
    camera_model: str = "Synthetic OSC"
    filter: str = "UV/IR"
    focal_length: float = 480.0
    pixel_size: float = 3.76
    start: dt.datetime = dt.datetime(2026, 11, 20, 21, 30, 0)  # UTC, naive
    frame_gap: float = 12.0  # s between lights (download, dither)

    def __post_init__(self) -> None:
        checks = {
            "width and height must be at least 32": min(self.width, self.height) >= 32,
            f"pattern must be one of {BAYER_PATTERNS}": self.pattern in BAYER_PATTERNS,
            f"row_order must be one of {ROW_ORDERS}": self.row_order in ROW_ORDERS,
            f"file_format must be one of {FILE_FORMATS}": self.file_format in FILE_FORMATS,
            "row_order BOTTOM-UP exists only for FITS":
                self.file_format == "fits" or self.row_order == "TOP-DOWN",
            "frame counts must not be negative":
                min(self.n_lights, self.n_darks, self.n_flats, self.n_bias) >= 0,
            "exposures and e_per_adu must be positive":
                min(self.exposure, self.flat_exposure, self.e_per_adu) > 0,
            "white_level must be in 1..65535": 0 < self.white_level <= 65535,
            "vignetting must be in [0, 0.9)": 0 <= self.vignetting < 0.9,
            "psf must be 'gaussian' or 'moffat' (beta > 1)":
                self.psf in ("gaussian", "moffat") and self.moffat_beta > 1,
            "FWHM ranges must be (low, high)":
                0 < self.fwhm_range[0] <= self.fwhm_range[1]
                and 0 < self.bad_fwhm_range[0] <= self.bad_fwhm_range[1],
            "hot/cold pixel fractions must be small":
                0 <= self.hot_pixel_fraction + self.cold_pixel_fraction < 0.1,
        }
        for message, ok in checks.items():
            if not ok:
                raise ConfigError(f"synthetic night: {message}")

    def dark_current_at(self, temperature: float) -> float:
        """Uniform dark current (e-/s/px) at ``temperature``: doubles every ``dark_doubling`` C."""
        return self.dark_current * 2.0 ** ((temperature - self.dark_reference_temperature)
                                           / self.dark_doubling)


@dataclass(frozen=True, eq=False)
class SkyTruth:
    """The true sky on a reference grid padded by ``pad`` px on every side, in e-/s/px.

    Stars are points at ``(x, y)`` (reference pixels) with total ``flux`` (N, 3) RGB e-/s;
    ``smooth`` and ``background`` are (3, H + 2 pad, W + 2 pad) planes: ``smooth`` is
    nebula + light-pollution background, ``background`` the light pollution alone.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    smooth: np.ndarray
    background: np.ndarray
    pad: int
    width: int
    height: int

    def _crop(self, planes: np.ndarray) -> np.ndarray:
        p = self.pad
        return np.ascontiguousarray(
            np.moveaxis(planes[:, p:p + self.height, p:p + self.width], 0, -1))

    @property
    def background_rgb(self) -> np.ndarray:
        """(H, W, 3) light-pollution background on the reference grid."""
        return self._crop(self.background)

    @property
    def nebula_rgb(self) -> np.ndarray:
        """(H, W, 3) nebula on the reference grid."""
        return self._crop(self.smooth - self.background)

    def rgb(self, fwhm: float, *, psf: str = "gaussian", beta: float = 4.0) -> np.ndarray:
        """(H, W, 3) whole sky on the reference grid, stars drawn with the given PSF."""
        out = self._crop(self.smooth)
        render_stars(out.shape, self.x, self.y, self.flux, fwhm, psf=psf, beta=beta,
                     cutoff=1e-3, out=out)
        return out


@dataclass(frozen=True, eq=False)
class DetectorTruth:
    """The camera: per-pixel response, bias and dark current, top-down (H, W) arrays.

    ``flat`` is each pixel's relative response for its own colour (vignetting, dust, PRNU,
    cold pixels; 1 at the optical centre). ``dark_rate`` (e-/s) holds the uniform dark current
    plus the hot pixels at ``temperature``. ``hot_pixels``/``cold_pixels`` are (n, 2) int
    (x, y); ``dust`` rows are (x, y, outer radius, depth in green).
    """

    channels: np.ndarray
    flat: np.ndarray
    bias: np.ndarray
    dark_rate: np.ndarray
    hot_pixels: np.ndarray
    hot_rates: np.ndarray
    cold_pixels: np.ndarray
    cold_response: np.ndarray
    dust: np.ndarray
    temperature: float
    doubling: float

    def dark_scale(self, temperature: float) -> float:
        """Factor turning ``dark_rate`` into the rate at ``temperature``."""
        return float(2.0 ** ((temperature - self.temperature) / self.doubling))

    @property
    def hot_mask(self) -> np.ndarray:
        """(H, W) bool map of the hot pixels."""
        mask = np.zeros(self.flat.shape, dtype=bool)
        mask[self.hot_pixels[:, 1], self.hot_pixels[:, 0]] = True
        return mask


@dataclass(frozen=True, eq=False)
class FrameTruth:
    """What was true when one frame was taken.

    For lights: ``transform`` (reference sky -> frame pixels, 3x3), the seeing ``fwhm`` (px),
    ``transmission`` (clouds < 1) and ``background_factor`` (clouds > 1), flags, and a
    satellite ``trail`` as two frame points (x0, y0, x1, y1) on its line. For flats:
    ``illumination`` in e-/px per colour before the flat field.
    """

    kind: FrameKind
    index: int
    date_obs: dt.datetime
    exposure: float
    temperature: float
    transform: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    fwhm: float = float("nan")
    transmission: float = 1.0
    background_factor: float = 1.0
    bad_seeing: bool = False
    cloud: bool = False
    flip: bool = False
    scaled: bool = False
    trail: tuple[float, float, float, float] | None = None
    illumination: tuple[float, float, float] | None = None

    @property
    def inverse(self) -> np.ndarray:
        """3x3 matrix mapping frame pixels back to reference-sky pixels."""
        return np.linalg.inv(self.transform)

    @property
    def flags(self) -> tuple[str, ...]:
        """Names of what is special about this frame ('bad_seeing', 'cloud', 'trail', ...)."""
        named = (("bad_seeing", self.bad_seeing), ("cloud", self.cloud),
                 ("trail", self.trail is not None), ("flip", self.flip), ("scaled", self.scaled))
        return tuple(name for name, on in named if on)


@dataclass(frozen=True, eq=False)
class NightTruth:
    """A whole synthetic night: config, sky, detector and the plan of every frame."""

    config: NightConfig
    sky: SkyTruth
    detector: DetectorTruth
    lights: tuple[FrameTruth, ...]
    darks: tuple[FrameTruth, ...]
    flats: tuple[FrameTruth, ...]
    bias: tuple[FrameTruth, ...]

    def frames(self, kinds: Iterable[FrameKind | str] | None = None) -> tuple[FrameTruth, ...]:
        """Frames of the given kinds (all by default), lights first."""
        by_kind = {FrameKind.LIGHT: self.lights, FrameKind.DARK: self.darks,
                   FrameKind.FLAT: self.flats, FrameKind.BIAS: self.bias}
        wanted = [FrameKind(k) for k in kinds] if kinds is not None else list(by_kind)
        return tuple(f for k in wanted for f in by_kind[k])


# --- geometry -------------------------------------------------------------------------------

def make_transform(shift: tuple[float, float] = (0.0, 0.0), rotation: float = 0.0,
                   scale: float = 1.0, center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """3x3 matrix: rotate by ``rotation`` degrees and scale about ``center``, then shift."""
    t = math.radians(rotation)
    c, s = math.cos(t) * scale, math.sin(t) * scale
    cx, cy = center
    return np.array([[c, -s, cx + shift[0] - c * cx + s * cy],
                     [s, c, cy + shift[1] - s * cx - c * cy],
                     [0.0, 0.0, 1.0]])


def apply_transform(matrix: np.ndarray, x: np.ndarray, y: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Map points (x, y) through a 3x3 (affine or projective) matrix."""
    x, y, m = (np.asarray(a, dtype=np.float64) for a in (x, y, matrix))
    w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    return (m[0, 0] * x + m[0, 1] * y + m[0, 2]) / w, (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / w


# --- CFA ------------------------------------------------------------------------------------

# --- stars ----------------------------------------------------------------------------------

def _moffat_alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _stamp_radius(peak_flux: np.ndarray, fwhm: float, psf: str, beta: float,
                  cutoff: float) -> np.ndarray:
    """Radius (px) beyond which a star's pixels fall below ``cutoff``."""
    if psf == "gaussian":
        sigma = fwhm / FWHM_PER_SIGMA
        peak = peak_flux / (2 * math.pi * sigma**2)
        r = sigma * np.sqrt(2 * np.log(np.maximum(peak / cutoff, 1.0)))
        return np.maximum(r, 4.0 * sigma)
    alpha = _moffat_alpha(fwhm, beta)
    peak = peak_flux * (beta - 1) / (math.pi * alpha**2)
    r = alpha * np.sqrt(np.maximum((peak / cutoff) ** (1.0 / beta) - 1.0, 0.0))
    return np.maximum(r, 2.0 * fwhm)


def _gaussian_stamps(fx: np.ndarray, fy: np.ndarray, k: np.ndarray, fwhm: float) -> np.ndarray:
    """(n, S, S) pixel-integrated Gaussian: a product of erf differences over pixel edges."""
    scale = 1.0 / (fwhm / FWHM_PER_SIGMA * math.sqrt(2.0))
    edges = np.append(k - 0.5, k[-1] + 0.5)
    ex = np.diff(0.5 * erf((edges[None, :] - fx[:, None]) * scale), axis=1)
    ey = np.diff(0.5 * erf((edges[None, :] - fy[:, None]) * scale), axis=1)
    return ey[:, :, None] * ex[:, None, :]


def _moffat_stamps(fx: np.ndarray, fy: np.ndarray, k: np.ndarray, fwhm: float,
                   beta: float) -> np.ndarray:
    """(n, S, S) Moffat, averaged over sub-pixel points within one FWHM of the centre and
    sampled at pixel centres in the wings (where it is nearly linear across a pixel)."""
    alpha = _moffat_alpha(fwhm, beta)
    norm = (beta - 1) / (math.pi * alpha**2)

    def profile(kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
        u = ((kx[None, :] - fx[:, None]) / alpha).astype(np.float32)
        v = ((ky[None, :] - fy[:, None]) / alpha).astype(np.float32)
        return norm * (1.0 + v[:, :, None] ** 2 + u[:, None, :] ** 2) ** np.float32(-beta)

    stamps = profile(k, k)
    sub = int(np.clip(math.ceil(12.0 / fwhm), 1, 5))  # pixel averaging matters for small stars
    if sub > 1:
        core = np.abs(k) <= min(math.ceil(fwhm), k[-1])
        o = (np.arange(sub) + 0.5) / sub - 0.5
        kc = (k[core][:, None] + o[None, :]).ravel()
        n, s = fx.size, int(core.sum())
        fine = profile(kc, kc).reshape(n, s, sub, s, sub).mean(axis=(2, 4))
        stamps[:, core[:, None] & core[None, :]] = fine.reshape(n, -1)
    return stamps


def render_stars(shape: tuple[int, ...], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                 fwhm: float, *, channels: np.ndarray | None = None, psf: str = "gaussian",
                 beta: float = 4.0, cutoff: float = 0.01,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Draw point sources, integrated over each pixel, at sub-pixel positions.

    ``shape`` is (H, W) or (H, W, 3); ``flux`` is (N,) or (N, 3) RGB total per star. With
    ``channels`` ((H, W) colour index, see :func:`cfa_channels`) a (H, W) mosaic is drawn, each
    pixel taking the flux of its colour; a plain (H, W) image takes the green flux. Stamps
    reach out to where the profile drops below ``cutoff`` (in the units of ``flux``). Adds into
    ``out`` if given; returns float32.
    """
    h, w = shape[:2]
    rgb = len(shape) == 3
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    x, y, flux = (np.asarray(a, dtype=np.float64) for a in (x, y, flux))
    x, y = x.ravel(), y.ravel()
    flux = np.repeat(flux.reshape(-1, 1), 3, axis=1) if flux.ndim == 1 else flux.reshape(-1, 3)
    if x.size == 0:
        return out
    radius = _stamp_radius(flux.max(axis=1), fwhm, psf, beta, cutoff)
    bucket = np.minimum(np.searchsorted(_STAMP_RADII, radius), len(_STAMP_RADII) - 1)
    radii = np.asarray(_STAMP_RADII)[bucket]
    seen = (x > -radii - 1) & (x < w + radii) & (y > -radii - 1) & (y < h + radii)
    chan_flat = channels.ravel() if channels is not None else None
    nch = 3 if rgb else 1
    indices, weights = [], []
    for b in np.unique(bucket[seen]):
        sel = np.flatnonzero(seen & (bucket == b))
        r = _STAMP_RADII[b]
        k = np.arange(-r, r + 1, dtype=np.float64)
        ix, iy = np.rint(x[sel]).astype(np.int64), np.rint(y[sel]).astype(np.int64)
        fx, fy = x[sel] - ix, y[sel] - iy
        stamps = (_gaussian_stamps(fx, fy, k, fwhm) if psf == "gaussian"
                  else _moffat_stamps(fx, fy, k, fwhm, beta))
        kk = k.astype(np.int64)
        cols, rows = ix[:, None] + kk[None, :], iy[:, None] + kk[None, :]
        valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
        pix = rows[:, :, None] * w + cols[:, None, :]
        star = np.broadcast_to(sel[:, None, None], pix.shape)[valid]
        pix, stamps = pix[valid], stamps[valid]
        if rgb:
            for c in range(3):
                indices.append(pix * 3 + c)
                weights.append(stamps * flux[star, c])
        else:
            indices.append(pix)
            weights.append(stamps * flux[star, 1 if chan_flat is None else chan_flat[pix]])
    if indices:
        acc = np.bincount(np.concatenate(indices), weights=np.concatenate(weights),
                          minlength=h * w * nch)
        out += acc.reshape(out.shape).astype(np.float32)
    return out


# --- building a night -----------------------------------------------------------------------

def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _pad(cfg: NightConfig) -> int:
    """Margin of sky beyond the reference grid that dithered/rotated frames can see."""
    turn = 0.5 * math.hypot(cfg.width, cfg.height) * math.sin(math.radians(cfg.max_rotation))
    return int(math.ceil(cfg.max_shift + turn + 8))


def _star_list(rng: np.random.Generator, cfg: NightConfig, pad: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and RGB fluxes: a truncated power law, many faint and a few bright stars."""
    wp, hp = cfg.width + 2 * pad, cfg.height + 2 * pad
    n = int(rng.poisson(cfg.star_density * wp * hp / 1e6))
    x = rng.uniform(-pad - 0.5, cfg.width + pad - 0.5, n)
    y = rng.uniform(-pad - 0.5, cfg.height + pad - 0.5, n)
    f_min, f_max, slope = 2.0, 3e5, 0.6  # e-/s in green; N(>F) ~ F^-slope
    u = rng.random(n)
    g = f_min * (1 - u * (1 - (f_max / f_min) ** -slope)) ** (-1 / slope)
    kind = rng.choice(len(_STAR_COLOURS), size=n, p=_STAR_COLOUR_P)
    colour = _STAR_COLOURS[kind] * np.exp(rng.normal(0, 0.03, (n, 3)))
    colour[:, 1] = 1.0
    return x, y, g[:, None] * colour


def _nebula(rng: np.random.Generator, cfg: NightConfig, pad: int) -> np.ndarray:
    """(3, Hp, Wp) coloured emission nebula (H-alpha red, OIII teal), smooth and faint."""
    f = 8
    wp, hp = cfg.width + 2 * pad, cfg.height + 2 * pad
    wc, hc = wp // f + 2, hp // f + 2
    yy, xx = np.mgrid[0:hc, 0:wc].astype(np.float32) * f
    size = min(cfg.width, cfg.height)

    def blobs(count: int, extent: float) -> np.ndarray:
        env = np.zeros((hc, wc), np.float32)
        for _ in range(count):
            bx, by = wp / 2 + rng.normal(0, 0.15 * size), hp / 2 + rng.normal(0, 0.15 * size)
            sx, sy = extent * size * rng.uniform(0.6, 1.4, 2)
            a = rng.uniform(0, math.pi)
            u = (xx - bx) * math.cos(a) + (yy - by) * math.sin(a)
            v = -(xx - bx) * math.sin(a) + (yy - by) * math.cos(a)
            env += rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
        noise = cv2.GaussianBlur(rng.standard_normal((hc, wc)).astype(np.float32), (0, 0), 2.5)
        return env * np.clip(1.0 + 0.6 * noise / max(float(noise.std()), 1e-6), 0.0, None)

    ha, o3 = blobs(3, 0.22), blobs(2, 0.12)
    planes = np.empty((3, hp, wp), np.float32)
    for c in range(3):
        coarse = ha * _HALPHA_RGB[c] + o3 * _OIII_RGB[c]
        fine = cv2.resize(coarse, (wc * f, hc * f), interpolation=cv2.INTER_CUBIC)
        planes[c] = np.clip(fine[:hp, :wp], 0.0, None)
    peak = float(planes.sum(axis=0).max())
    if peak > 0:
        planes *= cfg.nebula * sum(cfg.sky_level) / peak
    return planes


def _light_pollution(rng: np.random.Generator, cfg: NightConfig, pad: int) -> np.ndarray:
    """(3, Hp, Wp) sky background: per-channel level with a linear + mild quadratic gradient."""
    wp, hp = cfg.width + 2 * pad, cfg.height + 2 * pad
    phi = rng.uniform(0, 2 * math.pi)
    cx, cy = (cfg.width - 1) / 2, (cfg.height - 1) / 2
    u = ((np.arange(wp, dtype=np.float32) - pad - cx) / cx)[None, :]
    v = ((np.arange(hp, dtype=np.float32) - pad - cy) / cy)[:, None]
    lin = math.cos(phi) * u + math.sin(phi) * v
    planes = np.empty((3, hp, wp), np.float32)
    for c in range(3):
        a = cfg.gradient * _GRADIENT_WEIGHT[c]
        planes[c] = cfg.sky_level[c] * (1.0 + a * lin + 0.25 * a * lin * lin)
    return planes


def make_sky(cfg: NightConfig) -> SkyTruth:
    """Stars, nebula and light-pollution background of the night's field."""
    rng, pad = _rng(cfg.seed, _SKY), _pad(cfg)
    x, y, flux = _star_list(rng, cfg, pad)
    smooth, background = _nebula(rng, cfg, pad), _light_pollution(rng, cfg, pad)
    smooth += background
    return SkyTruth(x=x, y=y, flux=flux, smooth=smooth, background=background, pad=pad,
                    width=cfg.width, height=cfg.height)


def _flat_field(rng: np.random.Generator, cfg: NightConfig, channels: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel response: cos^4-like vignetting, dust donuts, PRNU. Returns (flat, dust)."""
    h, w = cfg.height, cfg.width
    cx = (w - 1) / 2 + rng.normal(0, 0.02 * w)
    cy = (h - 1) / 2 + rng.normal(0, 0.02 * h)
    r_ref2 = ((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2
    flat = np.empty((h, w), np.float32)
    for dy, dx, c in cfa_sites(cfg.pattern):
        fall = min(cfg.vignetting * _VIGNETTING_WEIGHT[c], 0.95)
        k = ((1 - fall) ** -0.5 - 1) / r_ref2  # (1 + k r^2)^-2 = 1 - fall at the corner
        xs = np.arange(dx, w, 2, dtype=np.float32) - cx
        ys = np.arange(dy, h, 2, dtype=np.float32) - cy
        r2 = ys[:, None] ** 2 + xs[None, :] ** 2
        flat[dy::2, dx::2] = (1.0 + k * r2) ** -2
    dust = np.zeros((cfg.n_dust, 4))
    depth_by_channel = np.asarray(_DUST_WEIGHT, np.float32)[channels]
    for i in range(cfg.n_dust):
        radius = rng.uniform(10.0, 35.0)
        x0, y0 = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
        depth = rng.uniform(0.01, 0.05)
        dust[i] = (x0, y0, radius, depth)
        edge = max(0.8, 0.06 * radius)
        x1, x2 = max(int(x0 - radius - 4 * edge), 0), min(int(x0 + radius + 4 * edge) + 1, w)
        y1, y2 = max(int(y0 - radius - 4 * edge), 0), min(int(y0 + radius + 4 * edge) + 1, h)
        r = np.hypot(np.arange(y1, y2)[:, None] - y0, np.arange(x1, x2)[None, :] - x0)
        ring = 1 / (1 + np.exp((r - radius) / edge)) - 1 / (1 + np.exp((r - 0.4 * radius) / edge))
        flat[y1:y2, x1:x2] *= (1 - depth * depth_by_channel[y1:y2, x1:x2] * ring).astype(np.float32)
    flat *= 1.0 + cfg.prnu * rng.standard_normal((h, w), dtype=np.float32)
    return flat, dust


def make_detector(cfg: NightConfig) -> DetectorTruth:
    """Flat field, bias pattern, dark current and hot/cold pixels of the night's camera."""
    rng = _rng(cfg.seed, _DETECTOR)
    h, w = cfg.height, cfg.width
    channels = cfa_channels(cfg.pattern, (h, w))
    flat, dust = _flat_field(rng, cfg, channels)
    rows = rng.normal(0, cfg.bias_pattern, (h, 1)).astype(np.float32)
    cols = rng.normal(0, cfg.bias_pattern, (1, w)).astype(np.float32)
    bias = np.float32(cfg.bias_level) + rows + cols
    n_hot = int(round(cfg.hot_pixel_fraction * h * w))
    n_cold = int(round(cfg.cold_pixel_fraction * h * w))
    picked = rng.choice(h * w, size=n_hot + n_cold, replace=False)
    hot, cold = np.sort(picked[:n_hot]), np.sort(picked[n_hot:])
    hot_rates = np.exp(rng.uniform(math.log(0.2), math.log(100.0), n_hot))
    cold_response = rng.uniform(0.0, 0.4, n_cold)
    cold_response[: max(1, n_cold // 4) if n_cold else 0] = 0.0  # some are dead
    flat.ravel()[cold] *= cold_response.astype(np.float32)
    dark_rate = np.full((h, w), cfg.dark_current_at(cfg.temperature), np.float32)
    dark_rate.ravel()[hot] += hot_rates.astype(np.float32)
    xy = lambda idx: np.stack([idx % w, idx // w], axis=1).astype(np.int64)  # noqa: E731
    return DetectorTruth(channels=channels, flat=flat, bias=bias, dark_rate=dark_rate,
                         hot_pixels=xy(hot), hot_rates=hot_rates, cold_pixels=xy(cold),
                         cold_response=cold_response, dust=dust, temperature=cfg.temperature,
                         doubling=cfg.dark_doubling)


def _trail_line(rng: np.random.Generator, cfg: NightConfig) -> tuple[float, float, float, float]:
    x0, y0 = rng.uniform(0.2, 0.8) * cfg.width, rng.uniform(0.2, 0.8) * cfg.height
    a = rng.uniform(0, math.pi)
    d = math.hypot(cfg.width, cfg.height)
    return (x0 - d * math.cos(a), y0 - d * math.sin(a), x0 + d * math.cos(a), y0 + d * math.sin(a))


def plan_lights(cfg: NightConfig) -> tuple[FrameTruth, ...]:
    """Transforms, seeing, clouds, trail, flip and scale of every light, in time order."""
    rng = _rng(cfg.seed, _PLAN)
    n = cfg.n_lights
    shifts = rng.uniform(-cfg.max_shift, cfg.max_shift, (n, 2))
    rotations = rng.uniform(-cfg.max_rotation, cfg.max_rotation, n)
    fwhm = rng.uniform(*cfg.fwhm_range, n)
    bad_fwhm = rng.uniform(*cfg.bad_fwhm_range, n)
    temps = np.round(cfg.temperature + rng.normal(0, 0.1, n), 2)
    cloud_t, cloud_b = rng.uniform(0.35, 0.6), rng.uniform(1.5, 2.5)
    trail = _trail_line(rng, cfg)
    order = list(rng.permutation(np.arange(1, n))) if n > 1 else []
    special: dict[str, set[int]] = {}
    for name, count in (("bad", cfg.n_bad_seeing), ("cloud", int(cfg.cloud)),
                        ("trail", int(cfg.satellite)), ("flip", int(cfg.include_flip)),
                        ("scale", int(cfg.include_scale))):
        special[name] = {int(order.pop(0)) for _ in range(min(count, len(order)))}
    center = ((cfg.width - 1) / 2, (cfg.height - 1) / 2)
    frames = []
    for i in range(n):
        if i == 0:
            matrix = np.eye(3)
        else:
            rot = rotations[i] + (180.0 if i in special["flip"] else 0.0)
            scale = _SCALE_FRAME if i in special["scale"] else 1.0
            matrix = make_transform(tuple(shifts[i]), rot, scale, center)
        is_cloud = i in special["cloud"]
        frames.append(FrameTruth(
            kind=FrameKind.LIGHT, index=i,
            date_obs=cfg.start + dt.timedelta(seconds=i * (cfg.exposure + cfg.frame_gap)),
            exposure=cfg.exposure, temperature=float(temps[i]), transform=matrix,
            fwhm=float(bad_fwhm[i] if i in special["bad"] else fwhm[i]),
            transmission=float(cloud_t) if is_cloud else 1.0,
            background_factor=float(cloud_b) if is_cloud else 1.0,
            bad_seeing=i in special["bad"], cloud=is_cloud, flip=i in special["flip"],
            scaled=i in special["scale"], trail=trail if i in special["trail"] else None))
    return tuple(frames)


def _plan_calibration(cfg: NightConfig, after: dt.datetime
                      ) -> tuple[tuple[FrameTruth, ...], ...]:
    """Darks, then bias, then flats (at dawn), each at consecutive times after ``after``."""
    rng = _rng(cfg.seed, _PLAN, 1)
    t = after + dt.timedelta(minutes=5)
    out = []
    for kind, count, exposure in ((FrameKind.DARK, cfg.n_darks, cfg.exposure),
                                  (FrameKind.BIAS, cfg.n_bias, 0.0),
                                  (FrameKind.FLAT, cfg.n_flats, cfg.flat_exposure)):
        frames = []
        level = cfg.flat_level * cfg.white_level * cfg.e_per_adu
        for i in range(count):
            illum = None
            if kind == FrameKind.FLAT:
                jitter = 1.0 + rng.normal(0, 0.005)
                illum = tuple(float(level * c * jitter) for c in _FLAT_COLOUR)
            frames.append(FrameTruth(
                kind=kind, index=i, date_obs=t, exposure=exposure,
                temperature=float(round(cfg.temperature + rng.normal(0, 0.1), 2)),
                illumination=illum))
            t += dt.timedelta(seconds=exposure + 2.0)
        out.append(tuple(frames))
        t += dt.timedelta(minutes=5)
    darks, bias, flats = out
    return darks, flats, bias


def make_night(cfg: NightConfig | None = None) -> NightTruth:
    """The truth of a whole night (sky, detector, frame plan); frames are rendered on demand."""
    cfg = cfg or NightConfig()
    lights = plan_lights(cfg)
    end = lights[-1].date_obs + dt.timedelta(seconds=cfg.exposure) if lights else cfg.start
    darks, flats, bias = _plan_calibration(cfg, end)
    return NightTruth(config=cfg, sky=make_sky(cfg), detector=make_detector(cfg),
                      lights=lights, darks=darks, flats=flats, bias=bias)


# --- rendering ------------------------------------------------------------------------------

def _warp_smooth(night: NightTruth, frame: FrameTruth) -> np.ndarray:
    """(H, W) e-/s of the smooth sky at each pixel's colour, seen through ``frame``'s transform.

    Each CFA site is warped straight from its colour plane onto its own half-resolution grid,
    which costs a third of warping RGB and then sampling.
    """
    sky, cfg = night.sky, night.config
    h, w = cfg.height, cfg.width
    pad = np.array([[1.0, 0, sky.pad], [0, 1.0, sky.pad], [0, 0, 1.0]])
    to_sky = pad @ frame.inverse
    area = 1.0 / abs(np.linalg.det(frame.transform[:2, :2]))  # sky area seen by one pixel
    out = np.empty((h, w), np.float32)
    planes: dict[int, np.ndarray] = {}
    for dy, dx, c in cfa_sites(cfg.pattern):
        if c not in planes:
            plane = sky.smooth[c]
            t, b = frame.transmission, frame.background_factor
            if t != 1.0 or b != 1.0:  # clouds: t * nebula + b * background
                plane = t * plane + (b - t) * sky.background[c]
            planes[c] = plane * np.float32(area)
        site = np.array([[2.0, 0, dx], [0, 2.0, dy], [0, 0, 1.0]])
        m = (to_sky @ site)[:2]
        size = ((w - dx + 1) // 2, (h - dy + 1) // 2)
        out[dy::2, dx::2] = cv2.warpAffine(planes[c], m, size,
                                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                           borderMode=cv2.BORDER_REPLICATE)
    return out


def _add_trail(out: np.ndarray, frame: FrameTruth, channels: np.ndarray,
               density: float = 8000.0) -> None:
    """Add a satellite trail: a Gaussian line of ``density`` e- per px of length."""
    assert frame.trail is not None
    x0, y0, x1, y1 = frame.trail
    length = math.hypot(x1 - x0, y1 - y0)
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length
    sigma = frame.fwhm / FWHM_PER_SIGMA
    h, w = out.shape
    d = (np.arange(w, dtype=np.float32)[None, :] - x0) * nx + \
        (np.arange(h, dtype=np.float32)[:, None] - y0) * ny
    prof = density / (sigma * math.sqrt(2 * math.pi)) * np.exp(-0.5 * (d / sigma) ** 2)
    out += prof * np.asarray(_TRAIL_RGB, np.float32)[channels]


def expected_electrons(night: NightTruth, frame: FrameTruth, *, stars: bool = True,
                       smooth: bool = True, trail: bool = True, flat: bool = True,
                       dark: bool = True) -> np.ndarray:
    """(H, W) float32 mean electrons collected by each pixel of ``frame`` (no noise, no bias).

    The parts can be switched off, e.g. ``stars`` only without the flat for a PSF check.
    """
    cfg, det = night.config, night.detector
    h, w = cfg.height, cfg.width
    out = np.zeros((h, w), np.float32)
    t = frame.exposure
    if frame.kind == FrameKind.LIGHT:
        if smooth:
            out = _warp_smooth(night, frame)
            out *= np.float32(t)
        if stars:
            xs, ys = apply_transform(frame.transform, night.sky.x, night.sky.y)
            render_stars((h, w), xs, ys, night.sky.flux * (t * frame.transmission), frame.fwhm,
                         channels=det.channels, psf=cfg.psf, beta=cfg.moffat_beta,
                         cutoff=0.05, out=out)
        if trail and frame.trail is not None:
            _add_trail(out, frame, det.channels)
    elif frame.kind == FrameKind.FLAT and frame.illumination is not None and smooth:
        out = np.asarray(frame.illumination, np.float32)[det.channels]
    if flat:
        out *= det.flat
    if dark and frame.exposure > 0:
        out += det.dark_rate * np.float32(det.dark_scale(frame.temperature) * t)
    return out


def read_out(electrons: np.ndarray | None, bias: np.ndarray, cfg: NightConfig,
             rng: np.random.Generator) -> np.ndarray:
    """Shot noise, gain, bias, read noise, clipping: mean electrons -> uint16 ADU.

    Pixels under ~30 e- get Poisson noise; brighter ones a normal law of the same variance,
    drawn together with the read noise (one draw per pixel).
    """
    g = np.float32(cfg.e_per_adu)
    rn = np.float32(cfg.read_noise / cfg.e_per_adu)
    noise = rng.standard_normal(bias.shape, dtype=np.float32)
    if electrons is None:
        adu = bias + rn * noise
    else:
        e = np.maximum(electrons, 0.0, dtype=np.float32)
        small = e < _POISSON_LIMIT
        sigma = np.sqrt(e / (g * g) + rn * rn)
        adu = e / g
        adu += bias
        adu += sigma * noise
        if small.any():
            counts = rng.poisson(e[small]).astype(np.float32)
            adu[small] = counts / g + bias[small] + rn * noise[small]
    np.rint(adu, out=adu)
    np.clip(adu, 0, cfg.white_level, out=adu)
    return adu.astype(np.uint16)


def render_frame(night: NightTruth, frame: FrameTruth) -> np.ndarray:
    """(H, W) uint16 raw mosaic of one frame, top-down, in the night's Bayer pattern."""
    rng = _rng(night.config.seed, _FRAME_STREAM[frame.kind], frame.index)
    electrons = None if frame.kind == FrameKind.BIAS else expected_electrons(night, frame)
    return read_out(electrons, night.detector.bias, night.config, rng)


def iter_frames(night: NightTruth, kinds: Iterable[FrameKind | str] | None = None
                ) -> Iterator[tuple[FrameTruth, np.ndarray]]:
    """Render frames one at a time (memory stays at one frame): (truth, uint16 mosaic)."""
    for frame in night.frames(kinds):
        yield frame, render_frame(night, frame)
