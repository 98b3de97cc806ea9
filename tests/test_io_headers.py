"""FITS metadata, frame kinds from names, scanning, error handling and the real Seestar files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from oscdeep.errors import FrameReadError, UnsupportedFileError
from oscdeep.io.frames import read_frame
from oscdeep.io.headers import (
    detect_format,
    kind_from_path,
    kind_from_text,
    meta_from_fits_header,
    parse_fits_datetime,
    read_frame_meta,
)
from oscdeep.io.scan import scan_paths
from oscdeep.types import BAYER_PATTERNS, FileFormat, FrameKind

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SEESTAR = REAL / "seestar_s50_zeseestarstacker"

# Distinct values on each colour's sites, so a pattern can be read back from pixels.
SITE_VALUE = {"R": 3000, "G": 2000, "B": 1000}
VALUE_SITE = {v: k for k, v in SITE_VALUE.items()}


def coded_mosaic(height: int, width: int, pattern: str, seed: int = 0) -> np.ndarray:
    """uint16 mosaic with ``pattern`` at (0, 0): R/G/B sites hold 3000/2000/1000 (+ 0..9 noise)."""
    rng = np.random.default_rng(seed)
    mosaic = rng.integers(0, 10, (height, width)).astype(np.uint16)
    for dy in (0, 1):
        for dx in (0, 1):
            mosaic[dy::2, dx::2] += SITE_VALUE[pattern[2 * dy + dx]]
    return mosaic


def pattern_in_pixels(image: np.ndarray, row: int = 0, col: int = 0) -> str:
    """Colour letters of the 2x2 cell starting at (row, col), read from coded values."""
    cell = image[row:row + 2, col:col + 2]
    return "".join(VALUE_SITE[int(v) // 1000 * 1000] for v in cell.flat)


def write_fits(path: Path, data: np.ndarray, **cards: object) -> Path:
    """A camera-like FITS file (uint16 as BITPIX 16 + BZERO) with the given cards."""
    header = fits.Header()
    dashed = {"CCD_TEMP": "CCD-TEMP", "SET_TEMP": "SET-TEMP", "DATE_OBS": "DATE-OBS"}
    for key, value in cards.items():
        header[dashed.get(key, key)] = value
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


FULL_CARDS = dict(
    IMAGETYP="Light Frame", EXPTIME=120.0, GAIN=100, OFFSET=50, CCD_TEMP=-9.8, SET_TEMP=-10.0,
    DATE_OBS="2026-11-20T21:03:04.250", XBINNING=1, YBINNING=1, FILTER="L-eXtreme",
    OBJECT="M 31", INSTRUME="ZWO ASI2600MC Pro", TELESCOP="RedCat 51", FOCALLEN=250.0,
    XPIXSZ=3.76,
)


# ---------------------------------------------------------------------------------------------
# FITS files: exact metadata and pattern against the pixels


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_fits_meta_exact_for_each_pattern(tmp_path: Path, pattern: str) -> None:
    data = coded_mosaic(24, 36, pattern)
    path = write_fits(tmp_path / f"x_{pattern}.fits", data, BAYERPAT=pattern, **FULL_CARDS)
    meta = read_frame_meta(path)
    assert meta.file_format is FileFormat.FITS
    assert (meta.width, meta.height) == (36, 24)
    assert meta.kind is FrameKind.LIGHT
    assert meta.bayer_pattern == pattern
    assert meta.exposure == 120.0 and meta.gain == 100.0 and meta.offset == 50.0
    assert meta.temperature == pytest.approx(-9.8) and meta.set_temperature == -10.0
    assert meta.date_obs == dt.datetime(2026, 11, 20, 21, 3, 4, 250000)
    assert (meta.xbinning, meta.ybinning) == (1, 1)
    assert (meta.filter, meta.object) == ("L-eXtreme", "M 31")
    assert (meta.instrument, meta.telescope) == ("ZWO ASI2600MC Pro", "RedCat 51")
    assert meta.focal_length == 250.0 and meta.pixel_size == pytest.approx(3.76)
    assert meta.row_order is None
    image, meta2 = read_frame(path)
    assert image.dtype == np.float32 and image.shape == (24, 36)
    assert np.array_equal(image, data.astype(np.float32))
    assert meta2 == meta
    assert pattern_in_pixels(image) == meta.bayer_pattern
    red_rows, red_cols = np.nonzero(image // 1000 == 3)
    r = meta.bayer_pattern.index("R")
    assert set(red_rows % 2) == {r // 2} and set(red_cols % 2) == {r % 2}


@pytest.mark.parametrize("height", [24, 25])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bottom_up_pattern_follows_the_flip(tmp_path: Path, pattern: str, height: int) -> None:
    top_down = coded_mosaic(height, 30, pattern)
    stored = top_down[::-1]
    stored_pattern = pattern_in_pixels(stored)  # what the camera writes: pattern of stored row 0
    path = write_fits(tmp_path / "bu.fits", stored, BAYERPAT=stored_pattern, ROWORDER="BOTTOM-UP")
    meta = read_frame_meta(path)
    image, _ = read_frame(path)
    assert meta.row_order == "BOTTOM-UP"
    assert np.array_equal(image, top_down.astype(np.float32))
    assert meta.bayer_pattern == pattern == pattern_in_pixels(image)
    if height % 2 == 0:
        assert stored_pattern != pattern  # an even height really changes the pattern
    else:
        assert stored_pattern == pattern


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (0, 1), (1, 1), (2, 3)])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bayer_offsets(tmp_path: Path, pattern: str, dx: int, dy: int) -> None:
    data = coded_mosaic(20, 30, pattern)
    # BAYERPAT names the cell that starts XBAYROFF columns / YBAYROFF rows into the array.
    declared = pattern_in_pixels(data, dy % 2, dx % 2)
    path = write_fits(tmp_path / "off.fits", data, BAYERPAT=declared, XBAYROFF=dx, YBAYROFF=dy)
    assert read_frame_meta(path).bayer_pattern == pattern


def test_offsets_and_bottom_up_together(tmp_path: Path) -> None:
    top_down = coded_mosaic(26, 30, "RGGB")
    stored = top_down[::-1]
    declared = pattern_in_pixels(stored, 1, 1)
    path = write_fits(tmp_path / "both.fits", stored, BAYERPAT=declared, XBAYROFF=1,
                      YBAYROFF=1, ROWORDER="BOTTOM-UP")
    image, meta = read_frame(path)
    assert meta.bayer_pattern == "RGGB" == pattern_in_pixels(image)


def test_fits_magic_without_fits_suffix(tmp_path: Path) -> None:
    path = write_fits(tmp_path / "frame.fits", coded_mosaic(8, 8, "RGGB"), BAYERPAT="RGGB")
    odd = path.rename(tmp_path / "frame.dat")
    assert detect_format(odd) is FileFormat.FITS
    assert read_frame_meta(odd).bayer_pattern == "RGGB"


def test_read_frame_meta_does_not_read_pixels(tmp_path: Path, monkeypatch) -> None:
    path = write_fits(tmp_path / "m.fits", coded_mosaic(8, 8, "RGGB"), BAYERPAT="RGGB")

    def fail(*args, **kwargs):
        raise AssertionError("pixel data read during a header read")

    monkeypatch.setattr(fits.ImageHDU, "data", property(fail), raising=False)
    monkeypatch.setattr(fits.PrimaryHDU, "data", property(fail), raising=False)
    assert read_frame_meta(path).bayer_pattern == "RGGB"


# ---------------------------------------------------------------------------------------------
# header values: table tests on plain dicts

BASE = {"NAXIS": 2, "NAXIS1": 40, "NAXIS2": 30}


@pytest.mark.parametrize(("value", "kind"), [
    ("Light Frame", FrameKind.LIGHT), ("LIGHT", FrameKind.LIGHT), ("Light", FrameKind.LIGHT),
    ("light frame", FrameKind.LIGHT), ("Object", FrameKind.LIGHT),
    ("Dark Frame", FrameKind.DARK), ("DARK", FrameKind.DARK), ("dark", FrameKind.DARK),
    ("Bias Frame", FrameKind.BIAS), ("BIAS", FrameKind.BIAS), ("Offset", FrameKind.BIAS),
    ("Flat Field", FrameKind.FLAT), ("FLAT", FrameKind.FLAT), ("Flat Frame", FrameKind.FLAT),
    ("Dark Flat", FrameKind.DARKFLAT), ("DARKFLAT", FrameKind.DARKFLAT),
    ("FLATDARK", FrameKind.DARKFLAT), ("Flat Dark", FrameKind.DARKFLAT),
    ("dark_flat", FrameKind.DARKFLAT),
    ("FK5", None), ("", None), ("  ", None), (42, None), (None, None),
])
def test_kind_from_text(value: object, kind: FrameKind | None) -> None:
    assert kind_from_text(value) is kind


def test_kind_from_frame_card_when_imagetyp_is_absent() -> None:
    assert meta_from_fits_header({**BASE, "FRAME": "Dark"}, "x.fits").kind is FrameKind.DARK
    assert meta_from_fits_header({**BASE, "FRAME": "FK5"}, "x.fits").kind is None
    both = {**BASE, "IMAGETYP": "Flat Field", "FRAME": "Light"}
    assert meta_from_fits_header(both, "x.fits").kind is FrameKind.FLAT


@pytest.mark.parametrize(("date", "time", "expected"), [
    ("2025-03-27T01:20:32.955", None, dt.datetime(2025, 3, 27, 1, 20, 32, 955000)),
    ("2025-03-27T01:20:32", None, dt.datetime(2025, 3, 27, 1, 20, 32)),
    ("2025-03-27T01:20:32Z", None, dt.datetime(2025, 3, 27, 1, 20, 32)),
    ("2025-03-27T01:20:32.1234567", None, dt.datetime(2025, 3, 27, 1, 20, 32, 123456)),
    ("2025-03-27T03:20:32+02:00", None, dt.datetime(2025, 3, 27, 1, 20, 32)),
    ("2025-03-27", "01:20:32.5", dt.datetime(2025, 3, 27, 1, 20, 32, 500000)),
    ("2025-03-27", None, dt.datetime(2025, 3, 27)),
    ("2025-03-27T01:20:32", "05:00:00", dt.datetime(2025, 3, 27, 1, 20, 32)),
    ("27/03/97", None, dt.datetime(1997, 3, 27)),
    ("yesterday", None, None), ("", None, None), (None, None, None), (12.5, None, None),
])
def test_parse_fits_datetime(date: object, time: object, expected: dt.datetime | None) -> None:
    assert parse_fits_datetime(date, time) == expected


def test_date_obs_with_time_obs_in_header() -> None:
    meta = meta_from_fits_header({**BASE, "DATE-OBS": "2024-01-02", "TIME-OBS": "03:04:05"}, "x")
    assert meta.date_obs == dt.datetime(2024, 1, 2, 3, 4, 5)


def test_aliases() -> None:
    meta = meta_from_fits_header({**BASE, "EXPOSURE": 30, "CCD_TEMP": "-5.5", "SET_TEMP": -5,
                                  "COLORTYP": "gbrg"}, "x.fits")
    assert (meta.exposure, meta.temperature, meta.set_temperature) == (30.0, -5.5, -5.0)
    assert meta.bayer_pattern == "GBRG"
    meta = meta_from_fits_header({**BASE, "EXPTIME": 60, "EXPOSURE": 30, "TEMPERAT": 3.25}, "x")
    assert (meta.exposure, meta.temperature) == (60.0, 3.25)
    assert meta_from_fits_header({**BASE, "COLORTYP": "RGB"}, "x").bayer_pattern is None


def test_garbage_values_become_none() -> None:
    cards = {**BASE, "EXPTIME": True, "GAIN": "high", "OFFSET": float("nan"), "CCD-TEMP": "n/a",
             "DATE-OBS": "last night", "XBINNING": "two", "YBINNING": 1.5, "BAYERPAT": "TRUE",
             "FOCALLEN": -1, "XPIXSZ": "", "FILTER": "   ", "OBJECT": 7, "IMAGETYP": "??"}
    meta = meta_from_fits_header(cards, "x.fits")
    assert meta.exposure is None and meta.gain is None and meta.offset is None
    assert meta.temperature is None and meta.date_obs is None and meta.bayer_pattern is None
    assert (meta.xbinning, meta.ybinning) == (1, 1)
    assert meta.focal_length is None and meta.pixel_size is None
    assert meta.filter is None and meta.object is None and meta.kind is None
    assert meta_from_fits_header({}, "empty").width == 0


def test_rgb_cube_has_no_pattern() -> None:
    cube = {"NAXIS": 3, "NAXIS1": 40, "NAXIS2": 30, "NAXIS3": 3, "BAYERPAT": "RGGB"}
    assert meta_from_fits_header(cube, "x").bayer_pattern is None


def test_header_dict_is_json_without_commentary(tmp_path: Path) -> None:
    header = fits.Header()
    header["OBJECT"] = "M 1   "
    header["GAIN"] = 120
    header["EGAIN"] = 0.25
    header["SOLVED"] = True
    header.add_comment("a comment")
    header.add_history("a history line")
    path = tmp_path / "h.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.uint16), header=header).writeto(path)
    cards = read_frame_meta(path).header
    json.dumps(cards, allow_nan=False)
    assert "COMMENT" not in cards and "HISTORY" not in cards
    assert cards["OBJECT"] == "M 1" and cards["GAIN"] == 120 and cards["SOLVED"] is True


# ---------------------------------------------------------------------------------------------
# kind from folder and file names


@pytest.mark.parametrize(("path", "kind"), [
    ("night/lights/img_001.fits", FrameKind.LIGHT),
    ("night/Lights/img_001.fits", FrameKind.LIGHT),
    ("night/LIGHT/img_001.fits", FrameKind.LIGHT),
    ("night/darks/img_001.fits", FrameKind.DARK),
    ("night/Dark/img_001.fits", FrameKind.DARK),
    ("night/flats/img_001.fits", FrameKind.FLAT),
    ("night/FLAT/img_001.fits", FrameKind.FLAT),
    ("night/bias/img_001.fits", FrameKind.BIAS),
    ("night/Biases/img_001.fits", FrameKind.BIAS),
    ("night/offset/img_001.fits", FrameKind.BIAS),
    ("night/Offsets/img_001.fits", FrameKind.BIAS),
    ("night/darkflats/img_001.fits", FrameKind.DARKFLAT),
    ("night/dark_flats/img_001.fits", FrameKind.DARKFLAT),
    ("night/dark-flats/img_001.fits", FrameKind.DARKFLAT),
    ("night/DarkFlats/img_001.fits", FrameKind.DARKFLAT),
    ("night/flatdarks/img_001.fits", FrameKind.DARKFLAT),
    ("night/flat_darks/img_001.fits", FrameKind.DARKFLAT),
    ("night/FLATDARK/img_001.fits", FrameKind.DARKFLAT),
    ("x/Light_M94_10.0s_IRCUT_20250326-212046.fit", FrameKind.LIGHT),
    ("x/dark_300s_001.fits", FrameKind.DARK),
    ("x/Flat_001.fits", FrameKind.FLAT),
    ("x/darkflat_0001.fits", FrameKind.DARKFLAT),
    ("x/IMG_0001.CR2", None),
    ("highlights/img.fits", None),
    ("x/highlights_001.fits", None),
    ("darkroom/img.fits", None),
    ("flatland/img.fits", None),
    ("darks/lights/img.fits", FrameKind.LIGHT),  # nearest folder wins
    ("lights/darks/img.fits", FrameKind.DARK),
    ("lights/M31/2025-11-20/img.fits", FrameKind.LIGHT),  # farther folders speak if near ones don't
    ("darks/Light_M31_001.fits", FrameKind.LIGHT),  # the file name is nearest of all
    ("night/flat_for_lights/img.fits", None),  # a name naming two kinds says nothing
    ("/astro/2025/darks/dark_flat_001.fits", FrameKind.DARKFLAT),
])
def test_kind_from_path(path: str, kind: FrameKind | None) -> None:
    assert kind_from_path(path) is kind


# ---------------------------------------------------------------------------------------------
# broken and foreign files


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.fits"
    path.write_bytes(np.random.default_rng(3).bytes(8000))
    return path


def _truncated(tmp_path: Path) -> Path:
    path = write_fits(tmp_path / "good.fits", coded_mosaic(100, 120, "RGGB"), BAYERPAT="RGGB")
    raw = path.read_bytes()
    data_bytes = 100 * 120 * 2
    header_bytes = len(raw) - -(-data_bytes // 2880) * 2880  # the data is padded to 2880
    cut = tmp_path / "truncated.fits"
    cut.write_bytes(raw[: header_bytes + data_bytes // 2])
    return cut


def _zero(tmp_path: Path) -> Path:
    path = tmp_path / "zero.fits"
    path.write_bytes(b"")
    return path


def _text_as_cr2(tmp_path: Path) -> Path:
    path = tmp_path / "notes.cr2"
    path.write_text("this is not a photograph\n" * 200)
    return path


def _png(tmp_path: Path) -> Path:
    import cv2

    path = tmp_path / "preview.png"
    cv2.imwrite(str(path), np.zeros((16, 16), np.uint8))
    return path


def _text_with_fits_magic(tmp_path: Path) -> Path:
    path = tmp_path / "fake.dat"
    path.write_text("SIMPLE  = nonsense that is not a header")
    return path


@pytest.mark.parametrize(("make", "error", "words"), [
    (_corrupt, FrameReadError, "FITS"),
    (_truncated, FrameReadError, "truncated"),
    (_zero, FrameReadError, "empty"),
    (_text_as_cr2, FrameReadError, "LibRaw"),
    (_png, UnsupportedFileError, "PNG"),
    (_text_with_fits_magic, FrameReadError, "FITS"),
])
@pytest.mark.parametrize("reader", [read_frame_meta, read_frame])
def test_bad_files_raise_one_line_errors(tmp_path: Path, make, error, words, reader) -> None:
    path = make(tmp_path)
    with pytest.raises(error) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message and words in message
    assert "\n" not in message
    assert info.value.path == path


def test_truncated_fixture_is_really_cut_in_the_data(tmp_path: Path) -> None:
    cut = _truncated(tmp_path)
    assert cut.stat().st_size == 2880 + 100 * 120  # header block + half of the pixel bytes


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FrameReadError, match="no such file"):
        read_frame_meta(tmp_path / "nope.fits")


# ---------------------------------------------------------------------------------------------
# scanning


def test_scan_paths_classifies_and_deduplicates(tmp_path: Path) -> None:
    night = tmp_path / "night"
    for rel in ["lights/L_001.fits", "lights/L_002.FIT", "darks/D_001.fits", "raw/IMG_1.CR2",
                "raw/IMG_1.xmp", "notes.txt", "oscdeep.json", "cache.npz", "README.md",
                "preview.png", "stack.tif", ".hidden/L_003.fits", "lights/.L_004.fits.part.fits",
                "Thumbs.db"]:
        (night / rel).parent.mkdir(parents=True, exist_ok=True)
        (night / rel).write_bytes(b"x")
    magic = night / "misc" / "frame_without_suffix"
    magic.parent.mkdir()
    magic.write_bytes(b"SIMPLE  =                    T")
    result = scan_paths([night, night / "lights", night / "lights" / "L_001.fits"])
    rel = lambda paths: [p.relative_to(night.resolve()).as_posix() for p in paths]  # noqa: E731
    assert rel(result.frames) == ["darks/D_001.fits", "lights/L_001.fits", "lights/L_002.FIT",
                                  "misc/frame_without_suffix", "raw/IMG_1.CR2"]
    assert rel(result.ignored) == ["README.md", "Thumbs.db", "cache.npz", "notes.txt",
                                   "oscdeep.json", "raw/IMG_1.xmp"]
    assert rel(result.unsupported) == ["preview.png", "stack.tif"]
    assert all(p.is_absolute() for p in result.frames)


def test_scan_explicit_hidden_file_is_kept(tmp_path: Path) -> None:
    hidden = tmp_path / ".L_001.fits"
    hidden.write_bytes(b"x")
    assert scan_paths([hidden]).frames == [hidden.resolve()]


def test_scan_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(FrameReadError) as info:
        scan_paths([tmp_path, tmp_path / "no_such_night"])
    assert "no_such_night" in str(info.value)


# ---------------------------------------------------------------------------------------------
# the real Seestar S50 files

SEESTAR_M94 = [  # (file stamp, CCD-TEMP, DATE-OBS) as listed in SOURCES.md
    ("20250326-212046", 25.125, "2025-03-27T01:20:32.955"),
    ("20250326-212057", 25.375, "2025-03-27T01:20:44.229"),
    ("20250326-212108", 25.5, "2025-03-27T01:20:55.514"),
    ("20250326-212119", 25.5625, "2025-03-27T01:21:06.818"),
    ("20250326-212131", 25.6875, "2025-03-27T01:21:18.143"),
    ("20250326-212147", 25.5, "2025-03-27T01:21:34.706"),
]


def _seestar(stamp: str) -> Path:
    path = SEESTAR / f"Light_M94_10.0s_IRCUT_{stamp}.fit"
    if not path.is_file():
        pytest.skip(f"real Seestar files not present ({SEESTAR})")
    return path


@pytest.mark.parametrize(("stamp", "temp", "date"), SEESTAR_M94)
def test_seestar_meta(stamp: str, temp: float, date: str) -> None:
    meta = read_frame_meta(_seestar(stamp))
    assert meta.bayer_pattern == "GRBG" and meta.kind is FrameKind.LIGHT
    assert (meta.width, meta.height) == (1080, 1920)
    assert meta.exposure == 10.0 and meta.gain == 80.0 and meta.temperature == temp
    assert meta.object == "M 94" and meta.filter == "IRCUT" and meta.instrument == "Seestar S50"
    assert meta.offset is None and meta.set_temperature is None and meta.row_order is None
    listed = dt.datetime.fromisoformat(date)
    assert abs((meta.date_obs - listed).total_seconds()) < 0.0005  # SOURCES.md rounds to ms
    assert meta.date_obs == dt.datetime.fromisoformat(meta.header["DATE-OBS"])
    json.dumps(meta.header, allow_nan=False)


def test_seestar_bayer_fact() -> None:
    """The two equal 2x2-site medians (996, 993) sit on the G sites of the pattern."""
    image, meta = read_frame(_seestar("20250326-212046"))
    assert image.dtype == np.float32 and image.shape == (1920, 1080)
    medians = {(r, c): float(np.median(image[r::2, c::2])) for r in (0, 1) for c in (0, 1)}
    assert medians == {(0, 0): 996.0, (0, 1): 842.0, (1, 0): 794.0, (1, 1): 993.0}
    sites = sorted(medians)
    closest = min(((a, b) for i, a in enumerate(sites) for b in sites[i + 1:]),
                  key=lambda ab: abs(medians[ab[0]] - medians[ab[1]]))
    greens = {(i // 2, i % 2) for i, letter in enumerate(meta.bayer_pattern) if letter == "G"}
    assert set(closest) == greens


def test_seestar_wcs_frame() -> None:
    path = SEESTAR / "Light_NGC7023_10.0s_IRCUT_20240730-224436_wcs.fit"
    if not path.is_file():
        pytest.skip(f"real Seestar files not present ({SEESTAR})")
    meta = read_frame_meta(path)
    assert meta.object == "NGC 7023" and meta.temperature == 32.5625
    assert meta.header["CTYPE1"] == "RA---TAN" and meta.header["ASTAP_ZEMOSAIC_SOLVED"] is True
