"""Colour calibration: neutral sky, star white balance, saturation boost, spec parsing.

The synthetic stacks have a known truth: a neutral sky, a reddish nebula, stars with a spread
of colours whose population is symmetric about white (each colour comes with its mirror
image, same flux), then a camera colour cast (per-channel gains and sky offsets) and noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from oscdeep.color import (
    LUMA_WEIGHTS,
    ColorOptions,
    ColorResult,
    boost_saturation,
    calibrate_color,
    measure_star_colors,
    neutralize_background,
    parse_color_spec,
    star_white_balance,
)
from oscdeep.errors import ConfigError

GAINS = np.array([0.65, 1.0, 1.4])
SKY_OFFSETS = np.array([180.0, 40.0, -120.0])
SKY = 1000.0
FWHM = 3.2
CLIP = 65535.0
BORDER = 16  # NaN rows and columns at the top and left (no data after registration)


def _render(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux_rgb: np.ndarray,
            radius: int = 14) -> np.ndarray:
    """Pixel-integrated Gaussian stars, (H, W, 3) float64."""
    h, w = shape
    out = np.zeros((h, w, 3))
    s = FWHM / (2 * math.sqrt(2 * math.log(2))) * math.sqrt(2)
    for xi, yi, f in zip(x, y, flux_rgb):
        cx, cy = round(xi), round(yi)
        x0, x1 = max(cx - radius, 0), min(cx + radius + 1, w)
        y0, y1 = max(cy - radius, 0), min(cy + radius + 1, h)
        px = np.diff(0.5 * erf((np.arange(x0, x1 + 1) - 0.5 - xi) / s))
        py = np.diff(0.5 * erf((np.arange(y0, y1 + 1) - 0.5 - yi) / s))
        out[y0:y1, x0:x1] += (py[:, None] * px[None, :])[..., None] * f
    return out


def make_stack(seed: int, *, width: int = 800, height: int = 600, n: int = 300,
               n_saturated: int = 0, nan_border: bool = True) -> tuple[np.ndarray, dict]:
    """A linear RGB stack with a colour cast, and its truth."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(5, width - 6, n)
    y = rng.uniform(5, height - 6, n)
    flux = np.exp(rng.uniform(math.log(3e3), math.log(2.5e5), n))
    half = n // 2
    u = rng.normal(0, 0.25, half)  # ln(R/G): a realistic spread of star colours
    v = rng.normal(0, 0.05, half)
    u = np.concatenate([u, -u, np.zeros(n - 2 * half)])
    v = np.concatenate([v, -v, np.zeros(n - 2 * half)])
    flux[half:2 * half] = flux[:half]  # mirror pairs: same flux, opposite colour
    colour = np.stack([np.exp(u), np.ones(n), np.exp(-u + v)], axis=1)
    colour /= colour.sum(axis=1, keepdims=True) / 3.0
    f_rgb = flux[:, None] * colour
    if n_saturated:
        sx = rng.uniform(40, width - 40, n_saturated)
        sy = rng.uniform(40, height - 40, n_saturated)
        # half clip in every channel, half only in red (very red stars)
        hot = np.arange(n_saturated) < n_saturated // 2
        sf = np.where(hot, np.exp(rng.uniform(math.log(2e6), math.log(8e6), n_saturated)),
                      np.exp(rng.uniform(math.log(2.2e6), math.log(4.4e6), n_saturated)))
        sc = np.where(hot[:, None], [1.6, 1.0, 0.5], [6.0, 1.0, 0.3])
        sc = sc / sc.sum(axis=1, keepdims=True) * 3.0
        x, y = np.concatenate([x, sx]), np.concatenate([y, sy])
        f_rgb = np.concatenate([f_rgb, sf[:, None] * sc / 3.0])
        colour = np.concatenate([colour, sc])
    stars = _render((height, width), x, y, f_rgb)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((xx - 0.75 * width) / (0.15 * width)) ** 2
                    + ((yy - 0.3 * height) / (0.2 * height)) ** 2))
    nebula = blob[..., None] * np.array([120.0, 25.0, 40.0])
    camera = GAINS * (SKY + nebula + stars) + SKY_OFFSETS
    noise = rng.normal(0, 1, camera.shape) * np.sqrt(12.0**2 + camera / 4.0)
    img = np.clip(camera + noise, 0, CLIP).astype(np.float32)
    # saturated: the star's brightest pixel clips in some channel
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    near = [camera[np.clip(iy + dy, 0, height - 1), np.clip(ix + dx, 0, width - 1)]
            for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    saturated = np.max(near, axis=(0, 2)) >= CLIP
    if nan_border:
        img[:BORDER] = np.nan
        img[:, :BORDER] = np.nan
    return img, {"x": x, "y": y, "colour": colour, "flux": f_rgb, "stars": stars,
                 "nebula": nebula, "saturated": saturated, "camera": camera}


def _photometry(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3) aperture flux (r = 5 px) minus the median of an 8-12 px annulus (test's own)."""
    yy, xx = np.mgrid[-12:13, -12:13]
    r = np.hypot(xx, yy)
    out = np.zeros((len(x), 3))
    for i, (xi, yi) in enumerate(zip(np.rint(x).astype(int), np.rint(y).astype(int))):
        stamp = img[yi - 12:yi + 13, xi - 12:xi + 13].astype(np.float64)
        bkg = np.median(stamp[(r >= 8) & (r <= 12)], axis=0)
        out[i] = (stamp[r <= 5] - bkg).sum(axis=0)
    return out


def _test_stars(truth: dict, shape: tuple[int, ...]) -> np.ndarray:
    """Isolated, unsaturated, bright stars away from the edges and the NaN border."""
    x, y = truth["x"], truth["y"]
    h, w = shape[:2]
    dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(dist, np.inf)
    peak = truth["flux"].max(axis=1) * GAINS.max() / (2 * math.pi * (FWHM / 2.3548) ** 2)
    return np.flatnonzero(~truth["saturated"] & (dist.min(axis=1) > 16)
                          & (truth["flux"].sum(axis=1) > 3e4) & (peak < 0.8 * CLIP)
                          & (x > BORDER + 14) & (y > BORDER + 14)
                          & (x < w - 14) & (y < h - 14))


def _colour_errors(result: ColorResult, truth: dict) -> np.ndarray:
    """Median over bright isolated stars of (output colour / true colour) - 1, for R/G and
    B/G: how far the calibrated star colours are from the truth (the median of per-star
    ratios; a ratio of the two medians adds the noise of where each median falls)."""
    idx = _test_stars(truth, result.image.shape)
    assert len(idx) >= 60
    flux = _photometry(result.image, truth["x"][idx], truth["y"][idx])
    measured = flux[:, [0, 2]] / flux[:, [1]]
    true = truth["colour"][idx][:, [0, 2]] / truth["colour"][idx][:, [1]]
    return np.median(measured / true, axis=0) - 1.0


def _sky_spread(result: ColorResult, truth: dict) -> float:
    """Largest difference of the output's per-channel sky from their mean, relative, measured
    on pixels that the truth says are pure sky."""
    pure = (truth["stars"].max(axis=2) < 0.3) & (truth["nebula"].max(axis=2) < 0.3)
    pure &= np.isfinite(result.image).all(axis=2)
    levels = np.array([np.median(result.image[..., c][pure]) for c in range(3)])
    return float(np.max(np.abs(levels - levels.mean())) / levels.mean())


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, dict]:
    return make_stack(3)


@pytest.fixture(scope="module")
def saturated_stack() -> tuple[np.ndarray, dict]:
    return make_stack(5, n_saturated=25)


@pytest.mark.parametrize("reference", ["average", "solar"])
def test_calibration_recovers_star_colours_and_neutral_sky(stack, reference):
    img, truth = stack
    before = _sky_spread(ColorResult(img, np.zeros(3), np.zeros(3), np.ones(3), 0, None), truth)
    assert before > 0.1  # the cast is there to begin with
    result = calibrate_color(img, ColorOptions(reference=reference))
    errors = _colour_errors(result, truth)
    assert np.all(np.abs(errors) < 0.03), errors
    assert _sky_spread(result, truth) < 0.01
    # the measured sky levels are those of the cast, and the mean level is kept
    np.testing.assert_allclose(result.sky_levels, GAINS * SKY + SKY_OFFSETS, rtol=0.01)
    assert abs(result.offsets.sum()) < 1e-6
    assert result.factors[1] == 1.0
    assert result.reference == reference
    assert f"white balance {reference} from {result.n_stars} stars" in result.describe()
    assert result.n_stars >= (150 if reference == "average" else 50)
    # NaN borders are ignored and stay NaN, nowhere else
    np.testing.assert_array_equal(np.isnan(result.image), np.isnan(img))
    assert result.image.dtype == np.float32 and result.image.shape == img.shape


def test_saturated_stars_are_excluded(saturated_stack):
    img, truth = saturated_stack
    stars = measure_star_colors(img)
    sat = truth["saturated"]
    gap = np.hypot(stars.x[:, None] - truth["x"][sat][None, :],
                   stars.y[:, None] - truth["y"][sat][None, :]).min(axis=1)
    assert gap.min() > 3.0
    assert sat.sum() >= 20 and stars.rejected.get("saturated", 0) >= 0.8 * sat.sum()
    result = calibrate_color(img)
    errors = _colour_errors(result, truth)
    assert np.all(np.abs(errors) < 0.03), errors
    assert _sky_spread(result, truth) < 0.01


def test_too_few_stars_falls_back_to_unit_factors():
    img, truth = make_stack(7, n=4, nan_border=False)
    factors, count = star_white_balance(img)
    np.testing.assert_array_equal(factors, np.ones(3))
    assert 1 <= count <= 4
    result = calibrate_color(img)
    np.testing.assert_array_equal(result.factors, np.ones(3))
    assert result.n_stars == count
    assert _sky_spread(result, truth) < 0.01


def test_background_only_neutralises_sky_and_keeps_star_colours(stack):
    img, truth = stack
    out, sky, offsets = neutralize_background(img)
    np.testing.assert_allclose(offsets, sky.mean() - sky)
    result = ColorResult(out, sky, offsets, np.ones(3), 0, None)
    assert _sky_spread(result, truth) < 0.01
    background = calibrate_color(img, parse_color_spec("background"))
    np.testing.assert_array_equal(background.factors, np.ones(3))
    np.testing.assert_allclose(background.image, out, rtol=1e-6, equal_nan=True)
    # camera colours are untouched: the median R/G is the gain ratio
    errors = _colour_errors(background, truth)
    np.testing.assert_allclose(errors + 1, GAINS[[0, 2]] / GAINS[1], rtol=0.03)


def test_mask_keeps_a_region_out_of_the_sky():
    """A dark dust cloud over 70 % of the frame is darker than the sky (and redder): the
    darkest tiles would pick it; masked, the sky comes from the rest."""
    h, w = 300, 400
    rng = np.random.default_rng(11)
    sky = np.array([500.0, 650.0, 820.0])
    img = sky + rng.normal(0, 10, (h, w, 3))
    cloud = np.zeros((h, w), bool)
    cloud[:, : int(0.7 * w)] = True
    img[cloud] -= np.array([20.0, 60.0, 90.0])
    img = img.astype(np.float32)
    _, levels, _ = neutralize_background(img, mask=cloud)
    np.testing.assert_allclose(levels, sky, rtol=0.002)
    _, unmasked, _ = neutralize_background(img)
    np.testing.assert_allclose(unmasked, sky - [20.0, 60.0, 90.0], rtol=0.002)


def test_deterministic(stack):
    img, _ = stack
    a, b = calibrate_color(img), calibrate_color(img)
    assert a.image.tobytes() == b.image.tobytes()
    np.testing.assert_array_equal(a.factors, b.factors)


def test_all_nan_image_is_left_alone():
    img = np.full((64, 64, 3), np.nan, np.float32)
    result = calibrate_color(img)
    assert np.isnan(result.image).all()
    np.testing.assert_array_equal(result.factors, np.ones(3))
    assert result.n_stars == 0


@pytest.mark.parametrize(("spec", "expected"), [
    ("auto", ColorOptions(reference="average")),
    ("Average", ColorOptions(reference="average")),
    (" solar ", ColorOptions(reference="solar")),
    ("background", ColorOptions(white_balance=False)),
    ("none", None),
])
def test_parse_color_spec(spec, expected):
    assert parse_color_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "white", "solar:2", "g2v"])
def test_parse_color_spec_rejects_unknown(spec):
    with pytest.raises(ConfigError, match="use one of auto, none, average, solar, background"):
        parse_color_spec(spec)


def test_bad_options_raise():
    with pytest.raises(ConfigError):
        ColorOptions(reference="g2v")
    with pytest.raises(ConfigError):
        star_white_balance(np.zeros((8, 8, 3), np.float32), reference="nope")
    with pytest.raises(ConfigError):
        boost_saturation(np.zeros((2, 2, 3), np.float32), -1.5)


@pytest.fixture(scope="module")
def display() -> np.ndarray:
    rng = np.random.default_rng(2)
    grey = rng.uniform(0.05, 0.95, (120, 160, 1))
    rgb = np.clip(grey + rng.normal(0, 0.08, (120, 160, 3)), 0, 1).astype(np.float32)
    rgb[:10] = rng.uniform(0.0, 0.05, (10, 160, 3))  # near black
    rgb[10:20] = rng.uniform(0.95, 1.0, (10, 160, 3))  # near white
    rgb[20, 0] = (1.0, 0.0, 0.0)  # fully saturated
    rgb[21, :4] = np.nan
    return rgb


@pytest.mark.parametrize("amount", [0.5, 1.0, 3.0, -0.5, -1.0])
def test_boost_saturation_keeps_luminance_and_range(display, amount):
    out = boost_saturation(display, amount)
    finite = np.isfinite(display).all(axis=2)
    np.testing.assert_array_equal(np.isnan(out).any(axis=2), ~finite)
    assert out.dtype == np.float32
    assert np.nanmin(out) >= 0.0 and np.nanmax(out) <= 1.0
    luma_in, luma_out = display @ LUMA_WEIGHTS, out @ LUMA_WEIGHTS
    assert np.nanmax(np.abs(luma_out - luma_in)) < 1e-3
    chroma_in = np.linalg.norm(display - luma_in[..., None], axis=2)[finite]
    chroma_out = np.linalg.norm(out - luma_out[..., None], axis=2)[finite]
    ratio = chroma_out / np.maximum(chroma_in, 1e-9)
    if amount > 0:
        # the full scale where it fits in [0, 1]; elsewhere as far as the range allows
        full = luma_in[..., None] + (1 + amount) * (display - luma_in[..., None])
        fits = ((full >= 0) & (full <= 1)).all(axis=2)[finite]
        np.testing.assert_allclose(ratio[fits & (chroma_in > 1e-3)], 1 + amount, rtol=1e-3)
        assert fits.mean() > 0.2
        limited = out[finite][~fits]
        assert np.all((limited.min(axis=1) < 1e-5) | (limited.max(axis=1) > 1 - 1e-5))
        assert np.all(ratio[~fits] >= 1 - 1e-4)
    else:
        np.testing.assert_allclose(chroma_out, (1 + amount) * chroma_in, atol=1e-5)


def test_boost_saturation_zero_is_identity(display):
    out = boost_saturation(display, 0.0)
    assert out.tobytes() == display.tobytes()
    assert out is not display


def test_real_seestar_frame():
    """A debayered Seestar S50 sub (IMX462): a plausible white balance (blue weakest, as on
    this sensor), the two references within a few percent of each other."""
    from oscdeep.debayer import debayer
    from oscdeep.io.fits import read_fits_image

    from .conftest import SEESTAR, require_real

    require_real(SEESTAR)
    path = next(SEESTAR.glob("Light_NGC7023_*.fit"))
    mosaic, header = read_fits_image(path)
    rgb = debayer(mosaic.astype(np.float32), str(header["BAYERPAT"]))
    average = calibrate_color(rgb)
    solar = calibrate_color(rgb, parse_color_spec("solar"))
    assert average.n_stars >= 80 and solar.n_stars >= 25
    assert 1.0 < average.factors[0] < 1.6 and 1.5 < average.factors[2] < 2.6
    np.testing.assert_allclose(solar.factors, average.factors, rtol=0.05)
    # the calibrated sky, measured again, is grey
    levels = neutralize_background(average.image)[1]
    assert np.ptp(levels) < 0.002 * levels.mean()
