"""Known-truth checks of the synthetic night: optics, detector, geometry and the written folder."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from astropy.io import fits

from oscdeep import synth
from oscdeep.errors import ConfigError
from oscdeep.io.fits import read_fits_image
from oscdeep.pipeline.sample_night import read_sample_truth, write_sample_night
from oscdeep.types import BAYER_PATTERNS, FrameKind, flip_pattern_rows

SMALL = synth.NightConfig(width=320, height=240, n_lights=4, n_darks=2, n_flats=2, n_bias=2,
                          seed=7)


@pytest.fixture(scope="module")
def night() -> synth.NightTruth:
    cfg = replace(SMALL, width=480, height=320, n_lights=8, n_darks=3, n_flats=4, n_bias=4,
                  include_flip=True, include_scale=True, temperature=20.0,
                  star_density=300.0)
    return synth.make_night(cfg)


def _centre_moments(img: np.ndarray, x0: int, y0: int) -> tuple[float, float, float, float]:
    """Sum, centroid and second moments (var x, var y averaged) of a window."""
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    total = img.sum()
    cx, cy = (xs * img).sum() / total, (ys * img).sum() / total
    var = 0.5 * (((xs - cx) ** 2 * img).sum() + ((ys - cy) ** 2 * img).sum()) / total
    return float(total), float(cx + x0), float(cy + y0), float(var)


# --- CFA and geometry -----------------------------------------------------------------------

@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_mosaic_puts_red_on_red_sites(pattern: str) -> None:
    rgb = np.zeros((8, 10, 3), np.float32)
    rgb[..., 0] = 1000.0
    m = synth.mosaic(rgb, pattern)
    red_sites = synth.cfa_channels(pattern, (8, 10)) == 0
    assert red_sites.sum() == 20
    assert np.all(m[red_sites] == 1000.0) and np.all(m[~red_sites] == 0.0)
    r_row, r_col = divmod(pattern.index("R"), 2)
    assert m[r_row, r_col] == 1000.0
    # OpenCV's explicit pattern codes turn the mosaic back into red.
    code = getattr(cv2, f"COLOR_Bayer{pattern}2RGB")
    back = cv2.cvtColor(m.astype(np.uint16), code).astype(float)
    assert back[2:-2, 2:-2, 0].min() > 900 and back[2:-2, 2:-2, 1:].max() < 1


def test_light_transforms_and_flags(night: synth.NightTruth) -> None:
    lights = night.lights
    assert np.array_equal(lights[0].transform, np.eye(3))
    for f in lights:
        assert np.allclose(f.inverse @ f.transform, np.eye(3))
    flags = [flag for f in lights for flag in f.flags]
    for flag in ("bad_seeing", "cloud", "trail", "flip", "scaled"):
        assert flag in flags
    flip = next(f for f in lights if f.flip)
    cx, cy = (night.config.width - 1) / 2, (night.config.height - 1) / 2
    x, y = synth.apply_transform(flip.transform, cx + 100.0, cy)
    assert x < cx - 50  # 180 degrees about the centre (plus a small dither)
    scaled = next(f for f in lights if f.scaled)
    assert abs(np.linalg.det(scaled.transform[:2, :2]) - 1.08**2) < 1e-9
    assert all(f.fwhm >= 6.0 for f in lights if f.bad_seeing)
    assert all(2.5 <= f.fwhm <= 4.5 for f in lights if not f.bad_seeing)
    times = [f.date_obs for f in night.frames()]
    assert times == sorted(times[: len(lights)]) + times[len(lights):]


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        synth.NightConfig(pattern="RGBG")
    with pytest.raises(ConfigError):
        synth.NightConfig(file_format="dng", row_order="BOTTOM-UP")


# --- stars ----------------------------------------------------------------------------------

@pytest.mark.parametrize("psf", ["gaussian", "moffat"])
def test_render_stars_centroid_and_flux(psf: str) -> None:
    rng = np.random.default_rng(3)
    x = 20 + 40 * np.arange(6) + rng.uniform(-0.5, 0.5, 6)
    y = 30 + rng.uniform(-0.5, 0.5, 6)
    img = synth.render_stars((60, 260), x, y, np.full(6, 1e4), 3.2, psf=psf, cutoff=1e-4)
    for xi, yi in zip(x, y, strict=True):
        x0, y0 = int(xi) - 18, int(yi) - 18
        total, cx, cy, var = _centre_moments(img[y0:y0 + 37, x0:x0 + 37], x0, y0)
        assert abs(cx - xi) < 0.02 and abs(cy - yi) < 0.02
        assert total == pytest.approx(1e4, rel=0.01)
        if psf == "gaussian":  # pixel integration adds a 1/12 px^2 box variance
            fwhm = np.sqrt(var - 1 / 12) * synth.FWHM_PER_SIGMA
            assert fwhm == pytest.approx(3.2, rel=0.01)


def test_stars_in_lights_sit_at_transformed_positions(night: synth.NightTruth) -> None:
    cfg, sky = night.config, night.sky
    checked = 0
    for frame in night.lights[1:]:
        img = synth.expected_electrons(night, frame, smooth=False, trail=False, flat=False,
                                       dark=False)
        xs, ys = synth.apply_transform(frame.transform, sky.x, sky.y)
        half = int(np.ceil(3.5 * frame.fwhm))
        g = sky.flux[:, 1]
        for i in np.argsort(-g)[:60]:
            inside = (half + 2 < xs[i] < cfg.width - half - 3
                      and half + 2 < ys[i] < cfg.height - half - 3)
            others = np.hypot(xs - xs[i], ys - ys[i])
            # no other star's light may reach the window
            near = (others < 1.5 * half + 3 * frame.fwhm) & (np.arange(g.size) != i)
            if not inside or near.any():
                continue
            x0, y0 = int(round(xs[i])) - half, int(round(ys[i])) - half
            win = img[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1]
            chan = night.detector.channels[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1]
            psf = win / (sky.flux[i][chan] * frame.exposure * frame.transmission)
            total, cx, cy, var = _centre_moments(psf, x0, y0)
            assert total == pytest.approx(1.0, abs=2e-3)
            assert abs(cx - xs[i]) < 0.02 and abs(cy - ys[i]) < 0.02
            fwhm = np.sqrt(var - 1 / 12) * synth.FWHM_PER_SIGMA
            assert fwhm == pytest.approx(frame.fwhm, rel=0.03)
            checked += 1
    assert checked >= 10


# --- detector -------------------------------------------------------------------------------

def test_bias_level_and_read_noise() -> None:
    n = synth.make_night(SMALL)
    a, b = (synth.render_frame(n, f).astype(np.float64) for f in n.bias[:2])
    rn_adu = SMALL.read_noise / SMALL.e_per_adu
    assert a.mean() == pytest.approx(SMALL.bias_level, rel=0.01)
    assert a.std() == pytest.approx(rn_adu, rel=0.03)
    assert (a - b).std() / np.sqrt(2) == pytest.approx(rn_adu, rel=0.02)


def test_dark_current_doubles_and_hot_pixels_are_where_truth_says(night: synth.NightTruth
                                                                  ) -> None:
    cfg, det = night.config, night.detector
    frame = night.darks[0]
    dark = synth.render_frame(night, frame).astype(np.float64) - det.bias
    hot = det.hot_mask
    # dark current at 20 C: 0.02 e-/s at 0 C doubling every 6 C
    expected = 0.02 * 2 ** (frame.temperature / 6.0) * frame.exposure / cfg.e_per_adu
    assert np.mean(dark[~hot]) == pytest.approx(expected, rel=0.03)
    sigma = 1.4826 * np.median(np.abs(dark - np.median(dark)))
    found = dark - np.median(dark) > 10 * sigma
    assert np.all(hot[found])
    excess = det.hot_rates * det.dark_scale(frame.temperature) * frame.exposure / cfg.e_per_adu
    strong = det.hot_pixels[excess > 20 * sigma]
    assert len(strong) > 10
    assert found[strong[:, 1], strong[:, 0]].all()


def test_flats_show_the_configured_vignetting_and_dust() -> None:
    cfg = replace(SMALL, width=480, height=320, n_flats=4, n_bias=4, n_dust=0, prnu=0.0)
    n = synth.make_night(cfg)
    master_bias = np.mean([synth.render_frame(n, f) for f in n.bias], axis=0)
    flat = np.mean([synth.render_frame(n, f) for f in n.flats], axis=0) - master_bias
    green = n.detector.channels == 1
    truth = n.detector.flat
    h, w = flat.shape

    def ratio(img: np.ndarray, ys: slice, xs: slice) -> float:
        centre = (slice(h // 2 - 20, h // 2 + 20), slice(w // 2 - 20, w // 2 + 20))
        return float(img[ys, xs][green[ys, xs]].mean() / img[centre][green[centre]].mean())

    corners = [(slice(0, 12), slice(0, 12)), (slice(0, 12), slice(w - 12, w)),
               (slice(h - 12, h), slice(0, 12)), (slice(h - 12, h), slice(w - 12, w))]
    measured = [ratio(flat, *c) for c in corners]
    true = [ratio(truth, *c) for c in corners]
    assert np.allclose(measured, true, atol=0.01)
    assert np.mean(measured) == pytest.approx(1 - cfg.vignetting, abs=0.03)
    illum = n.flats[0].illumination[1]
    assert flat[green].max() < 0.5 * cfg.white_level
    assert illum / cfg.e_per_adu == pytest.approx(cfg.flat_level * cfg.white_level, rel=0.02)

    clean_cfg = replace(cfg, seed=11, cold_pixel_fraction=0.0)
    dusty = synth.make_night(replace(clean_cfg, n_dust=3)).detector
    shadow = dusty.flat / synth.make_night(clean_cfg).detector.flat  # dust alone
    yy, xx = np.mgrid[0:h, 0:w]
    for x0, y0, radius, depth in dusty.dust:
        r = np.hypot(xx - x0, yy - y0)
        ring = green & (r > 0.6 * radius) & (r < 0.8 * radius)
        alone = np.hypot(dusty.dust[:, 0] - x0, dusty.dust[:, 1] - y0) > radius + dusty.dust[:, 2]
        if alone.sum() == len(dusty.dust) - 1:  # not overlapping another donut
            assert shadow[ring].mean() == pytest.approx(1 - depth, abs=0.003)
        assert shadow[green & (r < 0.2 * radius)].mean() == pytest.approx(1.0, abs=0.002)
    far = np.ones((h, w), bool)
    for x0, y0, radius, _ in dusty.dust:
        far &= np.hypot(xx - x0, yy - y0) > 1.5 * radius
    assert np.allclose(shadow[far], 1.0, atol=1e-6)


def test_shot_noise_and_gain_in_flats() -> None:
    n = synth.make_night(replace(SMALL, n_flats=2))
    det, cfg = n.detector, n.config
    win = (slice(100, 140), slice(140, 180))
    green = det.channels[win] == 1
    a, b = (synth.render_frame(n, f).astype(np.float64)[win][green] for f in n.flats)
    mean_e = synth.expected_electrons(n, n.flats[0])[win][green]
    assert (a.mean() - cfg.bias_level) * cfg.e_per_adu == pytest.approx(mean_e.mean(), rel=0.01)
    diff = (a - a.mean()) - (b - b.mean())
    expected_var = mean_e.mean() / cfg.e_per_adu**2 + (cfg.read_noise / cfg.e_per_adu) ** 2
    assert diff.var() / 2 == pytest.approx(expected_var, rel=0.08)


def test_cloud_and_trail_frames(night: synth.NightTruth) -> None:
    cloud = next(f for f in night.lights if f.cloud)
    clear = night.lights[0]
    assert cloud.transmission < 0.7 and cloud.background_factor > 1.4
    bg = [np.median(synth.render_frame(night, f) - night.detector.bias) for f in (cloud, clear)]
    assert bg[0] / bg[1] == pytest.approx(cloud.background_factor, rel=0.1)
    trail = next(f for f in night.lights if f.trail is not None)
    with_trail = synth.expected_electrons(night, trail)
    without = synth.expected_electrons(night, trail, trail=False)
    x0, y0, x1, y1 = trail.trail
    t = np.linspace(0.45, 0.55, 50)
    xs, ys = np.rint(x0 + t * (x1 - x0)).astype(int), np.rint(y0 + t * (y1 - y0)).astype(int)
    ok = (xs >= 0) & (xs < night.config.width) & (ys >= 0) & (ys < night.config.height)
    assert ok.sum() > 10
    assert np.all(with_trail[ys[ok], xs[ok]] - without[ys[ok], xs[ok]] > 500)


# --- the written night ----------------------------------------------------------------------

def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    a = write_sample_night(tmp_path / "a", SMALL)
    b = write_sample_night(tmp_path / "b", SMALL)
    c = write_sample_night(tmp_path / "c", replace(SMALL, n_darks=0, n_flats=0, n_bias=0,
                                                   seed=8))
    files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 12
    for rel in files_a:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    assert a.lights[0].read_bytes() != c.lights[0].read_bytes()


def test_fits_night_layout_headers_and_data(tmp_path: Path) -> None:
    out = write_sample_night(tmp_path / "night", SMALL)
    root = out.root
    assert {p.name for p in root.iterdir()} == {"lights", "darks", "flats", "bias", "truth"}
    assert [p.name for p in out.lights][0] == "Light_M42_120.0s_0001.fits"
    assert [p.name for p in out.darks] == ["Dark_120.0s_0001.fits", "Dark_120.0s_0002.fits"]
    assert out.flats[0].name == "Flat_2.0s_0001.fits" and out.bias[0].name == "Bias_0.0s_0001.fits"
    imagetyp = {"lights": "Light Frame", "darks": "Dark Frame", "flats": "Flat Field",
                "bias": "Bias Frame"}
    frames = out.truth.frames()
    dates = []
    for path, frame in zip(out.all_paths, frames, strict=True):
        with fits.open(path, do_not_scale_image_data=True) as hdul:
            hdr, raw = hdul[0].header, hdul[0].data
        assert hdr["BITPIX"] == 16 and hdr["BZERO"] == 32768
        assert hdr["IMAGETYP"] == imagetyp[path.parent.name]
        for key in ("EXPTIME", "EXPOSURE", "GAIN", "OFFSET", "CCD-TEMP", "SET-TEMP", "DATE-OBS",
                    "BAYERPAT", "XBINNING", "YBINNING", "INSTRUME", "TELESCOP", "FILTER",
                    "XPIXSZ", "FOCALLEN", "ROWORDER"):
            assert key in hdr, key
        assert hdr["EXPTIME"] == frame.exposure and hdr["BAYERPAT"] == "RGGB"
        assert hdr["ROWORDER"] == "TOP-DOWN" and hdr["GAIN"] == SMALL.gain
        assert ("OBJECT" in hdr) == (frame.kind == FrameKind.LIGHT)
        dates.append(dt.datetime.fromisoformat(hdr["DATE-OBS"]))
        data, _ = read_fits_image(path)
        assert raw.shape == (SMALL.height, SMALL.width)
        assert np.array_equal(data, synth.render_frame(out.truth, frame))
    assert dates == sorted(dates[: SMALL.n_lights]) + dates[SMALL.n_lights:]
    assert len(set(dates)) == len(dates)

    doc, arrays = read_sample_truth(root)
    assert doc["e_per_adu"] == SMALL.e_per_adu and doc["bias_level"] == SMALL.bias_level
    assert len(doc["hot_pixels"]) == round(SMALL.hot_pixel_fraction * 320 * 240)
    lights = [f for f in doc["frames"] if f["kind"] == "light"]
    assert lights[1]["file"] == "lights/Light_M42_120.0s_0002.fits"
    assert np.allclose(lights[1]["transform"], out.truth.lights[1].transform)
    assert arrays["sky"].shape == (240, 320, 3) and arrays["flat"].shape == (240, 320)
    assert arrays["hot_pixels"].sum() == len(doc["hot_pixels"])
    assert json.loads(out.truth_json.read_text())["config"]["seed"] == 7


def test_bottom_up_night_flips_rows_and_pattern(tmp_path: Path) -> None:
    from oscdeep.io.headers import read_frame_meta

    cfg = replace(SMALL, row_order="BOTTOM-UP", pattern="GRBG", n_darks=0, n_flats=0, n_bias=0)
    out = write_sample_night(tmp_path / "bu", cfg)
    path = out.lights[1]
    with fits.open(path) as hdul:
        hdr, stored = hdul[0].header, hdul[0].data
    assert hdr["ROWORDER"] == "BOTTOM-UP"
    assert hdr["BAYERPAT"] == flip_pattern_rows("GRBG", cfg.height) == "BGGR"
    truth_img = synth.render_frame(out.truth, out.truth.lights[1])
    assert np.array_equal(stored, truth_img[::-1])
    data, _ = read_fits_image(path)
    assert np.array_equal(data, truth_img)
    assert read_frame_meta(path).bayer_pattern == "GRBG"


def test_dng_night_is_read_by_rawpy(tmp_path: Path) -> None:
    pytest.importorskip("pyexiv2")
    rawpy = pytest.importorskip("rawpy")
    cfg = replace(SMALL, file_format="dng", pattern="GBRG", n_lights=2, n_darks=1, n_flats=1,
                  n_bias=1, iso=1600)
    out = write_sample_night(tmp_path / "dng", cfg)
    assert out.lights[0].name == "Light_M42_120.0s_0001.dng"
    assert out.darks[0].parent.name == "darks"
    frame = out.truth.lights[1]
    with rawpy.imread(str(out.lights[1])) as raw:
        pattern = "".join(chr(raw.color_desc[i]) for i in raw.raw_pattern.flat)
        assert pattern == "GBRG"
        assert np.array_equal(raw.raw_image, synth.render_frame(out.truth, frame))
        assert list(raw.black_level_per_channel) == [800] * 4
        assert raw.white_level == cfg.white_level
        assert raw.other.iso_speed == 1600
        assert raw.other.shutter_speed == pytest.approx(120.0)
