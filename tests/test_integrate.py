"""The band driver: equal to a whole-array reference, rejection physics, normalisation,
FITS row reads, and the memory bound."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from oscdeep.errors import ConfigError, FrameReadError
from oscdeep.integrate import (
    ArraySource,
    CombineOptions,
    FitsSource,
    Normalization,
    TransformSource,
    band_rows_for_budget,
    combine,
    frame_location_scale,
    memory_for_band_rows,
    normalization_coefficients,
    parse_memory_size,
)
from oscdeep.io.fits import read_fits_image, write_fits_image
from oscdeep.rejection import RejectionParams

from tests.test_rejection import reference

from .conftest import RecordingProgress

METHODS = ["none", "percentile", "sigma", "winsorized", "linear", "median"]


def noisy_frames(n: int, shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Frames of a smooth sky plus noise, with hot/cold outliers and NaN gaps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    sky = 200.0 + 0.5 * xx + 0.3 * yy
    if len(shape) == 3:
        sky = sky[..., None] * np.array([1.0, 1.3, 0.8])
    frames = []
    for _ in range(n):
        f = sky + rng.normal(0, 4.0, shape)
        hits = rng.random(shape)
        f[hits < 0.03] += rng.uniform(100, 5000, (hits < 0.03).sum())
        f[hits > 0.99] -= 60
        f[rng.random(shape) < 0.05] = np.nan
        f[:2, :2] = np.nan  # a corner with no data in any frame
        frames.append(f.astype(np.float32))
    return frames




@pytest.mark.parametrize("rows", [1, 7, 13])
@pytest.mark.parametrize("shape", [(29, 23), (17, 11, 3)], ids=["mono", "rgb"])
def test_bands_equal_whole_array_reference(shape: tuple[int, ...], rows: int) -> None:
    n = 8
    frames = noisy_frames(n, shape, seed=rows)
    weights = np.linspace(0.5, 2.0, n)
    whole = np.stack(frames).reshape(n, -1)
    for method in METHODS:
        options = CombineOptions(rejection=method, band_rows=rows, sigma_low=2.5)
        result = combine([ArraySource(f) for f in frames], options=options, weights=weights)
        params = options.rejection_params()
        want = reference(whole, weights if params.combine == "mean" else None, params)
        assert result.image.shape == shape and result.image.dtype == np.float32
        assert result.n_bands == math.ceil(shape[0] / rows)
        np.testing.assert_allclose(result.image.reshape(-1), want[0], rtol=2e-6, atol=1e-4,
                                   equal_nan=True)
        np.testing.assert_array_equal(result.rejected_low.reshape(-1), want[1])
        np.testing.assert_array_equal(result.rejected_high.reshape(-1), want[2])
        np.testing.assert_array_equal(result.n_used.reshape(-1), want[3])
        assert np.isnan(result.image[:2, :2]).all() and not result.n_used[:2, :2].any()


@pytest.mark.parametrize("n", [3, 25])
def test_frame_counts_and_prefetch(n: int) -> None:
    frames = noisy_frames(n, (40, 31), seed=n)
    sources = [ArraySource(f) for f in frames]
    plain = combine(sources, options=CombineOptions(band_rows=40))
    banded = combine(sources, options=CombineOptions(band_rows=9, prefetch=True))
    np.testing.assert_array_equal(plain.image, banded.image)
    np.testing.assert_array_equal(plain.n_used, banded.n_used)
    for f, low, high in zip(frames, banded.frame_rejected_low_fraction,
                            banded.frame_rejected_high_fraction, strict=True):
        assert 0 <= low < 0.05 and 0 <= high < 0.06
    valid = np.array([np.isfinite(f).sum() for f in frames])
    rejected = banded.frame_rejected_fraction * valid
    total = banded.rejected_low.sum(dtype=np.int64) + banded.rejected_high.sum(dtype=np.int64)
    assert round(rejected.sum()) == total


def test_cosmic_rays_removed_from_master() -> None:
    rng = np.random.default_rng(42)
    n, sigma, level = 15, 10.0, 1000.0
    frames = rng.normal(level, sigma, (n, 64, 64)).astype(np.float32)
    pixels = rng.permutation(64 * 64)
    hit_mask = np.zeros(64 * 64, bool)
    for k, f in enumerate((2, 7, 11)):  # 40 rays in each of three frames, never coinciding
        hits = pixels[k * 40:(k + 1) * 40]
        frames[f].reshape(-1)[hits] += rng.uniform(500, 20000, 40)
        hit_mask[hits] = True
    double = pixels[200:210]  # ...and ten pixels hit in two frames at once
    frames[4].reshape(-1)[double] += 8000
    frames[5].reshape(-1)[double] += 9000
    hit_mask = hit_mask.reshape(64, 64)
    double_mask = np.isin(np.arange(64 * 64), double).reshape(64, 64)
    sources = [ArraySource(f) for f in frames]
    limit = 3 * sigma / math.sqrt(n - 1)  # 3 sigma of the mean of the survivors
    for method in ("sigma", "winsorized"):
        result = combine(sources, options=CombineOptions(rejection=method))
        residual = np.abs(result.image[hit_mask] - level)
        assert residual.max() < limit, method
        assert (result.rejected_high[hit_mask] >= 1).all()
        assert result.frame_rejected_high_fraction[[2, 7, 11]].min() > 0.009
    # Two similar rays in one pixel inflate the plain standard deviation enough to hide
    # both from sigma clipping; the winsorized spread is not fooled.
    result = combine(sources, options=CombineOptions(rejection="winsorized"))
    assert np.abs(result.image[double_mask] - level).max() < 3 * sigma / math.sqrt(n - 2)
    assert (result.rejected_high[double_mask] >= 2).all()
    plain = combine(sources, options=CombineOptions(rejection="none"))
    assert np.abs(plain.image[hit_mask] - level).min() > limit


def test_noise_falls_as_one_over_sqrt_n() -> None:
    rng = np.random.default_rng(3)
    n, sigma = 20, 1.0
    frames = [rng.normal(0, sigma, (128, 128)).astype(np.float32) for _ in range(n)]
    sources = [ArraySource(f) for f in frames]
    expected = sigma / math.sqrt(n)
    mean = combine(sources, options=CombineOptions(rejection="none")).image.std()
    winsor = combine(sources, options=CombineOptions(rejection="winsorized")).image.std()
    assert abs(mean / expected - 1) < 0.05
    assert abs(winsor / expected - 1) < 0.10
    assert winsor >= mean * 0.99  # rejection cannot beat the plain mean on pure noise


def sky_frame(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    sky = 500.0 + 0.2 * xx + rng.normal(0, 20.0, shape[:2])
    stars = rng.random(shape[:2]) < 0.002
    sky[stars] += 3000
    if len(shape) == 3:
        sky = sky[..., None] * np.array([0.9, 1.0, 1.2])
    return sky


@pytest.mark.parametrize("shape", [(200, 150), (120, 90, 3)], ids=["mono", "rgb"])
def test_normalisation_recovers_known_gains_and_offsets(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(9)
    base = sky_frame(rng, shape)
    gains = np.array([1.0, 1.25, 0.8, 1.6, 0.95])
    offsets = np.array([0.0, -120.0, 300.0, 55.0, 999.0])
    frames = [(g * base + o).astype(np.float32) for g, o in zip(gains, offsets, strict=True)]
    loc_scale = [frame_location_scale(ArraySource(f)) for f in frames]
    locs = np.array([ls[0] for ls in loc_scale])
    scales = np.array([ls[1] for ls in loc_scale])
    g, o = normalization_coefficients(locs, scales, "additive_scaling")
    for i, f in enumerate(frames):
        restored = f * g[i].astype(np.float32) + o[i].astype(np.float32)
        np.testing.assert_allclose(restored, base, rtol=0.005)
    np.testing.assert_allclose(g[:, 0], 1 / gains, rtol=0.005)

    # Independent noise per frame; the combined image sits on the reference's level.
    noisy = [(g_ * (base + rng.normal(0, 5, shape)) + o_).astype(np.float32)
             for g_, o_ in zip(gains, offsets, strict=True)]
    result = combine([ArraySource(f) for f in noisy], options=CombineOptions(
        normalization="additive_scaling", rejection="winsorized", band_rows=17))
    assert abs(np.median(result.image) / np.median(base) - 1) < 0.005
    np.testing.assert_allclose(result.gains[:, 0], 1 / gains, rtol=0.03)  # MAD of noise
    assert result.locations.shape == (5, 3 if len(shape) == 3 else 1)


def test_normalisation_modes() -> None:
    rng = np.random.default_rng(1)
    base = sky_frame(rng, (160, 120))
    offset_frames = [(base + o).astype(np.float32) for o in (0.0, 80.0, -40.0)]
    gain_frames = [(base * g).astype(np.float32) for g in (1.0, 1.3, 0.9)]
    for frames, mode in ((offset_frames, "additive"), (gain_frames, "multiplicative")):
        result = combine([ArraySource(f) for f in frames], options=CombineOptions(
            normalization=mode, rejection="none"))
        np.testing.assert_allclose(result.image, base, rtol=0.005)
        unnormalised = combine([ArraySource(f) for f in frames],
                               options=CombineOptions(rejection="none")).image
        assert np.abs(unnormalised / base - 1).max() > 0.01
    # Siril's multiplicative + scaling multiplies both ratios.
    locs = np.array([[100.0], [200.0]])
    scales = np.array([[10.0], [5.0]])
    g, o = normalization_coefficients(locs, scales, "mulscale")
    np.testing.assert_allclose(g[:, 0], [1.0, 0.5 * 2.0])
    assert Normalization("addscale") is Normalization.ADDITIVE_SCALING
    assert Normalization("no") is Normalization.NONE


def test_reference_frame_option() -> None:
    rng = np.random.default_rng(2)
    base = sky_frame(rng, (64, 64))
    frames = [(base + o).astype(np.float32) for o in (0.0, 100.0, 200.0)]
    result = combine([ArraySource(f) for f in frames], options=CombineOptions(
        normalization="additive", reference=2, rejection="none"))
    np.testing.assert_allclose(result.image, base + 200.0, rtol=1e-4)
    np.testing.assert_allclose(result.offsets[:, 0], [200.0, 100.0, 0.0], atol=1e-3)


def test_transform_source_sees_its_rows_and_margin() -> None:
    base = np.arange(30 * 4, dtype=np.float32).reshape(30, 4)
    seen: list[tuple[int, int]] = []

    def fn(band: np.ndarray, y0: int) -> np.ndarray:
        seen.append((y0, y0 + band.shape[0]))
        return band * 2 + y0 * 0  # pure function of the pixels

    src = TransformSource(ArraySource(base), fn, margin=2)
    np.testing.assert_array_equal(src.read_rows(5, 9), base[5:9] * 2)
    assert seen[-1] == (3, 11)
    np.testing.assert_array_equal(src.read_rows(0, 3), base[0:3] * 2)
    assert seen[-1] == (0, 5)
    rgb = TransformSource(ArraySource(base), lambda b, y0: np.repeat(b[..., None], 3, 2),
                          shape=(30, 4, 3))
    result = combine([rgb, rgb], options=CombineOptions(rejection="none", band_rows=7))
    np.testing.assert_array_equal(result.image[..., 1], base)


# --------------------------------------------------------------------------- FITS rows

def check_rows(path: Path, full: np.ndarray) -> None:
    src = FitsSource(path)
    assert src.shape == full.shape
    for y0, y1 in ((0, 1), (3, 10), (0, full.shape[0]), (full.shape[0] - 4, full.shape[0])):
        got = src.read_rows(y0, y1)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, full[y0:y1])


def test_fits_source_uint16_bzero(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 65536, (21, 13)).astype(np.float32)
    path = write_fits_image(tmp_path / "u16.fits", data, dtype="uint16")
    assert fits.getheader(path)["BZERO"] == 32768
    full, _ = read_fits_image(path)
    np.testing.assert_array_equal(full, data)
    check_rows(path, full)


def test_fits_source_float32_with_nan_and_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, (17, 9)).astype(np.float32)
    data[3, 4] = np.nan
    check_rows(write_fits_image(tmp_path / "f32.fits", data), read_fits_image(
        tmp_path / "f32.fits")[0])
    rgb = rng.normal(0, 1, (15, 8, 3)).astype(np.float32)
    before = rgb.copy()
    path = write_fits_image(tmp_path / "rgb.fits", rgb)
    np.testing.assert_array_equal(rgb, before)  # the caller's array is left as it was
    np.testing.assert_array_equal(fits.getdata(path)[1], rgb[:, :, 1])  # stored as planes
    full, _ = read_fits_image(path)
    np.testing.assert_array_equal(full, rgb)
    check_rows(path, full)


def test_fits_source_bottom_up_bscale_blank_and_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    raw = rng.integers(-1000, 1000, (19, 11)).astype(np.int16)
    raw[5, 5] = -32768
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.header["BLANK"] = -32768
    hdu.header["ROWORDER"] = "BOTTOM-UP"
    path = tmp_path / "bu.fits"
    hdu.writeto(path)
    expected = (raw.astype(np.float32) * 0.5 + 100.0)
    expected[5, 5] = np.nan
    expected = expected[::-1]  # top-down
    src = FitsSource(path)
    for y0, y1 in ((0, 19), (2, 9), (18, 19)):
        np.testing.assert_array_equal(src.read_rows(y0, y1), expected[y0:y1])
    full, _ = read_fits_image(path)
    np.testing.assert_array_equal(full, expected)  # NaN where BLANK, in the same places
    gz = tmp_path / "bu.fits.gz"
    hdu.writeto(gz)
    np.testing.assert_array_equal(FitsSource(gz).read_rows(2, 9), expected[2:9])


def test_fits_source_extension_and_tile_compressed(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mono = rng.integers(0, 60000, (37, 23)).astype(np.uint16)
    rgb = rng.integers(0, 60000, (3, 21, 13)).astype(np.uint16)
    cases = {"ext.fits": (fits.ImageHDU(mono), mono),
             "comp.fits": (fits.CompImageHDU(mono), mono),
             "comprgb.fits": (fits.CompImageHDU(rgb), np.moveaxis(rgb, 0, -1))}
    for name, (hdu, expected) in cases.items():
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / name)
        src = FitsSource(tmp_path / name)
        assert src.shape == expected.shape
        np.testing.assert_array_equal(src.read_rows(3, 12), expected[3:12].astype(np.float32))


def test_fits_source_on_real_seestar_frames() -> None:
    from tests.conftest import SEESTAR, require_real

    paths = sorted(require_real(SEESTAR).glob("*.fit"))
    for path in paths[:2]:
        full, _ = read_fits_image(path)
        check_rows(path, full)
    result = combine([FitsSource(p) for p in paths], options=CombineOptions(
        normalization="additive_scaling", memory_bytes=64 << 20))
    assert result.n_bands > 1 and np.isfinite(result.image).all()
    assert result.frame_rejected_fraction.max() < 0.2


def test_fits_source_rejects_bad_files(tmp_path: Path) -> None:
    path = write_fits_image(tmp_path / "x.fits", np.zeros((50, 40), np.float32))
    truncated = tmp_path / "t.fits"
    truncated.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(FrameReadError):
        FitsSource(truncated)
    (tmp_path / "junk.fits").write_bytes(b"not a fits file" * 300)
    with pytest.raises(FrameReadError):
        FitsSource(tmp_path / "junk.fits")


def test_combine_fits_equals_combine_arrays(tmp_path: Path) -> None:
    frames = [np.rint(f).clip(0, 65535) for f in noisy_frames(6, (33, 20), seed=4)]
    frames = [np.nan_to_num(f, nan=0.0).astype(np.float32) for f in frames]
    paths = [write_fits_image(tmp_path / f"{i}.fits", f, dtype="uint16")
             for i, f in enumerate(frames)]
    options = CombineOptions(band_rows=5, normalization="additive_scaling")
    a = combine([FitsSource(p) for p in paths], options=options)
    b = combine([ArraySource(f) for f in frames], options=options)
    np.testing.assert_array_equal(a.image, b.image)


# --------------------------------------------------------------------------- options

def test_options_and_errors() -> None:
    opts = CombineOptions(rejection="median")
    assert opts.rejection == "none" and opts.combine == "median"
    assert opts.rejection_params() == RejectionParams("none", "median")
    with pytest.raises(ConfigError):
        CombineOptions(rejection="nope")
    with pytest.raises(ConfigError):
        CombineOptions(normalization="sideways")
    with pytest.raises(ConfigError):
        combine([])
    with pytest.raises(ConfigError):
        combine([ArraySource(np.zeros((4, 4))), ArraySource(np.zeros((4, 5)))])
    with pytest.raises(ConfigError):
        combine([ArraySource(np.zeros((4, 4)))], weights=[0.0])
    with pytest.raises(ConfigError, match="too small"):
        combine([ArraySource(np.zeros((400, 400)))] * 3,
                options=CombineOptions(memory_bytes=1 << 20))
    assert parse_memory_size("2G") == 2 << 30
    assert parse_memory_size("500MiB") == 500 << 20
    assert parse_memory_size("1.5k") == 1536
    with pytest.raises(ConfigError):
        parse_memory_size("lots")


def test_budget_sets_band_height() -> None:
    shape = (101, 37, 3)
    frames = noisy_frames(5, shape, seed=8)
    for rows in (1, 7, 13):
        budget = memory_for_band_rows(5, shape, rows, workers=1)
        assert band_rows_for_budget(5, shape, budget, workers=1) == rows
        result = combine([ArraySource(f) for f in frames],
                         options=CombineOptions(memory_bytes=budget, workers=1))
        assert result.band_rows <= rows and result.n_bands == math.ceil(101 / rows)
        assert result.memory_bytes <= budget


def test_progress_reports_every_band() -> None:
    frames = noisy_frames(4, (30, 10), seed=1)
    rec = RecordingProgress()
    combine([ArraySource(f) for f in frames], progress=rec,
            options=CombineOptions(band_rows=8, normalization="additive"))
    begins = [e for e in rec.events if e[0] == "begin"]
    assert [b[2] for b in begins] == [4, 4]  # 4 frames measured, then 4 bands
    assert sum(e[1] for e in rec.events if e[0] == "advance") == 8
    assert rec.events[-1] == ("end",)


# --------------------------------------------------------------------------- memory bound

MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, threading, time
    import numpy as np
    from oscdeep.integrate import ArraySource, CombineOptions, FitsSource, combine

    def rss_anon():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024

    paths, budget = sys.argv[1:-1], int(sys.argv[-1])
    warm = [ArraySource(np.zeros((8, 8), np.float32))] * 3
    combine(warm, options=CombineOptions(normalization="additive_scaling"))  # load kernels
    baseline = rss_anon()
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    result = combine([FitsSource(p) for p in paths], options=CombineOptions(
        memory_bytes=budget, normalization="additive_scaling"))
    done.set()
    thread.join()
    print(json.dumps({"baseline": baseline, "peak": peak[0], "rows": result.band_rows,
                      "bands": result.n_bands, "planned": result.memory_bytes,
                      "mean": float(np.nanmean(result.image))}))
""")


def test_peak_anonymous_memory_stays_under_budget(tmp_path: Path) -> None:
    # Below MAX_BAND_BYTES + the output maps, so that the budget is what limits the bands.
    n, shape, budget = 40, (1500, 2000), 100 << 20
    rng = np.random.default_rng(0)
    frame = rng.normal(1000, 30, shape).astype(np.float32)
    paths = []
    for i in range(n):
        hot = frame.copy()
        hot[::97, i::40] += 5000  # a few hot pixels that move from frame to frame
        paths.append(str(write_fits_image(tmp_path / f"f{i:02d}.fits", hot, dtype="uint16")))
    script = tmp_path / "measure.py"
    script.write_text(MEMORY_SCRIPT)
    out = subprocess.run([sys.executable, str(script), *paths, str(budget)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    report = json.loads(out.stdout.strip().splitlines()[-1])
    used = report["peak"] - report["baseline"]
    assert report["bands"] > 1 and report["planned"] <= budget
    assert used <= budget + (16 << 20), report
    assert used >= budget // 2, report  # the budget is actually used, not just respected
    assert abs(report["mean"] - 1000) < 5
