"""Registration by star patterns, against star lists with a known true transform.

Star lists are made directly (no detector): true sky positions -> the frame's transform ->
centroid noise that grows for faint stars -> missed detections, spurious points (noise and
bright hot pixels) -> clipped to the frame. Errors are measured at the frame corners.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytest

from oscdeep.errors import ConfigError, OscdeepError
from oscdeep.register import (MatchOptions, RegistrationError, RegistrationResult, StarField,
                              choose_reference, find_transform, register_frames)
from oscdeep.synth import NightConfig, apply_transform, make_night, make_transform
from oscdeep.transform import (Transform, TransformFitError, TransformModel, corner_errors,
                               fit_transform)

W, H = 1200, 800
CENTER = ((W - 1) / 2, (H - 1) / 2)


# --- synthetic star lists -------------------------------------------------------------------

def sky_stars(n: int, rng: np.random.Generator, pad: float = 400.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Sky positions around the reference grid and fluxes (e-/s) from a power law."""
    xy = np.column_stack([rng.uniform(-pad, W + pad, n), rng.uniform(-pad, H + pad, n)])
    u = rng.random(n)
    flux = 2.0 * (1 - u * (1 - (3e5 / 2.0) ** -0.6)) ** (-1 / 0.6)
    return xy, flux


def observe(sky_xy: np.ndarray, sky_flux: np.ndarray, truth: np.ndarray, *,
            rng: np.random.Generator, fwhm: float = 3.0, transmission: float = 1.0,
            width: int = W, height: int = H, snr_min: float = 10.0, drop: float = 0.05,
            spurious: int = 15, hot: int = 3, sigma_floor: float = 0.015
            ) -> tuple[np.ndarray, np.ndarray]:
    """A detector's star list of one frame: ``truth`` maps sky (reference) -> frame pixels.

    Centroid error per axis = PSF sigma / SNR (120 s, sky 3 e-/s/px), at least
    ``sigma_floor``; stars below ``snr_min`` are not detected (at SNR 10 and FWHM 3 px the
    error is 0.13 px, for the brightest 0.015 px).
    """
    x, y = apply_transform(truth, sky_xy[:, 0], sky_xy[:, 1])
    electrons = sky_flux * transmission * 120.0
    sigma_psf = fwhm / 2.3548
    snr = electrons / np.sqrt(electrons + 4 * math.pi * sigma_psf ** 2 * 3.0 * 120.0)
    sigma = np.maximum(sigma_floor, sigma_psf / snr)
    keep = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1) & (snr >= snr_min)
    keep &= rng.random(len(x)) >= drop
    n = int(keep.sum())
    xy = np.column_stack([x, y])[keep] + rng.normal(0, 1, (n, 2)) * sigma[keep, None]
    flux = electrons[keep] * np.exp(rng.normal(0, 0.05, n))
    faint = np.percentile(flux, 20) if n else 1.0
    bright = flux.max() if n else 1.0
    extra = np.column_stack([rng.uniform(0, width - 1, spurious + hot),
                             rng.uniform(0, height - 1, spurious + hot)])
    extra_flux = np.concatenate([rng.uniform(0.5, 1.0, spurious) * faint,
                                 rng.uniform(1.0, 10.0, hot) * bright])
    return np.concatenate([xy, extra]), np.concatenate([flux, extra_flux])


def pair(truth: np.ndarray, *, seed: int = 0, n_sky: int = 1500, **kw
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame and reference lists (xy, flux each) of one sky; the reference has T = I."""
    rng = np.random.default_rng(seed)
    sky_xy, sky_flux = sky_stars(n_sky, rng)
    ref_xy, ref_flux = observe(sky_xy, sky_flux, np.eye(3), rng=rng, **kw)
    frame_xy, frame_flux = observe(sky_xy, sky_flux, truth, rng=rng, **kw)
    return frame_xy, frame_flux, ref_xy, ref_flux


def check(truth: np.ndarray, result: RegistrationResult, limit: float) -> np.ndarray:
    """Corner errors of the found frame -> reference map against the true one."""
    err = corner_errors(result.transform, np.linalg.inv(truth), W, H)
    assert err.max() <= limit, f"corner errors {err.round(3)} px"
    return err


# --- Transform ------------------------------------------------------------------------------

def test_transform_algebra() -> None:
    t = Transform(make_transform((12.5, -7.0), 33.0, 1.05, CENTER), TransformModel.SIMILARITY)
    pts = np.random.default_rng(1).uniform(0, 1000, (50, 2))
    assert np.allclose(t.inverse().apply(t.apply(pts)), pts, atol=1e-9)
    assert math.isclose(t.scale, 1.05, rel_tol=1e-12)
    assert math.isclose(t.rotation_deg, 33.0, abs_tol=1e-9)
    assert not t.is_mirrored
    u = Transform(make_transform((3.0, 4.0), -90.0), TransformModel.AFFINE)
    both = u.compose(t)
    assert np.allclose(both.apply(pts), u.apply(t.apply(pts)))
    assert both.model == TransformModel.AFFINE
    back = Transform.from_list(t.to_list(), "similarity")
    assert back == t and len(t.to_list()) == 9 and t.to_list()[8] == 1.0
    assert t.apply(np.array([1.0, 2.0])).shape == (2,)
    mirror = Transform(np.array([[-1.0, 0, 10], [0, 1, 0], [0, 0, 1]]))
    assert mirror.is_mirrored and math.isclose(abs(mirror.rotation_deg), 180.0)
    with pytest.raises(ValueError):
        Transform(np.eye(2))
    with pytest.raises(AttributeError):
        t.matrix = np.eye(3)  # type: ignore[misc]
    with pytest.raises(ValueError):
        t.matrix[0, 0] = 2.0


@pytest.mark.parametrize("model", list(TransformModel))
def test_fit_transform_recovers_exact_transforms(model: TransformModel) -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 1000, (40, 2))
    truth = {
        TransformModel.SHIFT: make_transform((5.5, -3.25)),
        TransformModel.SIMILARITY: make_transform((5.5, -3.25), 141.0, 0.93, CENTER)
        @ np.diag([-1.0, 1.0, 1.0]),  # mirrored
        TransformModel.AFFINE: np.array([[1.01, 0.02, 4.0], [-0.015, 0.99, -8.0], [0, 0, 1]]),
        TransformModel.HOMOGRAPHY: np.array([[1.01, 0.02, 4.0], [-0.015, 0.99, -8.0],
                                             [2e-5, -1e-5, 1.0]]),
    }[model]
    dst = Transform(truth).apply(src)
    fit = fit_transform(src, dst, model)
    assert fit.model == model
    assert np.abs(fit.apply(src) - dst).max() < 1e-7
    noisy = dst + rng.normal(0, 0.05, dst.shape)
    weights = np.full(len(src), 2.0)
    assert np.abs(fit_transform(src, noisy, model, weights=weights).apply(src) - dst).max() < 0.1
    with pytest.raises(TransformFitError):
        fit_transform(src[: model.min_points - 1], dst[: model.min_points - 1], model)


def test_weights_favour_precise_stars() -> None:
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 1000, (200, 2))
    sigma = np.where(np.arange(200) < 50, 0.01, 0.3)
    dst = src + 7.0 + rng.normal(0, 1, src.shape) * sigma[:, None]
    plain = fit_transform(src, dst, "affine")
    weighted = fit_transform(src, dst, "affine", weights=1 / sigma ** 2)
    truth = make_transform((7.0, 7.0))
    assert corner_errors(weighted, truth, W, H).max() < 0.5 * corner_errors(plain, truth, W,
                                                                            H).max()


# --- registration ---------------------------------------------------------------------------

def test_night_corner_errors_meet_the_target() -> None:
    """A synthetic night (seeing 2.5-8 px, a meridian flip, an 8 % rescaled frame, a cloudy
    frame): every frame registers; corner error median <= 0.05 px, max <= 0.15 px."""
    cfg = NightConfig(n_lights=20, include_flip=True, include_scale=True, seed=7)
    night = make_night(cfg)
    sky_xy = np.column_stack([night.sky.x, night.sky.y])
    rng = np.random.default_rng(11)
    lists = [observe(sky_xy, night.sky.flux[:, 1], f.transform, rng=rng, fwhm=f.fwhm,
                     transmission=f.transmission) for f in night.lights]
    ref = StarField(*lists[0])
    errors, seconds = [], 0.0
    for frame, (xy, flux) in zip(night.lights[1:], lists[1:], strict=True):
        start = time.perf_counter()
        result = find_transform(xy, ref, frame_flux=flux)
        seconds += time.perf_counter() - start
        assert result.transform.model == TransformModel.AFFINE
        assert result.n_inliers >= 100 and result.rms < 0.3
        errors.append(check(frame.transform, result, 0.15))
        if frame.flip:
            assert abs(abs(result.transform.rotation_deg) - 180.0) < 1.0
        if frame.scaled:
            assert math.isclose(result.transform.scale, 1 / 1.08, rel_tol=1e-3)
    assert any(f.flip for f in night.lights) and any(f.scaled for f in night.lights)
    errors_px = np.concatenate(errors)
    assert np.median(errors_px) <= 0.05 and errors_px.max() <= 0.15
    print(f"\nnight: corner error median {np.median(errors_px):.4f} px, "
          f"max {errors_px.max():.4f} px, {1000 * seconds / 19:.1f} ms/frame")


@pytest.mark.parametrize("rotation", [0.0, 37.0, 90.0, 180.0, -135.0])
def test_any_rotation(rotation: float) -> None:
    truth = make_transform((6.0, -4.0), rotation, 1.0, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=int(rotation) % 97)
    result = find_transform(frame_xy, ref_xy, frame_flux=frame_flux, ref_flux=ref_flux)
    check(truth, result, 0.1)
    assert math.isclose(result.transform.rotation_deg % 360, -rotation % 360, abs_tol=0.01) \
        or math.isclose(abs(result.transform.rotation_deg), 180.0, abs_tol=0.01)


@pytest.mark.parametrize("model", [None, "similarity", "affine", "homography"])
def test_mirror_image(model: str | None) -> None:
    """x -> -x (a diagonal or camera flipped in software), and a mirror with a rotation."""
    mirror = np.array([[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for seed, truth in enumerate((mirror, make_transform((4.0, 9.0), 33.0, 1.0, CENTER)
                                  @ mirror)):
        frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=20 + seed)
        result = find_transform(frame_xy, ref_xy, frame_flux=frame_flux, ref_flux=ref_flux,
                                model=model)
        assert result.transform.is_mirrored
        check(truth, result, 0.1)


@pytest.mark.parametrize("scale", [0.92, 1.08])
def test_rescaled_frame(scale: float) -> None:
    truth = make_transform((10.0, 5.0), 20.0, scale, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=30)
    result = find_transform(frame_xy, ref_xy, frame_flux=frame_flux, ref_flux=ref_flux)
    assert math.isclose(result.transform.scale, 1 / scale, rel_tol=1e-3)
    check(truth, result, 0.1)


def test_partial_overlap() -> None:
    """Frames shifted by 30 % of their size in x and y: only about half the field overlaps."""
    truth = make_transform((0.3 * W, 0.3 * H), 1.0, 1.0, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=40)
    result = find_transform(frame_xy, ref_xy, frame_flux=frame_flux, ref_flux=ref_flux)
    assert result.n_inliers >= 50
    check(truth, result, 0.1)


def test_sparse_field() -> None:
    """Eight stars (one missed in the frame) and one spurious point in each list."""
    rng = np.random.default_rng(50)
    sky_xy = np.column_stack([rng.uniform(60, W - 60, 8), rng.uniform(60, H - 60, 8)])
    truth = make_transform((7.0, -5.0), 12.0, 1.0, CENTER)
    frame_sky = np.column_stack(apply_transform(truth, sky_xy[:, 0], sky_xy[:, 1]))
    sigma = np.linspace(0.02, 0.1, 8)[:, None]
    ref_xy = sky_xy + rng.normal(0, 1, (8, 2)) * sigma
    frame_xy = frame_sky + rng.normal(0, 1, (8, 2)) * sigma
    inside = np.all((frame_xy > 0) & (frame_xy < (W - 1, H - 1)), axis=1)
    assert inside.sum() >= 7
    frame_xy = np.vstack([frame_xy[inside][:-1] if inside.sum() == 8 else frame_xy[inside],
                          [[300.0, 200.0]]])
    ref_xy = np.vstack([ref_xy, [[900.0, 650.0]]])
    result = find_transform(frame_xy, ref_xy)  # list order = brightness order
    assert result.n_inliers >= 6 and result.transform.model == TransformModel.SIMILARITY
    check(truth, result, 0.3)
    frames = result.pairs[:, 0]
    assert np.all(result.pairs[:, 1] < 8) and len(frames) == len(set(frames.tolist()))


def test_dense_field() -> None:
    """About 5000 detected stars per frame (timed, reported, not asserted)."""
    truth = make_transform((8.0, 3.0), 12.0, 1.0, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=60, n_sky=16000, snr_min=3.0,
                                                  spurious=200)
    assert len(frame_xy) > 4000 and len(ref_xy) > 4000
    ref = StarField(ref_xy, ref_flux)
    find_transform(frame_xy, ref, frame_flux=frame_flux)  # builds the reference's tree
    start = time.perf_counter()
    result = find_transform(frame_xy, ref, frame_flux=frame_flux)
    elapsed = time.perf_counter() - start
    assert result.n_inliers > 3000
    err = check(truth, result, 0.05)
    print(f"\ndense: {len(frame_xy)} x {len(ref_xy)} stars, {1000 * elapsed:.1f} ms, "
          f"{result.n_inliers} inliers, corner error max {err.max():.4f} px")


@pytest.mark.parametrize("n", [8, 40, 300, 3000])
def test_noise_is_reported_not_misregistered(n: int) -> None:
    rng = np.random.default_rng(n)
    truth = make_transform((8.0, 3.0), 12.0, 1.0, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=70)
    noise = np.column_stack([rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)])
    for a, b in ((noise, ref_xy),
                 (noise, np.column_stack([rng.uniform(0, W - 1, n),
                                          rng.uniform(0, H - 1, n)]))):
        with pytest.raises(RegistrationError) as info:
            find_transform(a, b)
        assert info.value.reason and isinstance(info.value, OscdeepError)


@pytest.mark.parametrize("n_hot", [150, 300])
def test_hot_pixels_do_not_pin_a_dithered_frame(n_hot: int) -> None:
    """Uncalibrated frames share their hot pixels, which match at the identity; the sky
    (dithered 15 px) must win even when hot pixels outnumber the stars several times."""
    truth = make_transform((12.0, -9.0), 0.2, 1.0, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=100, n_sky=500)
    rng = np.random.default_rng(n_hot)
    hot = np.column_stack([rng.integers(0, W, n_hot), rng.integers(0, H, n_hot)]).astype(float)
    hot_flux = np.exp(rng.uniform(np.log(frame_flux.min()), np.log(frame_flux.max()), n_hot))
    assert n_hot > 1.5 * len(frame_xy)
    result = find_transform(np.vstack([frame_xy, hot]), np.vstack([ref_xy, hot]),
                            frame_flux=np.concatenate([frame_flux, hot_flux]),
                            ref_flux=np.concatenate([ref_flux, hot_flux]))
    check(truth, result, 0.15)
    assert np.all(result.pairs[:, 0] < len(frame_xy))  # no hot pixel among the inliers
    # an undithered frame (stars on the same pixels) keeps the identity
    still = np.eye(3)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(still, seed=101, n_sky=500)
    result = find_transform(np.vstack([frame_xy, hot]), np.vstack([ref_xy, hot]),
                            frame_flux=np.concatenate([frame_flux, hot_flux]),
                            ref_flux=np.concatenate([ref_flux, hot_flux]))
    check(still, result, 0.15)


def test_too_few_stars_and_wrong_model_fail_with_reasons() -> None:
    with pytest.raises(RegistrationError, match="the frame has 4 stars"):
        find_transform(np.zeros((4, 2)), np.zeros((50, 2)))
    truth = make_transform((8.0, 3.0), 40.0, 1.0, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=80)
    with pytest.raises(RegistrationError, match="shift transform, which cannot follow"):
        find_transform(frame_xy, ref_xy, frame_flux=frame_flux, ref_flux=ref_flux,
                       model="shift")
    with pytest.raises(RegistrationError):  # the true scale 1 lies outside the range
        find_transform(frame_xy, ref_xy, frame_flux=frame_flux, ref_flux=ref_flux,
                       options=MatchOptions(scale_range=(0.5, 0.9)))


def test_register_frames_keeps_going_past_a_failed_frame() -> None:
    truth = make_transform((8.0, 3.0), 2.0, 1.0, CENTER)
    frame_xy, frame_flux, ref_xy, ref_flux = pair(truth, seed=90)
    noise = np.random.default_rng(5).uniform(0, 700, (150, 2))
    results = register_frames([ref_xy, noise, frame_xy], reference=0,
                              fluxes=[ref_flux, None, frame_flux])
    assert isinstance(results[0], RegistrationResult) and results[0].rms == 0.0
    assert results[0].n_inliers == len(ref_xy)
    assert isinstance(results[1], RegistrationError)
    assert isinstance(results[2], RegistrationResult)
    check(truth, results[2], 0.1)
    # pairs index the caller's lists: paired stars really are near each other after mapping
    f, r = results[2].pairs.T
    moved = results[2].transform.apply(frame_xy[f])
    assert np.hypot(*(moved - ref_xy[r]).T).max() < 1.0


def test_choose_reference() -> None:
    def q(stars: int | None, fwhm: float | None = None, weight: float | None = None) -> dict:
        return {"star_count": stars, "fwhm": fwhm, "weight": weight}

    night = [q(400, 3.5), q(450, 2.6), q(900, 6.0), q(3, 1.0)]
    assert choose_reference(night) == 1  # sharp and rich beats crowded and soft
    assert choose_reference([q(10), q(30), q(30)]) == 1  # most stars, earliest on a tie
    assert choose_reference([q(400, 3.5, 0.9), q(450, 2.6, 0.7)]) == 0  # weights decide
    assert choose_reference([{"star_count": 300}, {"star_count": 500}, q(None, 2.0)]) == 1

    @dataclass
    class Row:  # attributes work as well as keys (e.g. library rows)
        star_count: int
        fwhm: float
        weight: float | None = None

    assert choose_reference([Row(100, 4.0), Row(120, 3.0)]) == 1
    with pytest.raises(RegistrationError):
        choose_reference([q(2, 3.0)])


def test_options_are_checked() -> None:
    assert TransformModel("Projective") == TransformModel.HOMOGRAPHY
    with pytest.raises(ConfigError, match="unknown transform model 'rigid'"):
        find_transform(np.zeros((10, 2)), np.zeros((10, 2)), model="rigid")
    with pytest.raises(ConfigError):
        MatchOptions(pattern_stars=2)
    with pytest.raises(ConfigError):
        MatchOptions(scale_range=(1.1, 0.9))
