"""Camera raw through rawpy/exifread: DNG round trips, margins, non-Bayer CFAs, the Kodak file."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from oscdeep.errors import FrameReadError, OscdeepError
from oscdeep.io import raw as rawmod
from oscdeep.io.dng import write_dng
from oscdeep.io.frames import read_frame
from oscdeep.io.headers import read_frame_meta
from oscdeep.io.raw import RAW_SUFFIXES, is_raw_name, read_raw_meta
from oscdeep.io.scan import scan_paths
from oscdeep.types import FileFormat

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "rawsamples_kodak_dc50"

SITE_VALUE = {"R": 30000, "G": 20000, "B": 10000}


def coded_mosaic(height: int, width: int, pattern: str, *, row0: int = 0, col0: int = 0,
                 seed: int = 0) -> np.ndarray:
    """uint16 mosaic whose cell starting at (row0, col0) is ``pattern``; R/G/B sites hold
    30000/20000/10000 plus 0..999 of noise, so colours can be read back from pixels."""
    rng = np.random.default_rng(seed)
    mosaic = rng.integers(0, 1000, (height, width)).astype(np.uint16)
    for dy in (0, 1):
        for dx in (0, 1):
            mosaic[(row0 + dy) % 2::2, (col0 + dx) % 2::2] += SITE_VALUE[pattern[2 * dy + dx]]
    return mosaic


def pattern_in_pixels(image: np.ndarray) -> str:
    letters = {v: k for k, v in SITE_VALUE.items()}
    return "".join(letters[int(v) // 10000 * 10000] for v in image[:2, :2].flat)


STAMP = dt.datetime(2026, 11, 20, 22, 15, 7, 250000)


@pytest.mark.parametrize(("pattern", "exposure", "iso"), [
    ("RGGB", 1 / 250, 100), ("BGGR", 30.0, 1600), ("GRBG", 0.5, 3200), ("GBRG", 300.0, 800),
])
def test_dng_round_trip(tmp_path: Path, pattern: str, exposure: float, iso: int) -> None:
    mosaic = coded_mosaic(64, 96, pattern)
    path = write_dng(tmp_path / "f.dng", mosaic, pattern, black_level=512, white_level=60000,
                     exposure=exposure, iso=iso, date_obs=STAMP, make="Acme", model="OSC-1")
    meta = read_frame_meta(path)
    assert meta.file_format is FileFormat.RAW and meta.kind is None
    assert meta.bayer_pattern == pattern
    assert (meta.width, meta.height) == (96, 64)
    assert (meta.black_level, meta.white_level) == (512.0, 60000.0)
    assert meta.iso == iso and meta.exposure == exposure
    assert meta.date_obs == STAMP
    assert (meta.camera_make, meta.camera_model) == ("Acme", "OSC-1")
    json.dumps(meta.header, allow_nan=False)
    image, meta2 = read_frame(path)
    assert meta2 == meta
    assert image.dtype == np.float32 and image.shape == (64, 96)
    assert np.array_equal(image, mosaic.astype(np.float32))  # bit-exact, black not subtracted
    assert pattern_in_pixels(image) == meta.bayer_pattern


def test_dng_time_offset_and_rawpy_agree(tmp_path: Path) -> None:
    """LibRaw's own reading of the file gives the same pattern, levels, ISO, shutter and time."""
    import rawpy

    mosaic = coded_mosaic(40, 60, "GBRG")
    path = write_dng(tmp_path / "g.dng", mosaic, "GBRG", black_level=64, white_level=16383,
                     exposure=2.0, iso=400, date_obs=STAMP)
    with rawpy.imread(str(path)) as raw:
        letters = "".join(chr(raw.color_desc[i]) for i in raw.raw_pattern.flat)
        assert letters == "GBRG"
        assert raw.black_level_per_channel == [64] * 4 and raw.white_level == 16383
        assert raw.other.iso_speed == 400 and raw.other.shutter_speed == pytest.approx(2.0)
        assert raw.other.timestamp == STAMP.replace(microsecond=0)
        assert np.array_equal(raw.raw_image_visible, mosaic)


@pytest.mark.parametrize(("top", "left"), [(1, 1), (1, 0), (0, 1), (3, 2)])
def test_active_area_margins_keep_pattern_and_pixels_together(tmp_path: Path, top: int,
                                                              left: int) -> None:
    """DNG ActiveArea moves LibRaw's visible origin; the reported pattern must follow it."""
    height, width = 41, 61
    # DNG: CFAPattern is given at the top-left corner of the ActiveArea.
    mosaic = coded_mosaic(height, width, "RGGB", row0=top, col0=left)
    path = write_dng(tmp_path / "aa.dng", mosaic, "RGGB",
                     extra_tags=[(50829, 4, 4, (top, left, height, width))])
    image, meta = read_frame(path)
    assert pattern_in_pixels(image) == meta.bayer_pattern
    assert image.shape == (meta.height, meta.width)
    assert meta.height <= height - top and meta.width <= width - left
    t, lft = meta.header["top_margin"], meta.header["left_margin"]
    assert np.array_equal(image, mosaic[t:t + meta.height, lft:lft + meta.width])


def test_header_only_raw_meta(tmp_path: Path) -> None:
    mosaic = coded_mosaic(40, 60, "GRBG", row0=1, col0=1)
    path = write_dng(tmp_path / "h.dng", mosaic, "GRBG", black_level=100, white_level=4095,
                     exposure=0.5, iso=200, date_obs=STAMP,
                     extra_tags=[(50829, 4, 4, (1, 1, 40, 60))])
    full = read_raw_meta(path)
    quick = read_raw_meta(path, unpack=False)
    assert quick.bayer_pattern is None and quick.black_level is None and quick.white_level is None
    assert "not unpacked" in quick.header["note"]
    assert (quick.width, quick.height) == (full.width, full.height) == (58, 38)
    assert (quick.exposure, quick.iso, quick.date_obs) == (full.exposure, full.iso, full.date_obs)
    assert (full.bayer_pattern, full.black_level, full.white_level) == ("GBRG", 100.0, 4095.0)


def test_write_dng_without_exif_needs_no_pyexiv2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyexiv2", None)  # import now raises ImportError
    mosaic = coded_mosaic(32, 32, "BGGR")
    meta = read_frame_meta(write_dng(tmp_path / "n.dng", mosaic, "BGGR"))
    assert meta.bayer_pattern == "BGGR" and meta.iso is None and meta.date_obs is None
    with pytest.raises(OscdeepError, match="pyexiv2"):
        write_dng(tmp_path / "e.dng", mosaic, "BGGR", iso=100)
    assert not (tmp_path / "e.dng").exists()


def test_write_dng_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint16"):
        write_dng(tmp_path / "a.dng", np.zeros((32, 32), np.float32), "RGGB")
    with pytest.raises(ValueError, match="pattern"):
        write_dng(tmp_path / "b.dng", np.zeros((32, 32), np.uint16), "RGBG")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_raw_suffixes() -> None:
    for suffix in (".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2", ".kdc"):
        assert suffix in RAW_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in RAW_SUFFIXES)
    assert is_raw_name("IMG_0001.CR2") and not is_raw_name("frame.fits")


def test_scan_finds_raw(tmp_path: Path) -> None:
    write_dng(tmp_path / "IMG_1.DNG", coded_mosaic(32, 32, "RGGB"), "RGGB")
    assert scan_paths([tmp_path]).frames == [(tmp_path / "IMG_1.DNG").resolve()]


def _fake_raw(pattern: np.ndarray | None, desc: bytes, top: int = 0, left: int = 0):
    return SimpleNamespace(raw_pattern=pattern, color_desc=desc,
                           sizes=SimpleNamespace(top_margin=top, left_margin=left))


@pytest.mark.parametrize(("fake", "pattern", "note"), [
    (_fake_raw(np.array([[0, 1], [3, 2]]), b"RGBG"), "RGGB", None),
    (_fake_raw(np.array([[0, 1], [3, 2]]), b"RGBG", top=1), "GBRG", None),  # odd margin
    (_fake_raw(np.array([[0, 1], [3, 2]]), b"RGBG", left=1), "GRBG", None),
    (_fake_raw(np.array([[0, 1], [3, 2]]), b"RGBE"), None, "not an RGB Bayer"),
    (_fake_raw(np.array([[0, 1], [3, 2]]), b"GMCY"), None, "not an RGB Bayer"),
    (_fake_raw(np.zeros((6, 6), np.uint8), b"RGBG"), None, "X-Trans"),
    (_fake_raw(np.zeros((1, 1), np.uint8), b"RGBG"), None, "monochrome"),
    (_fake_raw(None, b"RGBG"), None, "not a flat"),
])
def test_cfa_pattern_from_libraw_fields(fake, pattern: str | None, note: str | None) -> None:
    got, why = rawmod._cfa_pattern(fake)
    assert got == pattern
    assert (why is None) if note is None else (note in why)


def test_exif_datetime_with_offset_and_subseconds() -> None:
    tag = lambda v: SimpleNamespace(values=v)  # noqa: E731
    tags = {"EXIF DateTimeOriginal": tag("2026:11:20 23:15:07"),
            "EXIF SubSecTimeOriginal": tag("25"), "EXIF OffsetTimeOriginal": tag("+01:00")}
    assert rawmod._exif_datetime(tags) == dt.datetime(2026, 11, 20, 22, 15, 7, 250000)
    assert rawmod._exif_datetime({"Image DateTime": tag("1997:04:23 08:00:47")}) == \
        dt.datetime(1997, 4, 23, 8, 0, 47)
    assert rawmod._exif_datetime({"Image DateTime": tag("0000:00:00 00:00:00")}) is None


def test_truncated_dng_is_a_frame_read_error(tmp_path: Path) -> None:
    path = write_dng(tmp_path / "t.dng", coded_mosaic(200, 300, "RGGB"), "RGGB")
    data = path.read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[: len(data) // 2])
    for reader in (read_frame_meta, read_frame):
        with pytest.raises(FrameReadError) as info:
            reader(cut)
        assert str(cut) in str(info.value)


# ---------------------------------------------------------------------------------------------
# the real Kodak DC50 file


def _kodak() -> Path:
    path = KODAK / "RAW_KODAK_DC50.KDC"
    if not path.is_file():
        pytest.skip(f"real Kodak raw file not present ({KODAK})")
    return path


def test_kodak_meta() -> None:
    meta = read_raw_meta(_kodak())
    assert meta.bayer_pattern == "GRBG"
    assert meta.camera_make == "Eastman Kodak Company"
    assert meta.camera_model == "Kodak Digital Science DC50 Zoom Camera"
    assert meta.exposure == 87 / 20000
    assert (meta.width, meta.height) == (768, 512)
    assert (meta.black_level, meta.white_level) == (0.0, 16383.0)
    assert meta.date_obs == dt.datetime(1997, 4, 23, 8, 0, 47)
    assert meta.kind is None


def test_kodak_mosaic_greens_agree() -> None:
    """On a daylight scene the two green sites of the reported pattern are the most alike."""
    image, meta = read_frame(_kodak())
    assert image.dtype == np.float32 and image.shape == (512, 768)
    means = {(r, c): float(image[r::2, c::2].mean()) for r in (0, 1) for c in (0, 1)}
    greens = [(i // 2, i % 2) for i, letter in enumerate(meta.bayer_pattern) if letter == "G"]
    others = [site for site in means if site not in greens]
    green_gap = abs(means[greens[0]] - means[greens[1]])
    assert green_gap < abs(means[others[0]] - means[others[1]])
    assert green_gap < 0.05 * means[greens[0]]
