"""Tests for oscdeep.warp: geometry, no-data borders, NaN spread, clamping and row bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oscdeep.errors import ConfigError
from oscdeep.transform import Transform
from oscdeep.warp import Interpolation, WarpedSource, coverage, warp_image

METHODS = list(Interpolation)
FRAME_HW = (150, 200)
SIGMA = 2.0


def _rigid(deg: float, tx: float, ty: float) -> Transform:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return Transform(np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]]), "similarity")


def _homography() -> Transform:
    m = _rigid(3.0, 4.3, -2.7).matrix.copy()
    m[2, :2] = [2e-5, -3e-5]
    return Transform(m, "homography")


def _blobs(hw: tuple[int, int], centres: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """Unit-amplitude Gaussians at ``centres`` (N, 2) on a background of 0.1, float32."""
    y, x = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    img = np.full(hw, 0.1)
    for cx, cy in centres:
        img += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return img.astype(np.float32)


def _centroid(img: np.ndarray, cx: float, cy: float, r: int = 10) -> tuple[float, float]:
    x0, y0 = int(round(cx)) - r, int(round(cy)) - r
    win = img[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1].astype(np.float64) - 0.1
    assert np.all(np.isfinite(win))
    yy, xx = np.mgrid[0:win.shape[0], 0:win.shape[1]]
    total = win.sum()
    return x0 + float((xx * win).sum() / total), y0 + float((yy * win).sum() / total)


CENTRES = np.array([[40.3, 35.7], [120.6, 50.2], [80.1, 100.9], [150.45, 110.35]])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("transform", [_rigid(7.0, 6.37, -4.81), _homography()],
                         ids=["rigid", "homography"])
def test_blob_centroids_land_where_transform_sends_them(method, transform):
    frame = _blobs(FRAME_HW, CENTRES)
    out = warp_image(frame, transform, FRAME_HW, interpolation=method)
    expected = transform.apply(CENTRES)
    # OpenCV's bicubic kernel (a = -0.75, not Catmull-Rom's -0.5) does not reproduce linear
    # ramps: it moves them by up to 0.048 px depending on the sub-pixel phase, measured here
    # as 0.022 px (rigid) and 0.035 px (homography) on sigma-2 blobs.
    tol = 0.04 if method == Interpolation.BICUBIC else 0.02
    for ex, ey in expected:
        cx, cy = _centroid(out, ex, ey)
        assert math.hypot(cx - ex, cy - ey) < tol, (method, cx - ex, cy - ey)
    # And the pixels match the blobs rendered at their reference positions (bilinear
    # flattens a sigma-2 peak by ~6 %).
    truth = _blobs(FRAME_HW, expected)
    valid = coverage(transform, FRAME_HW, FRAME_HW)
    limit = 0.07 if method == Interpolation.BILINEAR else 0.035
    assert np.nanmax(np.abs(out - truth)[valid]) < limit


@pytest.mark.parametrize("method", METHODS)
def test_identity_and_integer_shift_are_exact(method):
    rng = np.random.default_rng(1)
    frame = rng.random((*FRAME_HW, 3), dtype=np.float32)
    frame[20, 30, 1] = np.nan  # a bad pixel stays one pixel on exact moves
    out = warp_image(frame, Transform.identity(), FRAME_HW, interpolation=method)
    np.testing.assert_array_equal(out, frame)

    shift = Transform(np.array([[1.0, 0, 5], [0, 1, -3], [0, 0, 1]]), "shift")
    out = warp_image(frame, shift, FRAME_HW, interpolation=method)
    np.testing.assert_array_equal(out[:-3, 5:], frame[3:, :-5])
    assert np.isnan(out[-3:]).all() and np.isnan(out[:, :5]).all()
    assert np.isnan(out).sum() == 3 * (3 * 200 + 5 * 147) + 1


@pytest.mark.parametrize("method", METHODS)
def test_half_turn_through_opencv_is_exact(method):
    # 180 degrees about the centre lands on whole pixels: no interpolation error at all.
    h, w = FRAME_HW
    flip = Transform(np.array([[-1.0, 0, w - 1], [0, -1, h - 1], [0, 0, 1]]), "similarity")
    frame = np.random.default_rng(2).random(FRAME_HW, dtype=np.float32)
    out = warp_image(frame, flip, FRAME_HW, interpolation=method)
    np.testing.assert_array_equal(out, frame[::-1, ::-1])


def _inside_hull(transform: Transform, frame_hw, out_hw) -> np.ndarray:
    y, x = np.mgrid[0:out_hw[0], 0:out_hw[1]]
    src = transform.inverse().apply(np.stack([x.ravel(), y.ravel()], axis=1).astype(float))
    tol = 1e-4
    inside = ((src[:, 0] >= -tol) & (src[:, 0] <= frame_hw[1] - 1 + tol)
              & (src[:, 1] >= -tol) & (src[:, 1] <= frame_hw[0] - 1 + tol))
    return inside.reshape(out_hw)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("transform", [_rigid(-11.0, 17.4, 9.2), _homography(),
                                       _rigid(0.0, 0.5, -0.25)],
                         ids=["rigid", "homography", "subpixel"])
def test_nan_exactly_outside_coverage_and_no_zeros(method, transform):
    out_hw = (170, 190)  # a reference grid of another size than the frame
    frame = np.full((*FRAME_HW, 3), 2.0, dtype=np.float32)
    out = warp_image(frame, transform, out_hw, interpolation=method)
    cov = coverage(transform, FRAME_HW, out_hw)
    assert cov.dtype == bool and cov.shape == out_hw
    np.testing.assert_array_equal(cov, _inside_hull(transform, FRAME_HW, out_hw))
    np.testing.assert_array_equal(np.isnan(out), np.repeat(cov[..., None], 3, axis=2) == 0)
    # No zeros (or any leak of the border) inside, even next to the edge for wide kernels.
    np.testing.assert_allclose(out[cov], 2.0, rtol=1e-6)
    assert 0.6 < cov.mean() < 1.0


def test_coverage_of_disjoint_frame_is_empty():
    far = _rigid(0.0, 1000.0, 0.0)
    assert not coverage(far, FRAME_HW, FRAME_HW).any()
    assert np.isnan(warp_image(np.ones(FRAME_HW, np.float32), far, FRAME_HW)).all()


@pytest.mark.parametrize("method,radius", [("bilinear", 1), ("bicubic", 2), ("lanczos", 4)])
def test_bad_pixel_nan_stays_within_kernel_footprint(method, radius):
    frame = _blobs(FRAME_HW, CENTRES)
    xn, yn = 97, 64
    frame[yn, xn] = np.nan
    t = _rigid(13.0, 3.3, -5.1)
    out = warp_image(frame, t, FRAME_HW, interpolation=method, clamp=False)
    bad = np.isnan(out) & coverage(t, FRAME_HW, FRAME_HW)
    ys, xs = np.nonzero(bad)
    assert len(xs) > 0
    src = t.inverse().apply(np.stack([xs, ys], axis=1).astype(float))
    assert np.abs(src[:, 0] - xn).max() <= radius + 1e-3
    assert np.abs(src[:, 1] - yn).max() <= radius + 1e-3
    assert len(xs) <= (2 * radius + 1) ** 2


def test_flux_of_isolated_blob_conserved_after_rotation():
    frame = _blobs(FRAME_HW, CENTRES[:1])
    t = _rigid(23.0, 30.2, -10.7)
    out = warp_image(frame, t, FRAME_HW, interpolation="bilinear")
    (ex, ey), = t.apply(CENTRES[:1])
    r = 12
    before = frame[24:24 + 2 * r, 28:28 + 2 * r].astype(np.float64).sum() - 0.1 * (2 * r) ** 2
    x0, y0 = int(ex) - r, int(ey) - r
    after = out[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1].astype(np.float64) - 0.1
    assert abs(after.sum() / before - 1.0) < 0.01
    assert abs(before / (2 * math.pi * SIGMA**2) - 1.0) < 1e-3  # the window held the blob


@pytest.mark.parametrize("method", METHODS)
def test_rgb_equals_per_channel_mono(method):
    rng = np.random.default_rng(3)
    frame = rng.random((*FRAME_HW, 3), dtype=np.float32)
    t = _rigid(5.0, 2.2, 1.7)
    rgb = warp_image(frame, t, FRAME_HW, interpolation=method)
    assert rgb.shape == (*FRAME_HW, 3) and rgb.dtype == np.float32
    for c in range(3):
        mono = warp_image(frame[..., c], t, FRAME_HW, interpolation=method)
        assert mono.shape == FRAME_HW and mono.dtype == np.float32
        np.testing.assert_allclose(rgb[..., c], mono, rtol=0, atol=1e-6)


def test_big_endian_input_is_accepted():
    frame = _blobs(FRAME_HW, CENTRES)
    t = _rigid(4.0, 1.5, 2.5)
    np.testing.assert_array_equal(warp_image(frame.astype(">f4"), t, FRAME_HW),
                                  warp_image(frame, t, FRAME_HW))


def test_lanczos_clamp_removes_ringing():
    sharp = _blobs(FRAME_HW, CENTRES, sigma=0.6)
    t = _rigid(0.0, 0.5, 0.5)
    raw = warp_image(sharp, t, FRAME_HW, interpolation="lanczos", clamp=False)
    clamped = warp_image(sharp, t, FRAME_HW, interpolation="lanczos")  # clamp on by default
    assert np.nanmin(raw) < 0.1 - 0.01  # dark rings below the background without clamping
    assert np.nanmin(clamped) >= 0.1 - 1e-6
    assert np.nanmax(clamped) <= sharp.max()
    # Smooth data is hardly touched: only a peak between pixels is cut, at most to the
    # largest of its 4 neighbours (1 - exp(-0.5 / 32) = 1.6 % for sigma 4).
    smooth = _blobs(FRAME_HW, CENTRES, sigma=4.0)
    a = warp_image(smooth, t, FRAME_HW, interpolation="lanczos", clamp=False)
    b = warp_image(smooth, t, FRAME_HW, interpolation="lanczos")
    assert np.nanmax(np.abs(a - b)) < 0.016
    assert np.nanmean(np.abs(a - b)) < 1e-4


def test_interpolation_names_and_aliases():
    assert Interpolation("Linear") is Interpolation.BILINEAR
    assert Interpolation("cubic") is Interpolation.BICUBIC
    assert Interpolation("Lanczos4") is Interpolation.LANCZOS
    with pytest.raises(ConfigError, match="bilinear"):
        warp_image(np.zeros((4, 4), np.float32), Transform.identity(), (4, 4),
                   interpolation="spline7")


class _RowSource:
    """A frame source that records the rows it is asked for."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.max_rows = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        self.max_rows = max(self.max_rows, y1 - y0)
        return self.array[y0:y1].copy()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("transform", [_rigid(6.0, -7.3, 12.6), _homography()],
                         ids=["rigid", "homography"])
def test_warped_source_bands_equal_whole_warp(method, transform):
    rng = np.random.default_rng(4)
    frame = (_blobs(FRAME_HW, CENTRES)[..., None]
             + rng.random((*FRAME_HW, 3), dtype=np.float32) * 0.2)
    frame[70, 90, 2] = np.nan
    out_hw = (160, 210)
    whole = warp_image(frame, transform, out_hw, interpolation=method)
    for band in (1, 7, 64):
        rows = _RowSource(frame)
        sources = [WarpedSource(rows, transform, out_hw, interpolation=method),
                   WarpedSource(frame, transform, out_hw, interpolation=method),
                   WarpedSource(lambda: frame, transform, out_hw, interpolation=method)]
        for src in sources:
            assert src.shape == (*out_hw, 3)
            got = np.concatenate([src.read_rows(y, min(y + band, out_hw[0]))
                                  for y in range(0, out_hw[0], band)])
            np.testing.assert_array_equal(np.isnan(got), np.isnan(whole))
            # Equal to float32 rounding of the positions (warpPerspective: ~1e-5).
            np.testing.assert_allclose(got, whole, rtol=0, atol=1e-4, equal_nan=True)
        # Rows read per band: band + width * |sin| + kernel, far less than the frame.
        assert rows.max_rows <= band + 200 * math.sin(math.radians(6.0)) + 12
    np.testing.assert_array_equal(sources[0].coverage(), ~np.isnan(whole).all(axis=2))


def test_warped_source_checks_rows():
    src = WarpedSource(np.zeros(FRAME_HW, np.float32), Transform.identity(), FRAME_HW)
    assert src.shape == FRAME_HW
    with pytest.raises(ValueError):
        src.read_rows(10, FRAME_HW[0] + 1)
    assert src.read_rows(5, 5).shape == (0, FRAME_HW[1])
