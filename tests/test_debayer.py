"""Demosaicing: colours land in the right channel for every pattern, smooth skies come back,
the uint16 detour of the OpenCV methods keeps float precision, and odd inputs are handled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from oscdeep.cfa import cfa_channels, cfa_sites, mosaic
from oscdeep.debayer import DemosaicMethod, cfa_luminance, debayer, luminance
from oscdeep.errors import ConfigError
from oscdeep.types import BAYER_PATTERNS, shift_pattern

FULL_RES = ("bilinear", "ea", "vng")
B = 2  # border (pixels) where edge effects are allowed


def smooth_rgb(h: int, w: int, *, correlated: bool = False) -> np.ndarray:
    """A smooth coloured sky (values ~50..250), float32 (H, W, 3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 150 + 60 * np.sin(xx / 15) * np.cos(yy / 20)
    if correlated:  # colour varies slowly, brightness faster: what real skies look like
        chroma = [0.9 + 0.1 * np.sin(xx / 60), np.ones_like(xx), 0.8 + 0.1 * np.cos(yy / 50)]
        return np.stack([base * c for c in chroma], -1).astype(np.float32)
    return np.stack([base, 130 + 40 * np.cos(xx / 25 + yy / 30),
                     140 + 50 * np.sin((xx + yy) / 18)], -1).astype(np.float32)


def float_bilinear(m: np.ndarray, pattern: str) -> np.ndarray:
    """Reference bilinear demosaic in float: sparse colour planes convolved with the usual
    kernels (mirrored borders keep the Bayer phase)."""
    sparse = np.zeros((*m.shape, 3), np.float32)
    for dy, dx, c in cfa_sites(pattern):
        sparse[dy::2, dx::2, c] = m[dy::2, dx::2]
    k_rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
    k_g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4
    return np.stack([cv2.filter2D(sparse[..., c], -1, k_g if c == 1 else k_rb,
                                  borderType=cv2.BORDER_REFLECT_101) for c in range(3)], -1)


@pytest.mark.parametrize("method", [*FULL_RES, "superpixel"])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_pure_colours_come_out_pure(pattern: str, method: str) -> None:
    for channel in range(3):
        rgb = np.zeros((20, 26, 3), np.float32)
        rgb[..., channel] = 3000.5
        out = debayer(mosaic(rgb, pattern), pattern, method=method)
        expected = np.zeros(3, np.float32)
        expected[channel] = 3000.5
        inner = out if method == "superpixel" else out[B:-B, B:-B]
        np.testing.assert_allclose(inner, np.broadcast_to(expected, inner.shape), atol=0.05,
                                   err_msg=f"{pattern} {method} channel {channel}")


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("method", FULL_RES)
def test_smooth_sky_round_trips(pattern: str, method: str) -> None:
    # VNG assumes colour changes more slowly than brightness, as in real skies.
    rgb = smooth_rgb(64, 90, correlated=method == "vng")
    out = debayer(mosaic(rgb, pattern), pattern, method=method)
    assert out.shape == rgb.shape and out.dtype == np.float32
    err = np.abs(out - rgb)[B:-B, B:-B]
    assert err.max() < 0.4  # data range ~200: < 0.2 %
    assert np.sqrt((err ** 2).mean()) < 0.1


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bilinear_equals_float_reference_for_negative_and_large_values(pattern: str) -> None:
    rng = np.random.default_rng(1)
    m = (rng.normal(0, 1, (48, 70)) * 30000 + 20000).astype(np.float32)  # ~ -100000..+130000
    m[5, 7], m[20, 30] = -123456.75, 250000.25
    span = float(m.max() - m.min())
    err = np.abs(debayer(m, pattern) - float_bilinear(m, pattern))
    assert err.max() <= span / 65535 * 1.01  # one quantisation step at most
    assert err.max() < 1e-3 * span


@pytest.mark.parametrize("method", FULL_RES)
def test_own_colour_passes_through_and_scaling_commutes(method: str) -> None:
    rng = np.random.default_rng(2)
    # calibrated data: negative and above 65535
    ramp = np.linspace(-20000, 160000, 60)[None, :]
    m = (smooth_rgb(40, 60)[..., 0] * 50 + ramp + rng.normal(0, 50, (40, 60))).astype(np.float32)
    assert m.min() < 0 and m.max() > 65535
    step = float(m.max() - m.min()) / 65535
    out = debayer(m, "GBRG", method=method)
    channel = cfa_channels("GBRG", m.shape)[..., None].astype(np.intp)
    own = np.take_along_axis(out, channel, -1)[..., 0]
    assert np.abs(own - m).max() <= 0.51 * step
    scaled = debayer(m * 0.01 + 7, "GBRG", method=method)
    assert np.abs(scaled - (out * 0.01 + 7)).max() <= 0.02 * step + 1e-4


def test_superpixel_shape_and_values_exact() -> None:
    rng = np.random.default_rng(3)
    m = rng.normal(500, 100, (7, 9)).astype(np.float32)  # odd: last row and column dropped
    for pattern in BAYER_PATTERNS:
        out = debayer(m, pattern, method="superpixel")
        assert out.shape == (3, 4, 3) and out.dtype == np.float32
        for i in range(3):
            for j in range(4):
                cell = {}
                for dy, dx, c in cfa_sites(pattern):
                    cell.setdefault(c, []).append(m[2 * i + dy, 2 * j + dx])
                assert out[i, j, 0] == cell[0][0] and out[i, j, 2] == cell[2][0]
                assert out[i, j, 1] == np.float32(0.5) * (cell[1][0] + cell[1][1])


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">u2", "<u2", ">i2"])
def test_big_endian_and_integer_input(dtype: str) -> None:
    m = (smooth_rgb(32, 40)[..., 1] * 100).astype(np.float32)
    if np.dtype(dtype).kind in "iu":
        m = np.round(m / 4)  # fits int16
    native = debayer(m.astype(np.float32), "RGGB", method="ea")
    other = debayer(m.astype(dtype), "RGGB", method="ea")
    assert other.dtype == np.float32 and other.dtype.isnative
    np.testing.assert_array_equal(other, native)
    np.testing.assert_array_equal(cfa_luminance(m.astype(dtype), "RGGB"),
                                  cfa_luminance(m.astype(np.float32), "RGGB"))


@pytest.mark.parametrize("pattern", ["RGBG", "XYZW", "RGG", "", None, 42])
def test_invalid_pattern_raises_config_error(pattern: object) -> None:
    with pytest.raises(ConfigError):
        debayer(np.zeros((8, 8), np.float32), pattern)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        cfa_luminance(np.zeros((8, 8), np.float32), pattern)  # type: ignore[arg-type]


def test_pattern_case_and_method_aliases() -> None:
    m = np.random.default_rng(4).normal(100, 10, (16, 16)).astype(np.float32)
    np.testing.assert_array_equal(debayer(m, " rggb "), debayer(m, "RGGB"))
    assert DemosaicMethod("edge-aware") is DemosaicMethod.EA
    assert DemosaicMethod("Edge_Aware") is DemosaicMethod.EA
    assert DemosaicMethod("super-pixel") is DemosaicMethod.SUPERPIXEL
    assert DemosaicMethod("VNG") is DemosaicMethod.VNG
    with pytest.raises(ConfigError, match="unknown demosaic method"):
        debayer(m, "RGGB", method="ahd")


@pytest.mark.parametrize("method", FULL_RES)
def test_nan_stays_local(method: str) -> None:
    rgb = smooth_rgb(40, 50)
    m = mosaic(rgb, "BGGR")
    holed = m.copy()
    holed[20, 25] = np.nan
    holed[10, 11] = np.inf
    holed[30:33, 5:8] = np.nan  # a 3x3 hole
    out = debayer(holed, "BGGR", method=method)
    bad = ~np.isfinite(holed)
    assert np.isnan(out[bad]).all()
    assert np.isfinite(out[~bad]).all()
    # the holes were filled, not spread: next to them the result changes by < 1 % of the
    # data (~50..250), further than 3 pixels away not at all (beyond quantisation)
    change = np.abs(out - debayer(m, "BGGR", method=method)).max(axis=-1)
    near = cv2.dilate(bad.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert change[~bad].max() < 2.0
    assert change[~near].max() < 0.01


def test_superpixel_nan_per_channel() -> None:
    m = np.full((4, 4), 100.0, np.float32)  # RGGB: R (0,0), G (0,1) (1,0), B (1,1)
    m[0, 0] = np.nan  # R of cell (0, 0)
    m[0, 3] = np.nan  # one G of cell (0, 1)
    m[2, 3] = 300.0   # the other G of cell (1, 1)
    out = debayer(m, "RGGB", method="superpixel")
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == 100 and out[0, 0, 2] == 100
    assert out[0, 1, 1] == 100  # the valid green
    assert out[1, 1, 1] == 200


@pytest.mark.parametrize("method", FULL_RES)
def test_mirror_and_transpose_symmetry(method: str) -> None:
    """Demosaicing a mirrored mosaic gives the mirrored image: no direction is favoured, so
    star centroids are not pulled one way."""
    rng = np.random.default_rng(5)
    m = cv2.GaussianBlur(rng.uniform(0, 1000, (50, 64)).astype(np.float32), (0, 0), 1.0)
    m += rng.normal(0, 20, m.shape).astype(np.float32)
    step = float(m.max() - m.min()) / 65535
    tol = 1e-3 if method == "vng" else 1.01 * step
    out = debayer(m, "RGGB", method=method)
    mirrored = debayer(np.ascontiguousarray(m[:, ::-1]), shift_pattern("RGGB", 1, 0), method=method)
    assert np.abs(mirrored[:, ::-1] - out).max() <= tol
    flipped = debayer(np.ascontiguousarray(m[::-1]), shift_pattern("RGGB", 0, 1), method=method)
    assert np.abs(flipped[::-1] - out).max() <= tol
    if method != "ea":  # EA breaks exact horizontal/vertical ties towards horizontal
        transposed = debayer(np.ascontiguousarray(m.T), "RGGB", method=method)
        assert np.abs(transposed.transpose(1, 0, 2) - out).max() <= tol


def test_vng_has_less_false_colour_than_bilinear_on_edges() -> None:
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    disk = (xx - 80) ** 2 + (yy - 60) ** 2 < 35 ** 2
    grey = 100 + 900 * disk + 500 * ((xx // 7) % 2) * (yy < 30)
    grey = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 0.7)
    m = mosaic(np.repeat(grey[..., None], 3, -1), "GRBG")

    def false_colour(method: str) -> float:
        out = debayer(m, "GRBG", method=method)[B:-B, B:-B]
        return float(np.sqrt(((out - out.mean(axis=-1, keepdims=True)) ** 2).mean()))

    assert false_colour("vng") < 0.8 * false_colour("bilinear")


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_cfa_luminance_has_no_checkerboard_for_any_colour(pattern: str) -> None:
    colour = np.array([700.0, 300.0, 1200.0], np.float32)
    rgb = np.broadcast_to(colour, (24, 30, 3))
    lum = cfa_luminance(mosaic(rgb, pattern), pattern)
    assert lum.shape == (24, 30) and lum.dtype == np.float32
    np.testing.assert_allclose(lum, (700 + 2 * 300 + 1200) / 4, rtol=1e-6)
    np.testing.assert_allclose(luminance(rgb), (700 + 2 * 300 + 1200) / 4, rtol=1e-6)


@pytest.mark.parametrize("colour", [(1.0, 0.3, 0.05), (0.05, 0.3, 1.0), (1.0, 1.0, 1.0)])
def test_cfa_luminance_star_centroid(colour: tuple[float, float, float]) -> None:
    """A star of any colour, at any sub-pixel position, is centred where it was put."""
    yy, xx = np.mgrid[0:31, 0:31].astype(np.float64)
    worst = 0.0
    for x0, y0 in [(15.0, 15.0), (15.3, 14.8), (14.5, 15.5), (15.25, 15.75)]:
        star = 10000 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5 ** 2))
        lum = cfa_luminance(mosaic(star[..., None] * np.array(colour), "RGGB"), "RGGB")
        w = lum.astype(np.float64)
        cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
        worst = max(worst, abs(cx - x0), abs(cy - y0))
    assert worst < 0.005


def test_nan_in_cfa_luminance_stays_local() -> None:
    m = np.full((12, 12), 50.0, np.float32)
    m[6, 6] = np.nan
    lum = cfa_luminance(m, "RGGB")
    assert np.isnan(lum[6, 6]) and np.isfinite(np.delete(lum.ravel(), 6 * 12 + 6)).all()
    np.testing.assert_allclose(np.delete(lum.ravel(), 6 * 12 + 6), 50.0, rtol=1e-6)


def test_rejects_non_mosaic_shapes() -> None:
    with pytest.raises(ValueError, match="2-D"):
        debayer(np.zeros((8, 8, 3), np.float32), "RGGB")
    with pytest.raises(ValueError, match="too small"):
        debayer(np.zeros((2, 8), np.float32), "RGGB")
    with pytest.raises(ValueError):
        luminance(np.zeros((8, 8), np.float32))


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("shape", [(24, 30), (23, 19)])
def test_vng_matches_the_per_pixel_reference(pattern: str, shape: tuple[int, int]) -> None:
    """The vectorised kernel (column-parity planes, one loop per site type) computes the same
    VNG as a plain per-pixel implementation, odd sizes and borders included."""
    from tests.vng_reference import reference_vng

    rng = np.random.default_rng(7)
    m = (1000 + 30 * rng.standard_normal(shape)).astype(np.float32)
    m[5:8, 6:9] += 20000  # a star: the kept directions change around it
    m[:, 15:] += 3000  # and a vertical edge
    got = debayer(m, pattern, method="vng")
    want = reference_vng(m, pattern)
    np.testing.assert_allclose(got, want, rtol=0, atol=0.02)
    assert not np.allclose(got[..., 0], got[..., 1], atol=1)  # not trivially flat
