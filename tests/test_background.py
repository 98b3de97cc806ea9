"""Background extraction on seeded synthetic stacks with a known sky, gradient and nebula.

The corrected image is compared with the same scene rendered without the gradient (same stars,
same noise), so their difference is the model's error alone: no smoothing is needed to see it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from oscdeep.background import (
    BackgroundModel,
    BackgroundOptions,
    Circle,
    CorrectionMode,
    Rect,
    extract_background,
    parse_background_spec,
    parse_exclusion,
)
from oscdeep.errors import ConfigError
from oscdeep.synth import render_stars

H, W = 400, 600
SKY = np.array([900.0, 1000.0, 700.0])


@dataclass(frozen=True)
class Scene:
    clean: np.ndarray  # flat sky + nebula + stars + noise, float32 (H, W, 3)
    nebula: np.ndarray  # (H, W, 3) truth
    footprint: np.ndarray  # (H, W) where the nebula is non-zero
    gradient: np.ndarray  # (H, W, 3) injected light pollution

    @property
    def image(self) -> np.ndarray:
        return (self.clean + self.gradient).astype(np.float32)


def _blob(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a: float, b: float,
          angle: float) -> np.ndarray:
    """Smooth elliptical bump that falls to exactly 0 at its edge (a nebula with a border)."""
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    return np.clip(1.0 - (u / a) ** 2 - (v / b) ** 2, 0.0, None) ** 2


def make_scene(seed: int = 3, *, gradient: float = 0.25, nebula: float = 0.15) -> Scene:
    """600x400 linear RGB stack: flat sky, a red-leaning nebula near the centre covering
    ~16 % of the frame (peak ``nebula`` x sky), 400 stars, noise sigma 10 and a per-channel
    linear + quadratic gradient of peak-to-valley ~``gradient`` x sky."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    shape = (_blob(xx, yy, 0.50 * W, 0.50 * H, 133, 92, 0.4)
             + 0.6 * _blob(xx, yy, 0.58 * W, 0.42 * H, 61, 51, 0.0))
    shape /= shape.max()
    neb = shape[:, :, None] * np.array([1.0, 0.45, 0.35]) * nebula * SKY.mean()
    n = 400
    flux = np.exp(rng.normal(np.log(3000), 1.2, n))[:, None] * rng.uniform(0.7, 1.3, (n, 3))
    stars = render_stars((H, W, 3), rng.uniform(0, W, n), rng.uniform(0, H, n), flux, 3.0)
    clean = (SKY + neb + stars + rng.normal(0, 10.0, (H, W, 3))).astype(np.float32)
    u, v = (xx - W / 2) / (W / 2), (yy - H / 2) / (W / 2)
    lin = np.cos(0.6) * u + np.sin(0.6) * v
    shape_g = lin + 0.6 * lin ** 2 + 0.3 * u * v
    amp = gradient * SKY * np.array([1.2, 1.0, 0.8]) / np.ptp(shape_g)
    return Scene(clean, neb, shape > 0, shape_g[:, :, None] * amp)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene()


def _sky_away_from(footprint: np.ndarray, margin: int) -> np.ndarray:
    grown = cv2.dilate(footprint.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8))
    return ~grown.astype(bool)


def gradient_left(result, scene: Scene, where: np.ndarray) -> float:
    """Largest per-channel peak-to-valley of the model error on ``where``, as a fraction of
    the injected gradient's peak-to-valley."""
    err = (result.image - np.float32(result.pedestal)) - (scene.clean - SKY)
    ok = where & np.isfinite(err).all(axis=2)
    return max(float(np.ptp(err[:, :, c][ok]) / np.ptp(scene.gradient[:, :, c]))
               for c in range(3))


def flux_error(result, scene: Scene) -> float:
    """Largest per-channel relative error of the nebula's flux over its footprint."""
    err = (result.image - np.float32(result.pedestal)) - (scene.clean - SKY)
    fp = scene.footprint
    return max(abs(float(np.nansum(err[:, :, c][fp]) / scene.nebula[:, :, c][fp].sum()))
               for c in range(3))


def _inside(points: np.ndarray, region) -> np.ndarray:
    return region.contains(points[:, 0], points[:, 1])


# --- gradient removal and what the rejection buys -------------------------------------------

@pytest.mark.parametrize("spec", ["poly:2", "poly:3", "rbf", "rbf:0.3"])
def test_gradient_removed_and_nebula_kept(scene: Scene, spec: str) -> None:
    result = extract_background(scene.image, parse_background_spec(spec))
    assert result.image.dtype == np.float32 and result.image.shape == (H, W, 3)
    assert result.model.shape == (H, W, 3)
    assert gradient_left(result, scene, _sky_away_from(scene.footprint, 10)) <= 0.01
    assert flux_error(result, scene) <= 0.05
    # the nebula's core cells are rejected, not sampled
    core = Circle(0.5 * W, 0.5 * H, 60)
    assert not _inside(result.samples, core).any()
    assert _inside(result.rejected, core).sum() >= 15
    assert len(result.samples) >= 200
    assert all(0 < r < 2.0 for r in result.residual_rms)  # cell noise ~0.6 ADU


def test_without_rejection_the_nebula_is_eaten(scene: Scene) -> None:
    loose = BackgroundOptions(reject_high=None, reject_low=None)
    eaten = extract_background(scene.image, loose)
    kept = extract_background(scene.image, BackgroundOptions())
    assert flux_error(eaten, scene) > 0.3  # measured ~0.48: the fit bulges under the nebula
    assert flux_error(kept, scene) < 0.05
    assert len(eaten.samples) > len(kept.samples)


def test_rejection_grows_around_bright_groups(scene: Scene) -> None:
    grown = extract_background(scene.image, BackgroundOptions())
    tight = extract_background(scene.image, BackgroundOptions(reject_grow=0))
    assert len(grown.samples) < len(tight.samples)
    assert flux_error(grown, scene) <= flux_error(tight, scene) + 0.005


def test_stars_are_masked_in_a_dense_field(scene: Scene) -> None:
    rng = np.random.default_rng(9)
    n = 1000
    flux = np.exp(rng.normal(np.log(20000), 1.0, n))[:, None] * np.ones(3)
    extra = render_stars((H, W, 3), rng.uniform(0, W, n), rng.uniform(0, H, n), flux, 3.5)
    sky = ~scene.footprint

    def offset(options: BackgroundOptions) -> float:
        """Largest per-channel median model error (model minus truth) on the sky, in ADU."""
        result = extract_background(scene.image + extra, options)
        err = (result.image - np.float32(result.pedestal)) - (scene.clean + extra - SKY)
        return float(np.abs(np.median(err[sky], axis=0)).max())

    assert offset(BackgroundOptions()) < 0.3  # measured ~0.07 ADU
    assert offset(BackgroundOptions(star_grow=0)) > 0.6  # star halos lift the cells (~1.2)
    assert offset(BackgroundOptions(star_sigma=1000.0)) > 0.6  # no star mask at all (~1.0)


def test_pedestal_keeps_sky_level_and_colour(scene: Scene) -> None:
    result = extract_background(scene.image, BackgroundOptions())
    truth = np.median((SKY + scene.gradient).reshape(-1, 3), axis=0)
    np.testing.assert_allclose(result.pedestal, truth, rtol=0.01)
    sky = _sky_away_from(scene.footprint, 10)
    level = np.median(result.image[sky], axis=0)
    np.testing.assert_allclose(level, result.pedestal, rtol=0.01)


def test_same_default_at_any_sky_level(scene: Scene) -> None:
    options = parse_background_spec("rbf")
    base = extract_background(scene.image, options)
    scaled = extract_background(scene.image * np.float32(7.0), options)
    np.testing.assert_allclose(scaled.samples, base.samples, atol=0.05)
    np.testing.assert_allclose(scaled.model, 7.0 * base.model, rtol=1e-4)


def test_deterministic_and_byte_order(scene: Scene) -> None:
    a = extract_background(scene.image, parse_background_spec("rbf"))
    b = extract_background(scene.image.astype(">f4"), parse_background_spec("rbf"))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.model.tobytes() == b.model.tobytes()


def test_mono_image(scene: Scene) -> None:
    mono = scene.image[:, :, 1].copy()
    result = extract_background(mono, BackgroundOptions())
    assert result.image.shape == result.model.shape == (H, W)
    assert len(result.pedestal) == len(result.residual_rms) == 1
    err = (result.image - result.pedestal[0]) - (scene.clean[:, :, 1] - SKY[1])
    sky = _sky_away_from(scene.footprint, 10)
    assert np.ptp(err[sky]) <= 0.01 * np.ptp(scene.gradient[:, :, 1])


# --- exclusions, masks and missing data -----------------------------------------------------

def test_exclusion_regions_remove_samples(scene: Scene) -> None:
    rect, circle = Rect(20, 30, 180, 150), Circle(480, 300, 70)
    free = extract_background(scene.image, BackgroundOptions())
    excl = extract_background(scene.image, BackgroundOptions(exclusions=(rect, circle)))
    inside_before = 0
    for region in (rect, circle):
        inside_before += _inside(free.samples, region).sum()
        assert _inside(free.samples, region).sum() >= 10
        assert not _inside(excl.samples, region).any()
        assert _inside(excl.rejected, region).sum() >= 10
    assert len(free.samples) - len(excl.samples) >= 0.8 * inside_before
    assert gradient_left(excl, scene, _sky_away_from(scene.footprint, 10)) <= 0.01


def test_mask_argument_removes_samples(scene: Scene) -> None:
    mask = np.zeros((H, W), bool)
    mask[:, 450:] = True
    result = extract_background(scene.image, BackgroundOptions(), mask=mask)
    assert result.samples[:, 0].max() < 450
    assert (result.rejected[:, 0] > 460).sum() >= 40
    with pytest.raises(ValueError, match="mask shape"):
        extract_background(scene.image, BackgroundOptions(), mask=mask[:, :-1])


def test_nan_borders_ignored_and_stay_nan(scene: Scene) -> None:
    image = scene.image
    yy, xx = np.mgrid[0:H, 0:W]
    hole = (xx < 37) | (yy < 22) | (xx + yy > W + H - 160)  # as a rotated, shifted stack
    image[hole] = np.nan
    image[200, 300, 2] = np.nan  # one channel of one pixel
    result = extract_background(image, parse_background_spec("poly:2"))
    assert np.array_equal(np.isnan(result.image), np.isnan(image))
    assert np.isfinite(result.model).all()
    assert result.samples[:, 0].min() > 37 and result.samples[:, 1].min() > 22
    assert (result.samples.sum(axis=1) < W + H - 160).all()
    assert len(result.rejected) > 0
    sky = _sky_away_from(scene.footprint, 10) & ~hole
    assert gradient_left(result, scene, sky) <= 0.01
    assert flux_error(result, scene) <= 0.05


def test_too_few_cells_is_a_config_error(scene: Scene) -> None:
    corner_only = (Rect(0, 0, W - 30, H), Rect(0, 0, W, H - 60))
    options = BackgroundOptions(degree=1, exclusions=corner_only)
    with pytest.raises(ConfigError, match="usable sky cells"):
        extract_background(scene.image, options)


# --- divide mode ----------------------------------------------------------------------------

def test_divide_removes_vignetting(scene: Scene) -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    r2 = ((xx - (W - 1) / 2) ** 2 + (yy - (H - 1) / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2)
    vignetting = (1.0 - 0.2 * r2 - 0.15 * r2 ** 2).astype(np.float32)  # 35 % darker corners
    image = scene.clean * vignetting[:, :, None]
    result = extract_background(image, BackgroundOptions(degree=4, mode="divide"))
    ratio = result.image / scene.clean  # noise and stars divide out: the leftover vignetting
    sky = _sky_away_from(scene.footprint, 10)
    for c in range(3):
        left = np.ptp(ratio[:, :, c][sky]) / np.median(ratio[:, :, c][sky])
        assert left < 0.01, (c, left)
        assert result.pedestal[c] == pytest.approx(SKY[c] * np.median(vignetting), rel=0.02)


# --- options and spec parsing ---------------------------------------------------------------

@pytest.mark.parametrize("degree", [0, 5, 2.5, True, "3"])
def test_degree_validation(degree: object) -> None:
    with pytest.raises(ConfigError, match="degree"):
        BackgroundOptions(degree=degree)  # type: ignore[arg-type]


def test_option_validation() -> None:
    for bad in ({"model": "kriging"}, {"mode": "multiply"}, {"smoothing": -1.0},
                {"grid": 2}, {"reject_high": 0.0}, {"min_valid": 1.5},
                {"exclusions": ((1, 2, 3, 4),)}):
        with pytest.raises(ConfigError):
            BackgroundOptions(**bad)  # type: ignore[arg-type]
    ok = BackgroundOptions(model="Polynomial", mode="div", degree=4)
    assert ok.model is BackgroundModel.POLY and ok.mode is CorrectionMode.DIVIDE


@pytest.mark.parametrize(("text", "model", "degree", "smoothing"), [
    ("poly:3", "poly", 3, 1.0),
    ("poly", "poly", 2, 1.0),
    (" POLY:1 ", "poly", 1, 1.0),
    ("rbf", "rbf", 2, 1.0),
    ("rbf:0.5", "rbf", 2, 0.5),
    ("rbf:0", "rbf", 2, 0.0),
])
def test_parse_background_spec(text: str, model: str, degree: int, smoothing: float) -> None:
    options = parse_background_spec(text)
    assert options is not None
    assert (options.model, options.degree, options.smoothing) == (model, degree, smoothing)
    assert parse_background_spec(options.spec) == options


@pytest.mark.parametrize("text", ["none", "None", "off"])
def test_parse_background_spec_none(text: str) -> None:
    assert parse_background_spec(text) is None


@pytest.mark.parametrize(("text", "named"), [
    ("poly:7", "7"), ("poly:2.5", "2.5"), ("poly:", "empty"), ("rbf:-1", "-1"),
    ("rbf:soft", "soft"), ("kriging", "kriging"), ("none:3", "none:3"), ("", "''"),
])
def test_parse_background_spec_errors(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_background_spec(text)
    message = str(info.value)
    assert named in message and "\n" not in message
    if "degree" not in message and "smoothing" not in message:
        assert "poly" in message and "rbf" in message and "none" in message


def test_parse_exclusion() -> None:
    assert parse_exclusion("rect:10,20,5,40") == Rect(5, 20, 10, 40)
    assert parse_exclusion("circle: 100, 50, 25") == Circle(100, 50, 25)
    for bad in ("rect:1,2,3", "circle:1,2,-3", "square:1,2,3,4", "circle:a,b,c"):
        with pytest.raises(ConfigError):
            parse_exclusion(bad)
    replaced = dataclasses.replace(BackgroundOptions(), exclusions=[Circle(1, 2, 3)])
    assert replaced.exclusions == (Circle(1, 2, 3),)
