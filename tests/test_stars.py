"""Star detection and measurement against synthetic fields with a known star list.

Signal-to-noise of a true star is the background-limited optimum for a Gaussian profile,
``flux / (noise * fwhm * sqrt(pi / (2 ln 2)))``; "a 10 sigma star" means that is >= 10.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.ndimage import convolve1d
from scipy.spatial import cKDTree

from oscdeep.psf import fit_psf
from oscdeep.stars import (
    COLUMNS,
    FLAG_FITTED,
    StarCatalog,
    background_rms,
    detect_stars,
    estimate_background,
    frame_quality,
    measure_stars,
)
from oscdeep.synth import NightConfig, expected_electrons, make_night, read_out, render_stars

SNR_PER_FLUX = math.sqrt(math.pi / (2 * math.log(2)))


def _positions(rng, shape, n, margin, min_sep):
    h, w = shape
    pts = np.empty((0, 2))
    while len(pts) < n:
        cand = rng.uniform((margin, margin), (w - 1 - margin, h - 1 - margin), (4 * n, 2))
        for p in cand:
            if len(pts) >= n:
                break
            if min_sep == 0 or len(pts) == 0 or np.min(np.hypot(*(pts - p).T)) >= min_sep:
                pts = np.vstack([pts, p])
    return pts[:, 0], pts[:, 1]


def star_field(shape=(600, 800), n=150, fwhm=3.0, *, psf="gaussian", beta=4.0,
               snr=(20.0, 500.0), sky=1000.0, noise=10.0, gradient=0.2, seed=0, margin=10.0,
               min_sep=0.0, stars=None, noise_image=None):
    """Stars (log-uniform SNR) on a sky with a linear gradient plus Gaussian noise of rms
    ``noise`` (or ``noise_image``)."""
    rng = np.random.default_rng(seed)
    if stars is None:
        x, y = _positions(rng, shape, n, margin, min_sep)
        s = np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]), len(x)))
        flux = s * noise * fwhm * SNR_PER_FLUX
    else:
        x, y, flux = stars
    img = render_stars(shape, x, y, flux, fwhm, psf=psf, beta=beta, cutoff=1e-3)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = (sky * (1 + gradient * (xx / w - 0.5) + 0.5 * gradient * (yy / h - 0.5))
          ).astype(np.float32)
    img += bg + (rng.normal(0, noise, shape).astype(np.float32) if noise_image is None
                 else noise_image)
    true_snr = flux / (noise * fwhm * SNR_PER_FLUX)
    return img.astype(np.float32), dict(x=x, y=y, flux=flux, snr=true_snr, background=bg)


def match(cat: StarCatalog, x, y, radius=1.0):
    """Found (per true star), false (per detection), and the distance to and index of the
    nearest true star (per detection)."""
    tree = cKDTree(np.stack([x, y], 1))
    d, i = tree.query(cat.xy) if len(cat) else (np.zeros(0), np.zeros(0, int))
    found = np.zeros(len(x), bool)
    found[i[d <= radius]] = True
    return found, d > radius, d, i


# --- FWHM ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("psf,beta", [("gaussian", 0.0), ("moffat", 2.5), ("moffat", 4.5)])
@pytest.mark.parametrize("fwhm", [2.0, 3.0, 4.0, 6.0])
def test_fwhm_within_5_percent(psf, beta, fwhm):
    shape = (500, 500) if fwhm < 5 else (700, 700)
    img, truth = star_field(shape, 80, fwhm, psf=psf, beta=beta or 4.0, snr=(30, 400),
                            min_sep=5 * fwhm, margin=3 * fwhm, seed=int(fwhm * 10))
    q = frame_quality(img)
    assert q.reason is None
    assert q.fwhm == pytest.approx(fwhm, rel=0.05)
    assert q.roundness > 0.93
    cat = q.catalog
    assert np.sum(cat["flags"].astype(int) & FLAG_FITTED) >= 30
    # Stars that were not fitted get moments scaled to the fits: right on average too.
    others = (cat["flags"].astype(int) & FLAG_FITTED) == 0
    if others.sum() >= 10:
        assert np.nanmedian(cat["fwhm"][others]) == pytest.approx(fwhm, rel=0.05)


def test_stars_of_equal_brightness_are_fitted():
    """A field where every star has the same flux still gets PSF fits (nothing looks like the
    clip level), so Moffat stars read right."""
    rng = np.random.default_rng(4)
    g = np.arange(20, 400, 30, dtype=float)
    x, y = (a.ravel() + rng.uniform(-0.5, 0.5, a.size) for a in np.meshgrid(g, g))
    img, _ = star_field((420, 420), fwhm=3.0, psf="moffat", beta=2.5, seed=4,
                        stars=(x, y, np.full(x.size, 2e4)))
    q = frame_quality(img)
    assert np.sum(q.catalog["flags"].astype(int) & FLAG_FITTED) >= 50
    assert q.fwhm == pytest.approx(3.0, rel=0.03)


def test_gaussian_fit_reads_moffat_stars_wide():
    """Why the profile has a free beta: a Gaussian fit misses the 5 % goal on beta = 2.5 stars
    (7 % wide on the same stamps; more on larger ones)."""
    img, t = star_field((400, 400), 40, 4.0, psf="moffat", beta=2.5, snr=(200, 400),
                        min_sep=20, margin=12, seed=3, gradient=0.0, sky=0.0)
    gauss = fit_psf(img, t["x"], t["y"], fwhm_guess=4.0, gaussian=True)
    moffat = fit_psf(img, t["x"], t["y"], fwhm_guess=4.0)
    assert np.median(gauss.shape.fwhm) / 4.0 > 1.05
    assert np.median(moffat.shape.fwhm) == pytest.approx(4.0, rel=0.02)
    assert np.median(moffat.beta) == pytest.approx(2.5, rel=0.2)


def _elliptical_stars(shape, x, y, flux, major, minor, angle, sub=8):
    """Elliptical Gaussian stars, each pixel averaged over sub x sub points."""
    img = np.zeros(shape, np.float64)
    s1, s2 = major / 2.3548, minor / 2.3548
    c, s = math.cos(angle), math.sin(angle)
    r = math.ceil(3 * s1) + 1
    o = (np.arange(sub) + 0.5) / sub - 0.5
    k = np.arange(-r, r + 1)
    for xi, yi, f in zip(x, y, flux):
        ix, iy = int(round(xi)), int(round(yi))
        px = (k[None, :, None, None] + o[None, None, None, :] + ix - xi)
        py = (k[:, None, None, None] + o[None, None, :, None] + iy - yi)
        u = c * px + s * py
        v = -s * px + c * py
        g = np.exp(-0.5 * ((u / s1) ** 2 + (v / s2) ** 2)).mean(axis=(2, 3))
        img[iy - r:iy + r + 1, ix - r:ix + r + 1] += f * g / (2 * math.pi * s1 * s2)
    return img.astype(np.float32)


def test_roundness_and_angle_of_elongated_stars():
    rng = np.random.default_rng(5)
    shape = (500, 500)
    x, y = _positions(rng, shape, 60, 20, 30)
    flux = rng.uniform(3e4, 1e5, len(x))
    angle = math.radians(30)
    img = _elliptical_stars(shape, x, y, flux, 5.0, 3.0, angle)
    img += 500 + rng.normal(0, 10, shape).astype(np.float32)
    q = frame_quality(img)
    assert q.roundness == pytest.approx(0.6, abs=0.03)
    assert q.eccentricity == pytest.approx(0.8, abs=0.03)
    assert q.fwhm == pytest.approx(math.sqrt(15), rel=0.05)
    ang = np.median(q.catalog["angle"][(q.catalog["flags"].astype(int) & FLAG_FITTED) != 0])
    assert math.degrees(ang) == pytest.approx(30, abs=3)
    # Moment-measured stars see the same elongation.
    unfitted = detect_stars(img, fit_stars=0)
    assert np.median(unfitted["roundness"]) == pytest.approx(0.6, abs=0.05)
    assert math.degrees(np.median(unfitted["angle"])) == pytest.approx(30, abs=3)


# --- detection ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crowded():
    """1500x1000 field of 700 Gaussian stars (FWHM 3), SNR 3..3000, sky gradient."""
    img, truth = star_field((1000, 1500), 700, 3.0, snr=(3, 3000), seed=11, margin=-5)
    return img, truth, frame_quality(img)


def test_completeness_and_false_detections(crowded):
    img, t, q = crowded
    found, false, d, _ = match(q.catalog, t["x"], t["y"])
    h, w = img.shape
    inside = (t["x"] > 6) & (t["y"] > 6) & (t["x"] < w - 7) & (t["y"] < h - 7)
    bright = inside & (t["snr"] >= 10)
    assert bright.sum() > 300
    assert found[bright].mean() >= 0.95
    assert false.mean() <= 0.01
    assert q.fwhm == pytest.approx(3.0, rel=0.03)


def test_centroids_of_snr_50_stars(crowded):
    _, t, q = crowded
    _, _, d, i = match(q.catalog, t["x"], t["y"])
    sel = (d <= 1) & (t["snr"][i] >= 50)
    assert sel.sum() > 100
    assert np.median(d[sel]) <= 0.05


def test_catalog_is_sorted_and_round_trips(crowded):
    cat = crowded[2].catalog
    assert np.all(np.diff(cat["flux"]) <= 0)
    blob = cat.to_bytes()
    back = StarCatalog.from_bytes(blob)
    assert back.shape == cat.shape and dict(back.rejected) == dict(cat.rejected)
    assert back.data.tobytes() == cat.data.tobytes()
    assert len(blob) < len(cat) * len(COLUMNS) * 4
    assert np.array_equal(cat.brightest(10).xy, cat.xy[:10])
    assert cat.count == len(cat)
    moved = cat.with_positions(cat.xy + 1.5)
    assert np.allclose(moved.xy, cat.xy + 1.5) and np.array_equal(moved["flux"], cat["flux"])
    assert cat.xy.dtype == np.float64 and cat.xy.shape == (len(cat), 2)
    empty = StarCatalog.empty((5, 7))
    assert StarCatalog.from_bytes(empty.to_bytes()).shape == (5, 7)
    with pytest.raises(ValueError):
        StarCatalog.from_bytes(b"nonsense")


def test_close_pairs_are_deblended():
    rng = np.random.default_rng(8)
    fwhm, sep_ = 3.0, []
    xs, ys, fl = [], [], []
    for gy in range(8):
        for gx in range(10):
            cx, cy = 30 + gx * 50 + rng.uniform(-.5, .5), 30 + gy * 50 + rng.uniform(-.5, .5)
            d = rng.uniform(1.7, 2.5) * fwhm
            a = rng.uniform(0, math.pi)
            ratio = rng.uniform(1, 3)
            xs += [cx, cx + d * math.cos(a)]
            ys += [cy, cy + d * math.sin(a)]
            fl += [3e4, 3e4 / ratio]
            sep_.append(d)
    img, t = star_field((430, 530), fwhm=fwhm, seed=9,
                        stars=(np.array(xs), np.array(ys), np.array(fl)))
    cat = detect_stars(img)
    found, false, _, _ = match(cat, t["x"], t["y"])
    assert found.mean() >= 0.95
    assert false.mean() <= 0.02
    merged = detect_stars(img, deblend=False)
    assert len(merged) == pytest.approx(80, abs=4)


# --- background ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
def test_background_and_noise_within_3_percent_with_gradient(stride):
    """``stride`` 2 (every other pixel, as frames of a megapixel or more are measured) keeps
    the level and the noise within the same 3 %; ``frame_quality`` samples this frame."""
    rng = np.random.default_rng(4)
    h, w = 900, 1200
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = 400 * (1 + 0.5 * (xx / w - 0.5) + 0.3 * ((yy / h) - 0.5) ** 2)  # e-
    x, y = _positions(rng, (h, w), 400, 0, 0)
    flux = np.exp(rng.uniform(np.log(300), np.log(3e5), len(x)))
    e = sky + render_stars((h, w), x, y, flux, 3.5, psf="moffat", beta=3.0, cutoff=1e-2)
    gain = 1.5  # e-/ADU
    img = (rng.poisson(e) / gain + rng.normal(0, 3.0, (h, w))).astype(np.float32)
    true_level = sky / gain
    true_noise = np.sqrt(sky / gain**2 + 9.0)
    bkg = estimate_background(img, stride=stride)
    assert bkg.level.shape == bkg.rms.shape == img.shape
    if stride == 1:
        assert background_rms(img) == bkg.global_rms
    assert np.max(np.abs(bkg.level / true_level - 1)) < 0.03
    assert np.median(np.abs(bkg.rms / true_noise - 1)) < 0.03
    q = frame_quality(img)
    assert q.background == pytest.approx(np.median(true_level), rel=0.03)
    assert q.noise == pytest.approx(np.median(true_noise), rel=0.03)


# --- frames with nothing to measure ------------------------------------------------------------

def test_pure_noise_frame():
    img = np.random.default_rng(1).normal(1000, 10, (800, 1000)).astype(np.float32)
    q = frame_quality(img)
    assert q.star_count <= 1
    assert q.reason and q.weight == 0.0
    assert q.noise == pytest.approx(10, rel=0.03)


@pytest.mark.parametrize("value", [0.0, 1234.0])
def test_black_and_constant_frames(value):
    q = frame_quality(np.full((300, 400), value, np.float32))
    assert q.star_count == 0 and q.weight == 0.0
    assert "blank" in q.reason
    assert len(detect_stars(np.zeros((50, 60), np.float32))) == 0


def test_all_nan_and_tiny_frames():
    q = frame_quality(np.full((100, 100), np.nan, np.float32))
    assert q.star_count == 0 and q.reason == "no valid pixels"
    q = frame_quality(np.random.default_rng(0).normal(0, 1, (8, 8)).astype(np.float32))
    assert q.star_count == 0 and q.reason


def test_cloud_frame():
    """Bright, structured cloud light over the sky and no stars: nothing star-like is found."""
    rng = np.random.default_rng(2)
    h, w = 800, 1200
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cloud = np.zeros((h, w), np.float32)
    for _ in range(12):
        cx, cy, s = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 200)
        cloud += rng.uniform(500, 3000) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    e = 800 + cloud
    img = (rng.poisson(e) + rng.normal(0, 3, (h, w))).astype(np.float32)
    q = frame_quality(img)
    assert q.star_count <= 2
    assert q.reason is not None and q.weight == 0.0


def test_correlated_noise_is_not_detected():
    """Demosaiced frames have neighbouring pixels sharing noise: no stars made out of it."""
    rng = np.random.default_rng(7)
    white = rng.normal(0, 1, (800, 1000)).astype(np.float32)
    k = np.array([0.25, 0.5, 0.25], np.float32)
    noise = convolve1d(convolve1d(white, k, axis=0), k, axis=1)
    noise *= 10 / noise.std()
    q = frame_quality(1000 + noise)
    assert q.star_count <= 1
    img, t = star_field((800, 1000), 300, 3.0, seed=7, snr=(20, 500), noise_image=noise)
    cat = detect_stars(img)
    found, false, *_ = match(cat, t["x"], t["y"])
    assert false.mean() <= 0.01 and found.mean() >= 0.9


def test_input_conventions():
    img, _ = star_field((300, 400), 50, 3.0, seed=3)
    ref = detect_stars(img)
    swapped = detect_stars(img.astype(">f4"))  # FITS data arrive big-endian
    assert swapped.data.tobytes() == ref.data.tobytes()
    assert len(detect_stars(img.astype(np.uint16))) == pytest.approx(len(ref), abs=2)
    with pytest.raises(ValueError):
        detect_stars(np.zeros((10, 10, 3), np.float32))


def test_smoothing_kernel_is_modelled():
    """A frame smoothed with [1, 2, 1] / 4 (as cfa_luminance does) reads 10-20 % wide unless
    the kernel is given; with it the FWHM is the stars' own, and hot pixels are still hot."""
    k = np.array([1.0, 2.0, 1.0]) / 4
    img, t = star_field((600, 800), 150, 3.0, psf="moffat", beta=3.0, seed=14, min_sep=12,
                        margin=10)
    rng = np.random.default_rng(14)
    hx, hy = (np.rint(a).astype(int) for a in _positions(rng, img.shape, 30, 5, 0))
    far = cKDTree(np.stack([t["x"], t["y"]], 1)).query(np.stack([hx, hy], 1))[0] > 10
    img[hy[far], hx[far]] += 3000
    smooth = cv2.sepFilter2D(img, -1, k.astype(np.float32), k.astype(np.float32))
    assert frame_quality(smooth).fwhm > 1.08 * 3.0
    q = frame_quality(smooth, kernel=k)
    assert q.fwhm == pytest.approx(3.0, rel=0.03)
    assert not np.any(cKDTree(q.catalog.xy).query(np.stack([hx[far], hy[far]], 1))[0] < 1.5)


@pytest.mark.parametrize("amplitude", [30.0, 300.0, 3000.0])
def test_satellite_trail_is_not_counted(amplitude):
    """Trails from 3 sigma per pixel (pieces of SNR ~15, too faint for the size tests) up."""
    img, t = star_field((600, 800), 150, 3.0, seed=15)
    yy, xx = np.mgrid[0:600, 0:800].astype(np.float32)
    d = (xx - 100) * math.sin(0.4) - (yy - 50) * math.cos(0.4)  # distance to a line
    img += amplitude * np.exp(-0.5 * (d / 1.3) ** 2)
    q = frame_quality(img)
    on_line = np.abs((q.catalog["x"] - 100) * math.sin(0.4) - (q.catalog["y"] - 50)
                     * math.cos(0.4)) < 3
    near_star = cKDTree(np.stack([t["x"], t["y"]], 1)).query(q.catalog.xy)[0] < 1
    assert np.sum(on_line & ~near_star) <= 2
    assert q.catalog.rejected["trail"] + q.catalog.rejected["extended"] > 20
    assert q.star_count >= 140
    assert q.fwhm == pytest.approx(3.0, rel=0.03)


# --- rejection ----------------------------------------------------------------------------------

def test_saturated_stars_and_hot_pixels_are_not_counted():
    rng = np.random.default_rng(6)
    shape = (600, 800)
    x, y = _positions(rng, shape, 150, 15, 25)
    clip = 20000.0
    # Peaks from 300 to 5x the clip level: many barely saturated (1-4 clipped pixels).
    flux = np.exp(rng.uniform(np.log(300), np.log(5 * clip), len(x))) * 1.1331 * 3.0**2
    img, t = star_field(shape, fwhm=3.0, seed=6, stars=(x, y, flux), gradient=0.0)
    clean = render_stars(shape, x, y, flux, 3.0, cutoff=1e-3) + 1000
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    top = np.max([clean[iy + dy, ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    saturated = top >= clip
    img = np.minimum(img, clip)
    hx, hy = _positions(rng, shape, 40, 5, 0)
    hx, hy = np.rint(hx).astype(int), np.rint(hy).astype(int)
    far = cKDTree(np.stack([x, y], 1)).query(np.stack([hx, hy], 1))[0] > 10
    hx, hy = hx[far], hy[far]
    img[hy, hx] += rng.uniform(100, 5000, len(hx)).astype(np.float32)
    assert saturated.sum() >= 30 and np.sum(saturated & (top < 1.5 * clip)) >= 5
    assert len(hx) >= 30
    for saturation in (clip, None):  # given, or found as the level many pixels share
        cat = detect_stars(img, saturation=saturation)
        tree = cKDTree(cat.xy)
        assert not np.any(tree.query(np.stack([x[saturated], y[saturated]], 1))[0] < 3)
        assert not np.any(tree.query(np.stack([hx, hy], 1))[0] < 1.5)
        assert cat.rejected["saturated"] >= saturated.sum()
        assert cat.rejected["hot"] >= 0.9 * len(hx)
        ok = (top < 0.8 * clip) & (t["snr"] >= 10)
        found, *_ = match(cat, x, y)
        assert found[ok].mean() >= 0.95
        q = frame_quality(img, saturation=saturation)
        assert q.fwhm == pytest.approx(3.0, rel=0.03)
    # A flat top is found without any level (e.g. after flat-fielding spread the clip level).
    ramp = np.linspace(0.9, 1.0, shape[1], dtype=np.float32)[None, :]
    cat = detect_stars(img * ramp, saturation=None)
    strong = top >= 2 * clip
    assert not np.any(cKDTree(cat.xy).query(np.stack([x[strong], y[strong]], 1))[0] < 3)


def test_nan_regions_are_masked():
    img, t = star_field((500, 600), 150, 3.0, seed=12)
    img[:, :100] = np.nan  # e.g. no data after warping
    img[400:, 300:] = np.nan
    q = frame_quality(img)
    assert q.reason is None
    assert q.fwhm == pytest.approx(3.0, rel=0.05)
    xy = q.catalog.xy
    assert np.all(xy[:, 0] > 100 + 2) and not np.any((xy[:, 0] > 298) & (xy[:, 1] > 398))
    found, false, *_ = match(q.catalog, t["x"], t["y"])
    assert false.mean() <= 0.01


def test_measure_stars_at_known_positions():
    img, t = star_field((400, 400), 60, 3.0, seed=13, snr=(100, 400), min_sep=15, margin=8)
    cat = measure_stars(img, t["x"] + 0.4, t["y"] - 0.4)
    assert len(cat) == len(t["x"])
    _, _, d, _ = match(cat, t["x"], t["y"])
    assert np.median(d) < 0.05


# --- quality weight -----------------------------------------------------------------------------

def test_weight_ranks_noise_seeing_and_transparency():
    rng = np.random.default_rng(21)
    shape = (600, 800)
    x, y = _positions(rng, shape, 200, 10, 0)
    flux = np.exp(rng.uniform(np.log(3e3), np.log(3e5), len(x)))

    def weight(fwhm=3.0, noise=10.0, transmission=1.0, seed=0):
        img, _ = star_field(shape, fwhm=fwhm, noise=noise, seed=seed,
                            stars=(x, y, flux * transmission))
        return frame_quality(img)

    ref = weight()
    assert ref.weight > 0 and ref.snr > 0
    assert weight(seed=1).weight == pytest.approx(ref.weight, rel=0.1)
    assert weight(noise=20.0).weight == pytest.approx(ref.weight / 4, rel=0.15)
    assert weight(fwhm=4.5).weight == pytest.approx(ref.weight / 2.25, rel=0.2)
    assert weight(transmission=0.5).weight == pytest.approx(ref.weight / 4, rel=0.2)


def test_synthetic_night_clear_cloud_and_bad_seeing():
    """Lights of a synthetic night (bias removed, 2x2 superpixels): the cloud frame weighs least
    and the FWHM follows the truth (half the mosaic FWHM)."""
    cfg = NightConfig(width=800, height=600, n_lights=6, n_bad_seeing=1, satellite=False,
                      hot_pixel_fraction=0.0, star_density=2500, seed=3)
    night = make_night(cfg)
    results = []
    for frame in night.lights:
        e = expected_electrons(night, frame, dark=False, flat=False)
        rng = np.random.default_rng(frame.index)
        adu = read_out(e, night.detector.bias, cfg, rng).astype(np.float32)
        adu -= night.detector.bias
        lum = adu.reshape(300, 2, 400, 2).sum(axis=(1, 3))
        q = frame_quality(lum)
        assert q.reason is None
        assert q.fwhm == pytest.approx(frame.fwhm / 2, rel=0.05)
        results.append((frame, q))
    cloud = [q.weight for f, q in results if f.cloud]
    bad = [q.weight for f, q in results if f.bad_seeing]
    clear = [q.weight for f, q in results if not f.cloud and not f.bad_seeing]
    assert cloud and max(cloud) < 0.5 * min(clear)
    assert bad and max(bad) < 0.5 * min(clear)


def test_real_seestar_frames_measure_consistently():
    """Six consecutive 10 s Seestar S50 subs of M 94 (uncalibrated, demosaiced with OpenCV's
    edge-aware method): star counts and FWHM agree from frame to frame. Demosaiced noise is
    correlated; taken as white it made 1500-2300 "stars" per frame out of noise."""
    from oscdeep.io.fits import read_fits_image

    from .conftest import SEESTAR, require_real

    require_real(SEESTAR)
    results = []
    for path in sorted(SEESTAR.glob("Light_M94_*.fit")):
        raw, _ = read_fits_image(path)
        rgb = cv2.cvtColor(raw.astype(np.uint16), cv2.COLOR_BayerGRBG2RGB_EA)
        q = frame_quality(rgb.astype(np.float32).sum(axis=2))
        assert q.reason is None
        results.append((q.star_count, q.fwhm))
    counts, fwhms = np.array(results).T
    assert len(counts) == 6
    assert counts.min() >= 40 and counts.max() <= 1.2 * counts.min()
    assert 2.0 < np.median(fwhms) < 4.5 and fwhms.max() <= 1.2 * fwhms.min()
