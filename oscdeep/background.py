"""Background (gradient) extraction of a linear stacked image.

Light pollution adds a smooth gradient to the sky; residual vignetting multiplies it by one.
Both are estimated from the sky itself and removed, before colour calibration and stretching.

1. **Samples.** The frame is cut into a regular grid of nearly square cells (``grid`` cells
   along the long side, centred, so that no cell is partial). Stars are masked first: a pixel
   whose luminance lies more than ``star_sigma`` robust sigmas above its cell's median (both
   interpolated between cell centres) is masked, and the mask is grown by ``star_grow``
   pixels to cover the halos. Each cell and channel is then summarised by a sigma-clipped
   median (3 sigma, 3 passes) of the remaining pixels. The robust sigma is the distance from
   the median down to the 15.87th percentile, so stars and nebulosity, which only ever add
   light, cannot inflate it. A sample sits at the centroid of the pixels it used.
2. **Cells kept.** A cell is dropped if fewer than ``min_valid`` of its pixels hold data (not
   NaN, not in ``mask`` or ``exclusions``), if fewer than 10 % are left once stars are
   masked, if its sample falls in an exclusion region, or if it stands out from a smooth
   model of the other cells: a polynomial of ``degree`` is fitted to the kept cells, every
   cell's residual is divided by the robust spread of the kept residuals (never less than the
   cells' own statistical noise), and cells more than ``reject_high`` sigmas above the model
   or ``reject_low`` below it are dropped; this repeats until the kept set settles (at most
   10 passes, never keeping fewer than a third of the cells). The rejection is asymmetric on
   purpose: the target only adds light, so a low threshold on the bright side keeps it out of
   the fit while a dark side of the sky is still followed. Finally the cells within
   ``reject_grow`` cells of any group of two or more touching too-bright cells are dropped
   too: they hold the target's faint outskirts, which are below the threshold one by one but
   would together lift the model under the target.
   The rejection judges against a polynomial for both models, so a glow too sharp for
   ``degree`` is taken for a target: raise the degree, or mask the target yourself and set
   ``reject_high=None``.
3. **Model.** ``poly``: least squares of a 2-D polynomial (all terms ``u**i * v**j`` with
   ``i + j <= degree``, coordinates normalised by half the long side), per channel.
   ``rbf``: that polynomial plus a thin-plate spline (:class:`scipy.interpolate.
   RBFInterpolator`) through the polynomial's residuals at the kept samples: the spline
   follows what the polynomial misses, and holes left by rejected cells are bridged by the
   polynomial. The spline's smoothing is ``smoothing * n * 0.01 * min(1, (noise/rms)**2)``,
   ``n`` the number of samples, ``noise`` the samples' statistical noise and ``rms`` the
   polynomial's residual: with normalised coordinates and a fit that scales with the data,
   one value works at any image size and sky level, smooths hard where the residual is only
   noise and lets the spline follow real structure. ``smoothing=0`` interpolates exactly.
   The model is evaluated on a coarse lattice (1/192 of the long side apart) and brought to
   full size with bicubic ``cv2.resize``, exact far below the noise for a model this smooth.
4. **Correction.** The *pedestal* is the median of the model over the image's pixels with
   data (on a 4-pixel lattice), per channel. ``subtract``: ``image - model + pedestal``: the
   gradient goes but every channel keeps its sky level, so the result stays positive and its
   colour balance is unchanged (the colour stage neutralises the sky afterwards). ``divide``:
   ``image / (model / pedestal)``, the normalised model floored at 1 %, for vignetting residue.

NaN pixels are ignored by every statistic and stay NaN in the corrected image; the returned
model is finite everywhere. A 3000x2000x3 image takes about half a second on one core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np

from oscdeep.errors import ConfigError
from oscdeep.types import accept_aliases, choice

__all__ = [
    "BackgroundModel",
    "CorrectionMode",
    "Rect",
    "Circle",
    "BackgroundOptions",
    "BackgroundResult",
    "extract_background",
    "parse_background_spec",
    "parse_exclusion",
    "MAX_DEGREE",
]

MAX_DEGREE = 4
"""Highest polynomial degree: beyond it a fit over a few hundred cells starts to ring."""

_CLIP_SIGMA = 3.0  # sigma clipping of the pixels within a cell
_CLIP_PASSES = 3
_MAX_REJECT_PASSES = 10
_MIN_KEPT_FRACTION = 1.0 / 3.0  # rejection never keeps fewer of the candidate cells
_MIN_CELL = 8  # pixels, smallest cell side
_MIN_STAR_FREE = 0.1  # fraction of a cell's pixels that must be left once stars are masked
_RBF_SCALE = 1e-2
_LATTICE = 192  # model evaluation points along the long side
_LATTICE_PAD = 2  # extra lattice points beyond each edge, so bicubic never clamps
_DIVIDE_FLOOR = 0.01
_GAUSS_Q = 0.15865525393145707  # fraction of a normal distribution below -1 sigma
_MEDIAN_SE = math.sqrt(math.pi / 2.0)  # standard error of a median / that of a mean


@accept_aliases({"polynomial": "poly", "tps": "rbf", "thinplate": "rbf"})
class BackgroundModel(StrEnum):
    """Shape of the background model."""

    POLY = "poly"
    RBF = "rbf"


@accept_aliases({"sub": "subtract", "div": "divide", "lightpollution": "subtract",
                 "vignetting": "divide"})
class CorrectionMode(StrEnum):
    """How the model is removed: ``subtract`` (light pollution) or ``divide`` (vignetting)."""

    SUBTRACT = "subtract"
    DIVIDE = "divide"


@dataclass(frozen=True)
class Rect:
    """Exclusion rectangle: pixels whose centre has ``x0 <= x <= x1`` and ``y0 <= y <= y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        x0, x1 = sorted((float(self.x0), float(self.x1)))
        y0, y1 = sorted((float(self.y0), float(self.y1)))
        for name, value in zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1)):
            object.__setattr__(self, name, value)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each point ``(x, y)`` lies inside."""
        return (x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1)

    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the smallest box holding the region."""
        return self.x0, self.y0, self.x1, self.y1


@dataclass(frozen=True)
class Circle:
    """Exclusion disc: pixels whose centre lies within ``radius`` of ``(x, y)``."""

    x: float
    y: float
    radius: float

    def __post_init__(self) -> None:
        if not float(self.radius) > 0:
            raise ConfigError(f"exclusion circle radius {self.radius!r} must be > 0")

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each point ``(x, y)`` lies inside."""
        return (x - self.x) ** 2 + (y - self.y) ** 2 <= self.radius ** 2

    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the smallest box holding the region."""
        r = self.radius
        return self.x - r, self.y - r, self.x + r, self.y + r


Region = Rect | Circle


@dataclass(frozen=True)
class BackgroundOptions:
    """What background model to fit and how (see the module notes for each step).

    ``degree`` is the polynomial degree (1-4) of the ``poly`` model and of the trend under the
    ``rbf`` model; ``smoothing`` (>= 0) applies to ``rbf`` only. ``reject_high`` /
    ``reject_low`` are the cell rejection thresholds in robust sigmas (None: no rejection on
    that side); ``reject_grow`` cells around every group of two or more touching cells
    rejected as too bright are dropped too (the faint outskirts of the target).
    ``min_valid`` is the fraction of a cell's pixels that must hold data.
    """

    model: BackgroundModel | str = BackgroundModel.POLY
    degree: int = 2
    smoothing: float = 1.0
    grid: int = 24
    mode: CorrectionMode | str = CorrectionMode.SUBTRACT
    star_sigma: float = 3.0
    star_grow: int = 3
    reject_high: float | None = 2.5
    reject_low: float | None = 5.0
    reject_grow: int = 1
    min_valid: float = 0.5
    exclusions: tuple[Region, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", choice(BackgroundModel, self.model,
                                                 "background model"))
        object.__setattr__(self, "mode", choice(CorrectionMode, self.mode,
                                                "background correction mode"))
        if isinstance(self.degree, bool) or not isinstance(self.degree, (int, np.integer)) \
                or not 1 <= self.degree <= MAX_DEGREE:
            raise ConfigError(f"background polynomial degree {self.degree!r} is not allowed: "
                              f"use an integer from 1 to {MAX_DEGREE}")
        object.__setattr__(self, "degree", int(self.degree))
        if not (math.isfinite(self.smoothing) and self.smoothing >= 0):
            raise ConfigError(f"background smoothing {self.smoothing!r} is not allowed: "
                              "use a number >= 0")
        if isinstance(self.grid, bool) or not isinstance(self.grid, (int, np.integer)) \
                or not 4 <= self.grid <= 256:
            raise ConfigError(f"background grid {self.grid!r} is not allowed: "
                              "use an integer from 4 to 256 (cells along the long side)")
        if not self.star_sigma > 0 or not 0 <= self.star_grow <= 50:
            raise ConfigError("background star masking needs star_sigma > 0 and "
                              f"0 <= star_grow <= 50 (got {self.star_sigma!r}, "
                              f"{self.star_grow!r})")
        for name in ("reject_high", "reject_low"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"background {name} {value!r} is not allowed: "
                                  "use a number of sigmas > 0, or None to disable")
        if not 0 < self.min_valid <= 1:
            raise ConfigError(f"background min_valid {self.min_valid!r} is not allowed: "
                              "use a fraction in (0, 1]")
        regions = tuple(self.exclusions)
        for region in regions:
            if not isinstance(region, (Rect, Circle)):
                raise ConfigError(f"background exclusion {region!r} is not a Rect or Circle")
        object.__setattr__(self, "exclusions", regions)

    @property
    def spec(self) -> str:
        """The short spelling of the model, as :func:`parse_background_spec` reads it."""
        if self.model == BackgroundModel.RBF:
            return f"rbf:{self.smoothing:g}"
        return f"poly:{self.degree}"


@dataclass(frozen=True, eq=False)
class BackgroundResult:
    """Corrected image, the model removed, and where it was sampled.

    ``samples`` (N, 2) and ``rejected`` (M, 2) are ``(x, y)`` pixel positions of the cells
    used and of the cells that had data but were not used. ``pedestal`` holds, per channel,
    the value added back (subtract) or divided out (divide); ``residual_rms`` the RMS of
    sample minus model over the used cells, per channel, in image units.
    """

    image: np.ndarray
    model: np.ndarray
    samples: np.ndarray
    rejected: np.ndarray
    options: BackgroundOptions
    residual_rms: tuple[float, ...]
    pedestal: tuple[float, ...]


# --- spec parsing ---------------------------------------------------------------------------

_SPEC_HELP = "use poly, poly:DEGREE (1-4), rbf, rbf:SMOOTHING or none"


def parse_background_spec(text: str) -> BackgroundOptions | None:
    """Options from a CLI spelling: ``poly``, ``poly:3``, ``rbf``, ``rbf:0.5`` or ``none``."""
    raw = str(text).strip().lower()
    name, sep, arg = (part.strip() for part in raw.partition(":"))
    if name in ("none", "off", "no"):
        if arg:
            raise ConfigError(f"background {text!r} takes no value: {_SPEC_HELP}")
        return None
    try:
        model = BackgroundModel(name)
    except ValueError:
        raise ConfigError(f"unknown background model {name!r} in {text!r}: {_SPEC_HELP}") \
            from None
    if sep and not arg:
        raise ConfigError(f"background {text!r} has an empty value: {_SPEC_HELP}")
    if not arg:
        return BackgroundOptions(model=model)
    if model == BackgroundModel.POLY:
        if not arg.isdigit():
            raise ConfigError(f"background degree {arg!r} in {text!r} is not an integer 1-4: "
                              f"{_SPEC_HELP}")
        return BackgroundOptions(model=model, degree=int(arg))
    try:
        smoothing = float(arg)
    except ValueError:
        raise ConfigError(f"background smoothing {arg!r} in {text!r} is not a number: "
                          f"{_SPEC_HELP}") from None
    return BackgroundOptions(model=model, smoothing=smoothing)


def parse_exclusion(text: str) -> Region:
    """An exclusion region from ``rect:X0,Y0,X1,Y1`` or ``circle:X,Y,R`` (pixel coordinates)."""
    kind, _, args = str(text).strip().lower().partition(":")
    want = {"rect": 4, "circle": 3}.get(kind.strip())
    try:
        values = [float(v) for v in args.split(",")] if args.strip() else []
    except ValueError:
        values = []
    if want is None or len(values) != want or not all(map(math.isfinite, values)):
        raise ConfigError(f"bad background exclusion {text!r}: use rect:X0,Y0,X1,Y1 or "
                          "circle:X,Y,RADIUS in pixels")
    return Rect(*values) if want == 4 else Circle(*values)


# --- cells ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Grid:
    """``ny`` x ``nx`` cells of ``ch`` x ``cw`` pixels, the first at pixel ``(x0, y0)``."""

    ny: int
    nx: int
    ch: int
    cw: int
    y0: int
    x0: int

    @classmethod
    def fit(cls, h: int, w: int, cells: int) -> _Grid:
        size = max(h, w) / cells
        nx = max(1, min(w // _MIN_CELL, round(w / size)))
        ny = max(1, min(h // _MIN_CELL, round(h / size)))
        cw, ch = w // nx, h // ny
        return cls(ny, nx, ch, cw, (h - ny * ch) // 2, (w - nx * cw) // 2)

    def blocks(self, plane: np.ndarray) -> np.ndarray:
        """(cells, pixels) copy of an (H, W) plane's pixels, cell by cell (row-major)."""
        sub = plane[self.y0:self.y0 + self.ny * self.ch, self.x0:self.x0 + self.nx * self.cw]
        cells = sub.reshape(self.ny, self.ch, self.nx, self.cw).transpose(0, 2, 1, 3)
        return cells.reshape(self.ny * self.nx, self.ch * self.cw)

    def upsample(self, values: np.ndarray, h: int, w: int) -> np.ndarray:
        """(H, W) bilinear interpolation of per-cell values between cell centres."""
        coarse = values.reshape(self.ny, self.nx).astype(np.float32)
        fine = cv2.resize(coarse, (self.nx * self.cw, self.ny * self.ch),
                          interpolation=cv2.INTER_LINEAR)
        pads = ((self.y0, h - self.y0 - fine.shape[0]), (self.x0, w - self.x0 - fine.shape[1]))
        return np.pad(fine, pads, mode="edge")

    def centres(self) -> np.ndarray:
        """(cells, 2) ``(x, y)`` of the cell centres."""
        yy, xx = np.mgrid[0:self.ny, 0:self.nx]
        x = self.x0 + (xx.ravel() + 0.5) * self.cw - 0.5
        y = self.y0 + (yy.ravel() + 0.5) * self.ch - 0.5
        return np.stack([x, y], axis=1)

    def centroids(self, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` centroids (cells, 2) of the True pixels of each cell of the (cells,
        pixels) ``use`` blocks, and their counts; the cell centre where a cell has none."""
        blk = use.reshape(-1, self.ch, self.cw).view(np.uint8)
        count = blk.sum(axis=(1, 2), dtype=np.int64)
        sx = blk.sum(axis=1, dtype=np.int32) @ np.arange(self.cw)
        sy = blk.sum(axis=2, dtype=np.int32) @ np.arange(self.ch)
        centre = self.centres()
        col, row = np.tile(np.arange(self.nx), self.ny), np.repeat(np.arange(self.ny), self.nx)
        with np.errstate(invalid="ignore", divide="ignore"):
            xy = np.stack([self.x0 + col * self.cw + sx / count,
                           self.y0 + row * self.ch + sy / count], axis=1)
        return np.where(count[:, None] > 0, xy, centre), count


def _sorted_quantile(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` of ``s[..., lo:hi]`` along the last axis of row-sorted ``s``."""
    n = hi - lo
    pos = lo + q * np.maximum(n - 1, 0)
    i = np.clip(np.floor(pos).astype(np.int64), 0, s.shape[-1] - 1)
    j = np.clip(i + 1, 0, s.shape[-1] - 1)
    f = pos - i
    a = np.take_along_axis(s, i[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(s, j[..., None], axis=-1)[..., 0]
    out = a + f * (np.where(f > 0, b, a) - a)
    return np.where(n > 0, out, np.nan)


def _clipped_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma-clipped median, lower-side robust sigma and count of kept values, per row.

    NaN values are ignored. The sigma is median minus the 15.87th percentile, so an upper tail
    of faint stars or nebulosity does not widen it.
    """
    s = np.sort(rows, axis=-1)  # NaN sorts last
    lo = np.zeros(s.shape[:-1], np.int64)
    hi = np.count_nonzero(~np.isnan(s), axis=-1)
    for i in range(_CLIP_PASSES + 1):
        med = _sorted_quantile(s, lo, hi, 0.5)
        sigma = med - _sorted_quantile(s, lo, hi, _GAUSS_Q)
        if i == _CLIP_PASSES:
            break
        with np.errstate(invalid="ignore"):
            low = (med - _CLIP_SIGMA * sigma)[..., None]
            high = (med + _CLIP_SIGMA * sigma)[..., None]
            lo = np.where(sigma > 0, np.count_nonzero(s < low, axis=-1), lo)
            hi = np.where(sigma > 0, np.count_nonzero(s <= high, axis=-1), hi)
    return med, sigma, hi - lo


# --- models ---------------------------------------------------------------------------------

def _poly_terms(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    """(N, terms) design matrix of ``u**i * v**j`` for ``i + j <= degree``."""
    cols = [u ** i * v ** j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return np.stack(cols, axis=1)


def _n_terms(degree: int) -> int:
    return (degree + 1) * (degree + 2) // 2


def _fit_poly(uv: np.ndarray, values: np.ndarray, degree: int) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(_poly_terms(uv[:, 0], uv[:, 1], degree), values, rcond=None)
    return coef


def _reject_cells(uv: np.ndarray, values: np.ndarray, noise: np.ndarray, where: np.ndarray,
                  grid: _Grid, opts: BackgroundOptions) -> np.ndarray:
    """Which candidate cells to keep: iterated asymmetric clipping against a polynomial.

    ``where`` holds each candidate's cell index on ``grid``; the bright groups found are
    grown by ``opts.reject_grow`` cells at the end.
    """
    n = len(values)
    kept = np.ones(n, bool)
    if opts.reject_high is None and opts.reject_low is None:
        return kept
    terms = _poly_terms(uv[:, 0], uv[:, 1], opts.degree)
    min_kept = max(_n_terms(opts.degree) + 1, math.ceil(_MIN_KEPT_FRACTION * n))
    # a noiseless image must not turn rounding errors into rejections
    floor = np.maximum(noise, 1e-6 * np.abs(np.median(values, axis=0)) + 1e-12)
    bright = np.zeros(n, bool)  # the cells of ``kept``'s pass found too bright
    for _ in range(_MAX_REJECT_PASSES):
        coef, *_ = np.linalg.lstsq(terms[kept], values[kept], rcond=None)
        resid = values - terms @ coef
        centre = np.median(resid[kept], axis=0)
        spread = 1.4826 * np.median(np.abs(resid[kept] - centre), axis=0)
        z = (resid - centre) / np.maximum(spread, floor)
        high = np.zeros(n, bool) if opts.reject_high is None else z.max(axis=1) > opts.reject_high
        new = ~high
        if opts.reject_low is not None:
            new &= z.min(axis=1) >= -opts.reject_low
        if new.sum() < min_kept:
            break
        bright, done, kept = high, np.array_equal(new, kept), new
        if done:
            break
    if opts.reject_grow > 0 and bright.any():
        grown = _grow_groups(bright, where, grid, opts.reject_grow)
        if (kept & ~grown).sum() >= min_kept:
            kept &= ~grown
    return kept


def _grow_groups(flag: np.ndarray, where: np.ndarray, grid: _Grid, cells: int) -> np.ndarray:
    """Candidates within ``cells`` cells of a group of >= 2 touching flagged cells."""
    from scipy import ndimage

    plane = np.zeros(grid.ny * grid.nx, bool)
    plane[where[flag]] = True
    eight = np.ones((3, 3), bool)
    labels, _ = ndimage.label(plane.reshape(grid.ny, grid.nx), structure=eight)
    sizes = np.bincount(labels.ravel())
    groups = (sizes[labels] >= 2) & (labels > 0)
    grown = ndimage.binary_dilation(groups, structure=eight, iterations=cells)
    return grown.ravel()[where]


def _fit_model(uv: np.ndarray, values: np.ndarray, noise: np.ndarray,
               opts: BackgroundOptions) -> Callable[[np.ndarray], np.ndarray]:
    """A function from (N, 2) normalised coordinates to (N, C) model values."""
    coef = _fit_poly(uv, values, opts.degree)

    def poly(p: np.ndarray) -> np.ndarray:
        return _poly_terms(p[:, 0], p[:, 1], opts.degree) @ coef

    if opts.model == BackgroundModel.POLY:
        return poly
    from scipy.interpolate import RBFInterpolator

    resid = values - poly(uv)
    rms = np.sqrt(np.mean(resid ** 2, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        noisy = float(np.mean(np.where(rms > 0, np.minimum(1.0, (noise / rms) ** 2), 1.0)))
    rbf = RBFInterpolator(uv, resid, kernel="thin_plate_spline",
                          smoothing=opts.smoothing * noisy * len(uv) * _RBF_SCALE)
    return lambda p: poly(p) + rbf(p)


def _evaluate(fn: Callable[[np.ndarray], np.ndarray], h: int, w: int, scale: float,
              channels: int) -> np.ndarray:
    """(H, W, C) float32 model: ``fn`` on a coarse lattice, resized bicubically."""
    step = max(1, math.ceil(max(h, w) / _LATTICE))
    pad = _LATTICE_PAD
    nx, ny = math.ceil(w / step) + 2 * pad, math.ceil(h / step) + 2 * pad
    # lattice point k sits where cv2.resize puts the centre of source pixel k
    xs = (np.arange(nx) - pad + 0.5) * step - 0.5
    ys = (np.arange(ny) - pad + 0.5) * step - 0.5
    gx, gy = np.meshgrid(xs, ys)
    uv = np.stack([(gx.ravel() - (w - 1) / 2) / scale, (gy.ravel() - (h - 1) / 2) / scale], 1)
    coarse = fn(uv).reshape(ny, nx, channels).astype(np.float32)
    big = cv2.resize(coarse, (nx * step, ny * step), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(ny * step, nx * step, channels)
    return np.ascontiguousarray(big[pad * step:pad * step + h, pad * step:pad * step + w])


# --- the extraction -------------------------------------------------------------------------

def _exclusion_mask(h: int, w: int, mask: np.ndarray | None,
                    regions: Sequence[Region]) -> np.ndarray:
    """(H, W) True where pixels must not be used as sky."""
    out = np.zeros((h, w), bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (h, w):
            raise ValueError(f"background mask shape {m.shape} does not match image ({h}, {w})")
        out |= m.astype(bool)
    for region in regions:
        x0, y0, x1, y1 = region.bounds()
        c0, c1 = max(0, math.ceil(x0)), min(w, math.floor(x1) + 1)
        r0, r1 = max(0, math.ceil(y0)), min(h, math.floor(y1) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        out[r0:r1, c0:c1] |= region.contains(xx, yy)
    return out


def _star_mask(lum: np.ndarray, grid: _Grid, opts: BackgroundOptions) -> np.ndarray:
    """(H, W) True on pixels brighter than their local sky + ``star_sigma`` sigma, grown."""
    h, w = lum.shape
    med, sigma, _ = _clipped_stats(grid.blocks(lum))
    limit = med + opts.star_sigma * sigma
    if not np.isfinite(limit).any():
        return np.zeros((h, w), bool)
    limit = np.where(np.isfinite(limit), limit, np.nanmedian(limit))
    with np.errstate(invalid="ignore"):
        stars = (lum > grid.upsample(limit, h, w)).astype(np.uint8)
    if opts.star_grow > 0:
        r = opts.star_grow
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        stars = cv2.dilate(stars, kernel)
    return stars.astype(bool)


def _as_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3) or min(a.shape[:2]) < _MIN_CELL:
        raise ValueError(f"background extraction needs an (H, W) or (H, W, 3) image of at "
                         f"least {_MIN_CELL}x{_MIN_CELL} pixels, got shape {np.shape(image)}")
    return np.ascontiguousarray(a, dtype=np.float32)  # also native byte order


@dataclass(frozen=True)
class _Cells:
    """Per-cell measurements: sample position, per-channel value and noise, pixel counts."""

    xy: np.ndarray  # (cells, 2) centroid of the pixels used
    value: np.ndarray  # (cells, C) sigma-clipped median
    noise: np.ndarray  # (cells, C) standard error of that median
    n_used: np.ndarray  # pixels left after stars were masked
    n_sky: np.ndarray  # pixels with data, outside mask and exclusions
    n_data: np.ndarray  # pixels with data


def _measure_cells(img: np.ndarray, grid: _Grid, excluded: np.ndarray | None,
                   opts: BackgroundOptions) -> _Cells:
    """Mask stars, then summarise every cell and channel by its sigma-clipped median."""
    nch = img.shape[2]
    lum = img[:, :, 0].copy() if nch == 1 else (img[:, :, 0] + img[:, :, 1] + img[:, :, 2]) / 3
    n_data = np.count_nonzero(grid.blocks(np.isfinite(lum)), axis=1)
    if excluded is not None:
        lum[excluded] = np.nan
    sky = np.isfinite(lum)
    use_blocks = grid.blocks(sky & ~_star_mask(lum, grid, opts))
    unused = ~use_blocks
    stats = []
    for c in range(nch):
        data = grid.blocks(img[:, :, c])
        data[unused] = np.nan
        stats.append(_clipped_stats(data))
    value, sigma, count = (np.stack(parts, axis=1) for parts in zip(*stats))
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = _MEDIAN_SE * sigma / np.sqrt(count)
    noise[count < 3] = np.nan
    xy, n_used = grid.centroids(use_blocks)
    return _Cells(xy, value, noise, n_used, np.count_nonzero(grid.blocks(sky), axis=1), n_data)


def _correct(img: np.ndarray, model: np.ndarray, mode: CorrectionMode
             ) -> tuple[np.ndarray, np.ndarray]:
    """Corrected image and the per-channel pedestal (median of the model where there is data)."""
    lattice = model[::4, ::4][np.isfinite(img[::4, ::4]).all(axis=2)]
    pedestal = np.median(lattice if lattice.size else model.reshape(-1, model.shape[2]), axis=0)
    pedestal = pedestal.astype(np.float32)
    if mode == CorrectionMode.SUBTRACT:
        corrected = np.subtract(img, model)
        corrected += pedestal
        return corrected, pedestal
    if not (pedestal > 0).all():
        raise ConfigError(f"background divide: the sky model's level {pedestal.tolist()} is "
                          "not positive; use subtract mode for this image")
    norm = np.maximum(model / pedestal, np.float32(_DIVIDE_FLOOR))
    return np.divide(img, norm, out=norm), pedestal


def extract_background(image: np.ndarray, options: BackgroundOptions = BackgroundOptions(),
                       *, mask: np.ndarray | None = None) -> BackgroundResult:
    """Fit the sky background of a linear image and remove it (see the module notes).

    ``mask`` is an optional (H, W) boolean array, True on pixels that must not be used as sky
    (the target, a known nebula); ``options.exclusions`` add rectangles and circles.
    """
    opts = options
    img = _as_image(image)
    h, w, nch = img.shape
    grid = _Grid.fit(h, w, opts.grid)
    excluded = (_exclusion_mask(h, w, mask, opts.exclusions)
                if mask is not None or opts.exclusions else None)
    cells = _measure_cells(img, grid, excluded, opts)
    xy = cells.xy
    scale = max(h, w) / 2.0
    uv = np.stack([(xy[:, 0] - (w - 1) / 2) / scale, (xy[:, 1] - (h - 1) / 2) / scale], 1)

    inside = np.zeros(len(xy), bool)
    for region in opts.exclusions:
        inside |= region.contains(xy[:, 0], xy[:, 1])
    size = grid.ch * grid.cw
    candidate = ((cells.n_sky >= opts.min_valid * size) & ~inside
                 & (cells.n_used >= _MIN_STAR_FREE * size)
                 & np.isfinite(cells.value).all(axis=1) & np.isfinite(cells.noise).all(axis=1))
    need = _n_terms(opts.degree) + 1
    if candidate.sum() < need:
        raise ConfigError(f"background {opts.spec}: only {int(candidate.sum())} usable sky "
                          f"cells, need at least {need}; lower the degree, or use smaller "
                          "exclusions / a finer grid")
    where = np.flatnonzero(candidate)
    values = cells.value[where].astype(np.float64)
    noise = np.median(cells.noise[where], axis=0)
    kept_c = _reject_cells(uv[where], values, noise, where, grid, opts)
    kept = np.zeros(len(xy), bool)
    kept[where[kept_c]] = True

    fn = _fit_model(uv[kept], values[kept_c], noise, opts)
    model = _evaluate(fn, h, w, scale, nch)
    residual = values[kept_c] - fn(uv[kept])
    rms = tuple(float(r) for r in np.sqrt(np.mean(residual ** 2, axis=0)))
    corrected, pedestal = _correct(img, model, opts.mode)
    if np.ndim(image) == 2:
        corrected, model = corrected[:, :, 0], model[:, :, 0]
    rejected = (cells.n_data > 0) & ~kept
    return BackgroundResult(image=corrected, model=model, samples=xy[kept], rejected=xy[rejected],
                            options=opts, residual_rms=rms,
                            pedestal=tuple(float(p) for p in pedestal))
