"""Image export: exact 16-bit PNG/TIFF, float FITS/TIFF, JPEG previews, metadata, atomicity."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from astropy.io import fits

import oscdeep.io.export as export
from oscdeep.errors import ConfigError
from oscdeep.io.export import EXPORT_FORMATS, encode_png, export_image

META = {"OBJECT": "M 42", "integration": 3600.5, "software": "oscdeep 0.1",
        "description": "gradient poly:2; stretch ghs", "Observer": "Zoë"}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A display image with every corner case: exact 0 and 1, out of range, NaN."""
    rng = np.random.default_rng(3)
    img = rng.random((37, 53, 3), dtype=np.float32)
    img[0, 0] = [0.0, 1.0, 0.5]
    img[0, 1] = [-0.2, 1.7, np.nan]
    return img


def expected_uint(img: np.ndarray, bits: int) -> np.ndarray:
    top = 2**bits - 1
    return np.rint(np.clip(np.nan_to_num(img.astype(np.float64)), 0, 1) * top).astype(
        np.uint16 if bits == 16 else np.uint8)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, checking each CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def png_text(data: bytes) -> dict[str, str]:
    text = {}
    for kind, body in png_chunks(data):
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            text[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            assert rest[:2] == b"\0\0"  # uncompressed
            _lang, _, rest = rest[2:].partition(b"\0")
            _translated, _, value = rest.partition(b"\0")
            text[key.decode("latin-1")] = value.decode("utf-8")
    return text


def pure_red(h: int = 8, w: int = 12) -> np.ndarray:
    img = np.zeros((h, w, 3), np.float32)
    img[..., 0] = 1.0
    return img


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_16bit_round_trip_is_exact_and_rgb(tmp_path: Path, image: np.ndarray,
                                           suffix: str) -> None:
    path = export_image(tmp_path / f"out{suffix}", image)
    assert path == tmp_path / f"out{suffix}"
    if suffix == ".png":
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
    else:
        back = tifffile.imread(path)
    assert back.dtype == np.uint16 and back.shape == image.shape
    np.testing.assert_array_equal(back, expected_uint(image, 16))
    assert tuple(back[0, 1]) == (0, 65535, 0)  # clipped; NaN -> 0
    red = export_image(tmp_path / f"red{suffix}", pure_red())
    back = (cv2.imread(str(red), cv2.IMREAD_UNCHANGED)[..., ::-1] if suffix == ".png"
            else tifffile.imread(red))
    assert (back[..., 0] == 65535).all() and (back[..., 1:] == 0).all()


def test_8bit_png_and_tiff(tmp_path: Path, image: np.ndarray) -> None:
    png = cv2.imread(str(export_image(tmp_path / "a.png", image, bits=8)),
                     cv2.IMREAD_UNCHANGED)
    tif = tifffile.imread(export_image(tmp_path / "a.tif", image, bits=8))
    assert png.dtype == tif.dtype == np.uint8
    np.testing.assert_array_equal(png[..., ::-1], expected_uint(image, 8))
    np.testing.assert_array_equal(tif, expected_uint(image, 8))


def test_mono_image(tmp_path: Path, image: np.ndarray) -> None:
    mono = image[..., 1]
    back = cv2.imread(str(export_image(tmp_path / "m.png", mono)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, expected_uint(mono, 16))
    np.testing.assert_array_equal(tifffile.imread(export_image(tmp_path / "m.tif", mono)),
                                  expected_uint(mono, 16))


def test_float_tiff_round_trip(tmp_path: Path, image: np.ndarray) -> None:
    linear = image * np.float32(3000.0)  # float TIFF keeps values as given, NaN included
    back = tifffile.imread(export_image(tmp_path / "f.tiff", linear, bits=32))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, linear)


def test_tiff_metadata(tmp_path: Path, image: np.ndarray) -> None:
    path = export_image(tmp_path / "meta.tif", image, metadata=META)
    with tifffile.TiffFile(path) as tif:
        tags = {tag.name: tag.value for tag in tif.pages[0].tags.values()}
    assert tags["Software"] == "oscdeep 0.1"
    description = tags["ImageDescription"]
    assert description.startswith("gradient poly:2; stretch ghs")
    assert "Object: M 42" in description and "Integration: 3600.5 s" in description
    assert "Observer: Zoe" in description  # TIFF text is ASCII: the accent is dropped
    with tifffile.TiffFile(export_image(tmp_path / "plain.tif", image)) as tif:
        names = {tag.name for tag in tif.pages[0].tags.values()}
    assert not {"ImageDescription", "Software"} & names


def test_fits_round_trip_with_header(tmp_path: Path, image: np.ndarray) -> None:
    from oscdeep.io.fits import read_fits_image

    linear = image * np.float32(40000.0) + np.float32(100.0)
    path = export_image(tmp_path / "out.fits", linear,
                        metadata={**META, "history": ["stacked 40 frames"], "CCD-TEMP": -10.0,
                                  "stack_name": "sharp"})
    back, header = read_fits_image(path)
    assert back.dtype == np.float32
    assert back.tobytes() == linear.tobytes()  # bit-exact, NaN kept
    assert header["BITPIX"] == -32
    assert header["OBJECT"] == "M 42"
    assert header["EXPTIME"] == 3600.5
    assert header["SWCREATE"] == "oscdeep 0.1"
    assert header["OBSERVER"] == "Zoe"
    assert header["CCD-TEMP"] == -10.0
    assert header["STACK_NAME"] == "sharp"  # a HIERARCH card
    history = [str(h) for h in header["HISTORY"]]
    assert history == ["stacked 40 frames", "gradient poly:2; stretch ghs"]
    for suffix in (".fit", ".fts"):
        assert fits.getdata(export_image(tmp_path / f"o{suffix}", linear)).shape == (3, 37, 53)
    with pytest.raises(ConfigError, match="32"):
        export_image(tmp_path / "x.fits", linear, bits=16)


def test_jpeg_preview(tmp_path: Path) -> None:
    img = np.zeros((40, 60, 3), np.float32)
    img[:, :20] = [1.0, 0.0, 0.0]
    img[:, 20:40] = [0.0, 1.0, 0.0]
    img[:, 40:] = [0.2, 0.4, 0.9]
    path = export_image(tmp_path / "p.jpg", img, metadata=META)
    back = cv2.imread(str(path))[..., ::-1].astype(float) / 255.0
    assert back.shape == (40, 60, 3)
    for x0, colour in ((0, img[0, 0]), (20, img[0, 20]), (40, img[0, 40])):
        patch = back[10:30, x0 + 5:x0 + 15].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(patch, colour, atol=0.05)
    data = path.read_bytes()
    start = data.index(b"\xff\xfe")
    (length,) = struct.unpack(">H", data[start + 2:start + 4])
    comment = data[start + 4:start + 2 + length].decode("utf-8")
    assert "Object: M 42" in comment and "Observer: Zoë" in comment
    assert data.index(b"JFIF") < start  # the JFIF header still comes first
    assert cv2.imread(str(export_image(tmp_path / "p.jpeg", img))).shape == (40, 60, 3)


def test_png_text_chunks(tmp_path: Path, image: np.ndarray) -> None:
    data = export_image(tmp_path / "meta.png", image, metadata=META).read_bytes()
    kinds = [kind for kind, _ in png_chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert kinds.index(b"tEXt") < kinds.index(b"IDAT")
    assert png_text(data) == {"Title": "M 42", "Integration": "3600.5 s",
                              "Software": "oscdeep 0.1",
                              "Description": "gradient poly:2; stretch ghs", "Observer": "Zoë"}
    back = cv2.imread(str(tmp_path / "meta.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(back, expected_uint(image, 16))  # still a valid PNG
    unicode = encode_png(image, metadata={"Note": "M 42 \u2013 Orion \u2713"})
    assert png_text(unicode) == {"Note": "M 42 \u2013 Orion \u2713"}  # iTXt, UTF-8


def test_encode_png_in_memory(image: np.ndarray) -> None:
    data = encode_png(image)
    assert b"tEXt" not in data
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back[..., ::-1], expected_uint(image, 8))
    back16 = cv2.imdecode(np.frombuffer(encode_png(image, bits=16), np.uint8),
                          cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back16[..., ::-1], expected_uint(image, 16))
    with pytest.raises(ConfigError):
        encode_png(image, bits=12)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".fits", ".jpg"])
def test_same_input_same_bytes(tmp_path: Path, image: np.ndarray, suffix: str) -> None:
    a = export_image(tmp_path / f"a{suffix}", image, metadata=META).read_bytes()
    b = export_image(tmp_path / f"b{suffix}", image.copy(), metadata=dict(META)).read_bytes()
    assert a == b


def test_unknown_extension(tmp_path: Path, image: np.ndarray) -> None:
    for name in ("out.bmp", "out", "out.fits.gz"):
        with pytest.raises(ConfigError) as info:
            export_image(tmp_path / name, image)
        message = str(info.value)
        assert name in message and ".png" in message and ".fits" in message
        assert "\n" not in message
    with pytest.raises(ConfigError, match="16 or 8"):
        export_image(tmp_path / "out.png", image, bits=32)
    assert set(EXPORT_FORMATS) == {".png", ".tif", ".tiff", ".fits", ".fit", ".fts", ".jpg",
                                   ".jpeg"}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".png", ".tif", ".fits", ".jpg"])
def test_failed_write_leaves_existing_file(tmp_path: Path, image: np.ndarray,
                                           suffix: str) -> None:
    target = tmp_path / f"keep{suffix}"
    target.write_bytes(b"previous version")
    for bad in (np.zeros((5, 5, 4), np.float32), np.array([["a", "b"]]),
                np.zeros((5, 5, 3), np.uint8) if suffix != ".fits" else np.zeros((5, 0))):
        with pytest.raises(ValueError):
            export_image(target, bad)
    assert target.read_bytes() == b"previous version"
    assert list(tmp_path.iterdir()) == [target]


def test_failure_during_write_leaves_existing_file(tmp_path: Path, image: np.ndarray,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.tif"
    target.write_bytes(b"previous version")

    def broken(path: Path, data: np.ndarray, **kwargs: object) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        export_image(target, image)
    assert target.read_bytes() == b"previous version"
    assert list(tmp_path.iterdir()) == [target]
    monkeypatch.setattr(export, "encode_png", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_image(tmp_path / "keep.png", image)
    assert not (tmp_path / "keep.png").exists()
