"""Stretch a linear image to display values in [0, 1]: Generalized Hyperbolic Stretch or MTF.

The steps, in order (every number used is returned in ``StretchResult.params``):

1. Normalise: the finite minimum and maximum of all channels (``input_black``/``input_white``,
   in the input's units) map linearly to 0 and 1, the same for every channel so colour is
   kept. The maximum rather than a percentile is used so no star core is clipped linearly.
2. Sky statistics on the normalised data: per channel an iteratively 3-sigma-clipped median
   and MAD-sigma (1.4826 * MAD), averaged over the channels (computed on a fixed strided
   sample of at most ~500 000 pixels, so they are fast and deterministic).
3. Black point below the sky: ``sky - 2.8 * sigma`` (the PixInsight STF / Siril default),
   so the displayed sky sits slightly above black with its noise visible. Values are then
   rescaled as ``y = (x - black_point) / (1 - black_point)``; SP, LP and HP live in this
   ``y`` space.
4. The curve: GHS with ``D`` solved by bisection so the sky lands on
   ``target_background`` (default 0.2), or the midtones transfer function with the midtone
   balance that puts the sky on the target (default 0.25, as STF/Siril autostretch do).
5. Colour: ``"luminance"`` (default) applies the curve to the mean of the three channels and
   scales R, G, B of each pixel by the same factor; a pixel whose brightest channel would
   pass 1 is scaled down as a whole, which keeps its hue and saturation. ``"linked"``
   applies the same curve to each channel.

NaN (or infinite) input pixels are ignored by the statistics and stay NaN in the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oscdeep.errors import ConfigError
from oscdeep.robust import median_sigma

STRETCH_METHODS = ("ghs", "mtf")
STRETCH_MODES = ("luminance", "linked")
DEFAULT_TARGET = {"ghs": 0.2, "mtf": 0.25}

GHS_DEFAULT_B = 6.0  # local intensity: a strong focus of contrast on the sky and faint signal
GHS_DEFAULT_HP = 0.97  # linear (protected) above this, so star cores keep some gradation
GHS_LP_SIGMAS = 1.0  # shadow protection this many sky sigmas below SP: noise below sky not crushed
GHS_MAX_D = 30.0  # upper end of the search for ln(D + 1)
SHADOWS_SIGMAS = 2.8  # black point = sky - 2.8 sigma, as the STF defaults
_STATS_SAMPLES = 500_000
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StretchOptions:
    """How to stretch. Every curve parameter is found from the data unless given here.

    ``target_background`` is the display level of the sky (None: 0.2 for GHS, 0.25 for MTF;
    GHS cannot put it at 0.5 or above). ``D`` is the GHS stretch factor as ln(D + 1), ``b``
    the local intensity, ``SP``/``LP``/``HP`` the symmetry, shadow and highlight protection
    points in the black-pointed ``y`` space; ``black_point`` is in the normalised [0, 1]
    space; ``midtone`` is the MTF midtones balance.
    """

    method: str = "ghs"
    target_background: float | None = None
    mode: str = "luminance"
    D: float | None = None
    b: float | None = None
    SP: float | None = None
    LP: float | None = None
    HP: float | None = None
    black_point: float | None = None
    midtone: float | None = None

    def __post_init__(self) -> None:
        if self.method not in STRETCH_METHODS:
            raise ConfigError(f"unknown stretch method {self.method!r}: use one of "
                              f"{', '.join(STRETCH_METHODS)}")
        if self.mode not in STRETCH_MODES:
            raise ConfigError(f"unknown stretch mode {self.mode!r}: use one of "
                              f"{', '.join(STRETCH_MODES)}")
        top = 0.5 if self.method == "ghs" else 1.0
        t = self.target_background
        if t is not None and not 0.0 < t < top:
            raise ConfigError(f"stretch target background {t!r} out of range: use a level "
                              f"between 0 and {top} (exclusive) for {self.method}")
        if self.black_point is not None and not 0.0 <= self.black_point < 1.0:
            raise ConfigError(f"stretch black point {self.black_point!r} out of range: "
                              "use 0 <= black_point < 1")
        if self.midtone is not None and not 0.0 < self.midtone < 1.0:
            raise ConfigError(f"MTF midtone {self.midtone!r} out of range: use 0 < m < 1")

    @property
    def target(self) -> float:
        """The sky's display level actually aimed at."""
        if self.target_background is not None:
            return self.target_background
        return DEFAULT_TARGET[self.method]


@dataclass(frozen=True)
class StretchResult:
    """A display image in [0, 1] (float32, NaN where the input had no data) and the
    parameters actually used (plain floats and strings, JSON-ready)."""

    image: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def parse_stretch_spec(spec: str) -> StretchOptions | None:
    """``"ghs"``, ``"mtf"``, ``"ghs:0.2"`` (target background) or ``"none"`` (no stretch)."""
    text = str(spec).strip().lower()
    name, _, arg = text.partition(":")
    allowed = "use ghs, mtf or none, optionally with a target background level as ghs:0.2"
    if name in ("none", "off") and not arg:
        return None
    if name not in STRETCH_METHODS:
        raise ConfigError(f"unknown stretch {spec!r}: {allowed}")
    if not arg:
        return StretchOptions(method=name)
    try:
        target = float(arg)
    except ValueError:
        raise ConfigError(f"bad stretch target {arg!r} in {spec!r}: {allowed}") from None
    if not math.isfinite(target):
        raise ConfigError(f"bad stretch target {arg!r} in {spec!r}: {allowed}")
    return StretchOptions(method=name, target_background=target)


# --- curves ---------------------------------------------------------------------------------


def _ghs_base(u: np.ndarray | float, D: float, b: float) -> tuple[Any, Any]:
    """The GHS base transformation f(u) for u >= 0 (f(0) = 0) and its derivative.

    b = -1 logarithmic, b < 0 integral family, b = 0 exponential, b > 0 hyperbolic family
    (b = 1 harmonic); written with log1p/expm1 so small D stays accurate.
    """
    if b == -1.0:
        return np.log1p(D * u), D / (1.0 + D * u)
    if b < 0.0:
        lq = np.log1p(-b * D * u)
        return -np.expm1((b + 1.0) / b * lq) / (D * (b + 1.0)), np.exp(lq / b)
    if b == 0.0:
        return -np.expm1(-D * u), D * np.exp(-D * u)
    lq = np.log1p(b * D * u)
    return -np.expm1(-lq / b), D * np.exp(-(1.0 + b) / b * lq)


class _GhsCurve:
    """The piecewise GHS with its normalisation constants, for x in [0, 1] (float64)."""

    def __init__(self, D: float, b: float, SP: float, LP: float, HP: float) -> None:
        self.D, self.b, self.SP, self.LP, self.HP = D, b, SP, LP, HP  # D internal: e^D' - 1
        f_lp, self.slope_lp = (float(v) for v in _ghs_base(SP - LP, D, b))
        f_hp, self.slope_hp = (float(v) for v in _ghs_base(HP - SP, D, b))
        self.t_lp, self.t_hp = -f_lp, f_hp
        self.t0 = self.t_lp - LP * self.slope_lp  # T(0) and T(1) before normalisation
        t1 = self.t_hp + (1.0 - HP) * self.slope_hp
        self.scale = 1.0 / (t1 - self.t0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        d = x - self.SP
        t = np.copysign(_ghs_base(np.abs(d), self.D, self.b)[0], d)  # point-reflected below SP
        t = np.where(x < self.LP, self.t_lp + (x - self.LP) * self.slope_lp, t)
        t = np.where(x > self.HP, self.t_hp + (x - self.HP) * self.slope_hp, t)
        return (t - self.t0) * self.scale

    def at(self, x: float) -> float:
        return float(self(np.array([x], dtype=np.float64))[0])


def _mtf_curve(m: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: (m - 1.0) * x / ((2.0 * m - 1.0) * x - m)


def _check_ghs(D: float, b: float, SP: float, LP: float, HP: float) -> None:
    if not (math.isfinite(D) and D >= 0.0):
        raise ConfigError(f"GHS stretch factor D={D!r} out of range: use D >= 0 (as ln(D+1))")
    if not math.isfinite(b):
        raise ConfigError(f"GHS local intensity b={b!r} is not a number")
    if not 0.0 <= LP <= SP <= HP <= 1.0:
        raise ConfigError(f"GHS points LP={LP!r}, SP={SP!r}, HP={HP!r} out of order: "
                          "use 0 <= LP <= SP <= HP <= 1")


def _chunked(func: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``func`` on float64 chunks of the clipped input, float32 out (bounded temporaries)."""
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, flat.size, _CHUNK):
        part = np.clip(flat[start:start + _CHUNK].astype(np.float64), 0.0, 1.0)
        out[start:start + _CHUNK] = np.clip(func(part), 0.0, 1.0)
    return out.reshape(np.shape(x))


def ghs(x: np.ndarray, *, D: float, b: float, SP: float, LP: float = 0.0,
        HP: float = 1.0) -> np.ndarray:
    """Generalized Hyperbolic Stretch of ``x`` (clipped to [0, 1]), float32 in [0, 1].

    ``D`` is the stretch factor given as ln(D + 1) (0 = no stretch), ``b`` the local
    intensity, ``SP`` the symmetry point where contrast is highest; below ``LP`` and above
    ``HP`` the curve continues as the straight tangent (shadow and highlight protection).
    Between LP and HP the curve is the base transformation of ``x - SP`` for ``x >= SP`` and
    its point reflection below SP; the whole is scaled so T(0) = 0 and T(1) = 1. It is
    continuous with a continuous slope, and increasing. NaN stays NaN.
    """
    D, b, SP, LP, HP = float(D), float(b), float(SP), float(LP), float(HP)
    _check_ghs(D, b, SP, LP, HP)
    if D == 0.0:
        return _chunked(lambda v: v, x)
    return _chunked(_GhsCurve(math.expm1(D), b, SP, LP, HP), x)


def mtf(x: np.ndarray, m: float) -> np.ndarray:
    """Midtones transfer function: 0 -> 0, m -> 0.5, 1 -> 1; float32 in [0, 1]."""
    m = float(m)
    if not 0.0 < m < 1.0:
        raise ConfigError(f"MTF midtone {m!r} out of range: use 0 < m < 1")
    return _chunked(_mtf_curve(m), x)


def mtf_balance(background: float, target: float) -> float:
    """The midtones balance m with mtf(background, m) == target."""
    x, t = float(background), float(target)
    if x <= 0.0:
        return 0.5
    m = x * (1.0 - t) / (x + t - 2.0 * t * x)
    return min(max(m, 1e-9), 1.0 - 1e-9)


def solve_ghs_d(background: float, target: float, *, b: float, SP: float, LP: float,
                HP: float) -> float:
    """Smallest ln(D + 1) in [0, GHS_MAX_D] putting ``background`` at ``target``.

    A coarse scan brackets the first crossing (the level is not monotonic in D for every
    parameter set), then bisection refines it. If the target cannot be reached, the D giving
    the level closest to it is returned.
    """
    _check_ghs(0.0, b, SP, LP, HP)

    def level(d: float) -> float:
        if d == 0.0:
            return background
        return _GhsCurve(math.expm1(d), b, SP, LP, HP).at(background)

    if level(0.0) >= target:
        return 0.0
    grid = np.linspace(0.0, GHS_MAX_D, 301)
    levels = [level(float(d)) for d in grid]
    above = [i for i, v in enumerate(levels) if v >= target]
    if not above:
        return float(grid[int(np.argmin([abs(v - target) for v in levels]))])
    lo, hi = float(grid[above[0] - 1]), float(grid[above[0]])
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if level(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --- statistics -----------------------------------------------------------------------------


def _sky_stats(x: np.ndarray) -> tuple[float, float]:
    """Sky level and noise sigma (clipped median, MAD-sigma), averaged over channels."""
    pixels = x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x.reshape(-1, 1)
    step = max(1, pixels.shape[0] // _STATS_SAMPLES)
    skies, sigmas = [], []
    for c in range(pixels.shape[1]):
        v = pixels[::step, c].astype(np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        med, sigma = median_sigma(v)
        for _ in range(4):
            if sigma <= 0.0:
                break
            kept = v[np.abs(v - med) <= 3.0 * sigma]
            if kept.size < 16:
                break
            med, sigma = median_sigma(kept)
        skies.append(med)
        sigmas.append(sigma)
    if not skies:
        return 0.0, 0.0
    return float(np.mean(skies)), float(np.mean(sigmas))


# --- the stretch ----------------------------------------------------------------------------


def _as_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"expected a real-valued image, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _channels_reduce(a: np.ndarray, op: Callable[..., np.ndarray]) -> np.ndarray:
    """``op`` across the channels of (H, W, 3) (a reduce over a 3-long axis is slow)."""
    return op(op(a[..., 0], a[..., 1]), a[..., 2])


def _apply(y: np.ndarray, curve: Callable[[np.ndarray], np.ndarray], mode: str) -> np.ndarray:
    """The curve on black-pointed data ``y``, per channel or on the luminance."""
    if mode == "linked" or y.ndim == 2:
        return _chunked(curve, y)
    lum = _channels_reduce(y, np.add) * np.float32(1.0 / 3.0)
    stretched = _chunked(curve, lum)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lum > 0.0, stretched / lum, np.float32(0.0))
    out = y * ratio[..., None]
    np.maximum(out, 0.0, out=out)
    peak = _channels_reduce(out, np.maximum)
    over = peak > 1.0
    out[over] /= peak[over][:, None]
    return np.clip(out, 0.0, 1.0, out=out)


def stretch(image: np.ndarray, options: StretchOptions = StretchOptions()) -> StretchResult:
    """Stretch a linear (H, W) or (H, W, 3) image to display values in [0, 1].

    See the module docstring for the steps; ``options`` overrides any parameter.
    """
    img = _as_image(image)
    finite = np.isfinite(img)
    all_finite = bool(finite.all())
    if not all_finite:
        img = np.where(finite, img, np.float32(np.nan))
    bad = ~(_channels_reduce(finite, np.logical_and) if img.ndim == 3 else finite)
    target = options.target
    params: dict[str, Any] = {"method": options.method, "mode": options.mode,
                              "target_background": target}
    if all_finite:
        lo, hi = float(img.min()), float(img.max())
    elif bad.all():
        lo = hi = 0.0
    else:
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    params.update(input_black=lo, input_white=hi)
    if not hi > lo:  # empty or flat image: nothing to show
        out = np.zeros_like(img)
        out[bad] = np.nan
        return StretchResult(out, params)
    span = hi - lo
    sky_in, sigma_in = _sky_stats(img)
    sky, sigma = (sky_in - lo) / span, sigma_in / span
    if options.black_point is not None:
        bp = options.black_point
    else:
        bp = min(max(sky - SHADOWS_SIGMAS * sigma, 0.0), sky, 1.0 - 1e-6)
    y = (img - np.float32(lo + bp * span)) * np.float32(1.0 / (span * (1.0 - bp)))
    background = min(max((sky - bp) / (1.0 - bp), 0.0), 1.0)
    noise = sigma / (1.0 - bp)
    params.update(sky=sky, sky_sigma=sigma, black_point=bp)

    curve: Callable[[np.ndarray], np.ndarray]
    if options.method == "ghs":
        b = GHS_DEFAULT_B if options.b is None else float(options.b)
        SP = background if options.SP is None else float(options.SP)
        HP = max(GHS_DEFAULT_HP, SP) if options.HP is None else float(options.HP)
        LP = max(0.0, SP - GHS_LP_SIGMAS * noise) if options.LP is None else float(options.LP)
        _check_ghs(0.0, b, SP, LP, HP)
        if options.D is not None:
            D = float(options.D)
        else:
            D = solve_ghs_d(background, target, b=b, SP=SP, LP=LP, HP=HP)
        _check_ghs(D, b, SP, LP, HP)
        curve = (lambda v: v) if D == 0.0 else _GhsCurve(math.expm1(D), b, SP, LP, HP)
        params.update(D=D, b=b, SP=SP, LP=LP, HP=HP)
    else:
        m = mtf_balance(background, target) if options.midtone is None else options.midtone
        curve = _mtf_curve(m)
        params.update(midtone=m)
    params["background"] = float(_chunked(curve, np.array([background]))[0])

    out = _apply(y, curve, options.mode)
    out[bad] = np.nan
    return StretchResult(out, params)


def auto_stretch(image: np.ndarray) -> np.ndarray:
    """The default GHS display stretch of a linear image (for previews), float32 in [0, 1]."""
    return stretch(image).image


__all__ = ["STRETCH_METHODS", "STRETCH_MODES", "StretchOptions", "StretchResult", "auto_stretch",
           "ghs", "mtf", "mtf_balance", "parse_stretch_spec", "solve_ghs_d", "stretch"]
