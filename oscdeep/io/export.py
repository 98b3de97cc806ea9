"""Write finished images atomically, the format taken from the file extension.

* ``.png`` 16-bit RGB (or 8-bit with ``bits=8``), metadata in tEXt chunks (iTXt for text
  outside Latin-1);
* ``.tif``/``.tiff`` 16-bit RGB, deflate-compressed (or ``bits=8``; ``bits=32`` writes
  uncompressed float32), metadata in the ImageDescription and Software tags;
* ``.fits``/``.fit``/``.fts`` 32-bit float through :func:`oscdeep.io.fits.write_fits_image`,
  metadata as header keywords;
* ``.jpg``/``.jpeg`` 8-bit preview (quality 92), metadata in a COM (comment) segment.

Integer formats take a display image in [0, 1]: values are clipped, NaN becomes 0 (black) and
a value x is stored as round(x * (2**bits - 1)). Float formats (FITS, 32-bit TIFF) store the
values as given, NaN included. Channel order is R, G, B in every file. The same input always
gives the same bytes (no timestamps are written).

Metadata is a plain dict with case-insensitive keys, written where each format has room
(FITS / PNG text chunk / TIFF and JPEG text):

* ``object``: OBJECT / Title / an "Object:" line;
* ``exptime``, ``integration`` or ``exposure`` in seconds: EXPTIME / Integration / an
  "Integration:" line;
* ``software``: SWCREATE / Software / the TIFF Software tag, a JPEG "Software:" line;
* ``description``: HISTORY lines / Description / the text's first lines;
* ``history`` (a string or list of strings): FITS HISTORY only;
* any other key: a keyword (HIERARCH unless a plain 8-character one) / a keyword of its own
  / a "key: value" line.

TIFF and FITS text is reduced to ASCII (accents dropped); the JPEG comment is UTF-8.
"""

from __future__ import annotations

import os
import struct
import unicodedata
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oscdeep.errors import ConfigError
from oscdeep.io.atomic import atomic_path

EXPORT_FORMATS: dict[str, str] = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}
"""File extension -> format name."""

FORMAT_BITS: dict[str, tuple[int, ...]] = {
    "png": (16, 8),
    "tiff": (16, 8, 32),
    "fits": (32,),
    "jpeg": (8,),
}
"""Bits per sample each format can write; the first is the default."""

JPEG_QUALITY = 92
PNG_COMPRESSION = 3  # zlib level: close to the smallest files at a third of level 6's time

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXPTIME_KEYS = ("exptime", "integration", "exposure")


@dataclass(frozen=True)
class _Meta:
    """Metadata sorted into what each format has a place for."""

    object: str | None = None
    exptime: float | None = None
    software: str | None = None
    description: str | None = None
    history: tuple[str, ...] = ()
    extra: tuple[tuple[str, Any], ...] = ()

    def text_lines(self) -> list[str]:
        """``key: value`` lines, for formats with a single free-text field."""
        lines = [f"Object: {self.object}"] if self.object else []
        if self.exptime is not None:
            lines.append(f"Integration: {self.exptime:g} s")
        lines += [f"{key}: {value}" for key, value in self.extra]
        return lines


def _parse_meta(metadata: Mapping[str, Any] | None) -> _Meta:
    fields: dict[str, Any] = {}
    extra: list[tuple[str, Any]] = []
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        name = str(key).strip()
        low = name.lower()
        if low == "object":
            fields["object"] = str(value)
        elif low in _EXPTIME_KEYS:
            try:
                fields["exptime"] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"metadata {name!r} must be a number of seconds, "
                                  f"not {value!r}") from None
        elif low in ("software", "description"):
            fields[low] = str(value)
        elif low == "history":
            items = [value] if isinstance(value, str) else list(value)
            fields["history"] = tuple(str(v) for v in items)
        else:
            extra.append((name, value))
    return _Meta(**fields, extra=tuple(extra))


def _ascii(text: str) -> str:
    """Text reduced to printable ASCII (accents dropped), as TIFF and FITS require."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch if ch == "\n" or 32 <= ord(ch) < 127 else " " for ch in plain)


# --- arrays -----------------------------------------------------------------------------------


def _check_image(image: np.ndarray, *, display: bool) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or 0 in a.shape:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    kind = np.floating if display else np.number
    if not np.issubdtype(a.dtype, kind) or np.issubdtype(a.dtype, np.complexfloating):
        what = "a float image in [0, 1]" if display else "a real-valued image"
        raise ValueError(f"expected {what}, got dtype {a.dtype}")
    return a


def _quantise(image: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] floats to unsigned integers: clip, NaN -> 0, round(x * (2**bits - 1))."""
    top = float(2**bits - 1)
    a = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(a, 0.0, 1.0, out=a)
    a *= top
    np.rint(a, out=a)
    return a.astype(np.uint16 if bits == 16 else np.uint8)


def _bgr(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[..., ::-1]) if a.ndim == 3 else a


# --- PNG ---------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_keyword(name: str) -> bytes:
    """A valid PNG keyword: 1-79 printable Latin-1 characters, single inner spaces."""
    text = " ".join(name.split())
    raw = "".join(ch for ch in text if 32 <= ord(ch) <= 126 or 161 <= ord(ch) <= 255)
    raw = raw[:79].strip() or "Comment"
    return raw.encode("latin-1")


def _png_text_chunk(keyword: str, text: str) -> bytes:
    key = _png_keyword(keyword)
    try:
        return _png_chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:  # international text: uncompressed iTXt, UTF-8
        return _png_chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def _png_text_chunks(meta: _Meta) -> bytes:
    items: list[tuple[str, str]] = []
    if meta.object:
        items.append(("Title", meta.object))
    if meta.exptime is not None:
        items.append(("Integration", f"{meta.exptime:g} s"))
    if meta.software:
        items.append(("Software", meta.software))
    if meta.description:
        items.append(("Description", meta.description))
    items += [(str(k), str(v)) for k, v in meta.extra]
    return b"".join(_png_text_chunk(k, v) for k, v in items)


def _insert_after_ihdr(png: bytes, chunks: bytes) -> bytes:
    if not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("encoder did not produce a PNG starting with IHDR")
    end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:end] + chunks + png[end:]


def encode_png(image01: np.ndarray, *, bits: int = 8,
               metadata: Mapping[str, Any] | None = None) -> bytes:
    """A PNG file in memory (e.g. to embed in an HTML report) of a [0, 1] display image."""
    import cv2

    if bits not in FORMAT_BITS["png"]:
        raise ConfigError(f"PNG supports 8 or 16 bits, not {bits!r}")
    data = _quantise(_check_image(image01, display=True), bits)
    ok, buffer = cv2.imencode(".png", _bgr(data), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    png = buffer.tobytes()
    chunks = _png_text_chunks(_parse_meta(metadata))
    return _insert_after_ihdr(png, chunks) if chunks else png


# --- JPEG --------------------------------------------------------------------------------------


def _encode_jpeg(image01: np.ndarray, meta: _Meta) -> bytes:
    import cv2

    data = _quantise(_check_image(image01, display=True), 8)
    ok, buffer = cv2.imencode(".jpg", _bgr(data), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the JPEG")
    jpeg = buffer.tobytes()
    lines = ([meta.description] if meta.description else []) + meta.text_lines()
    if meta.software:
        lines.append(f"Software: {meta.software}")
    if not lines:
        return jpeg
    text = "\n".join(lines).encode("utf-8")[:65533]
    comment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
    pos = 2  # after SOI; after the JFIF APP0 segment when there is one (it must come first)
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:pos] + comment + jpeg[pos:]


# --- TIFF and FITS -------------------------------------------------------------------------------


def _write_tiff(path: Path, image: np.ndarray, bits: int, meta: _Meta) -> None:
    import tifffile

    if bits == 32:
        # uncompressed: without the floating-point predictor (which needs imagecodecs)
        # deflate saves ~13 % on noisy float data at 30x the time
        data = np.ascontiguousarray(_check_image(image, display=True), dtype=np.float32)
        compression, predictor = None, None
    else:
        data = _quantise(_check_image(image, display=True), bits)
        compression, predictor = "zlib", True
    text = "\n".join(([meta.description] if meta.description else []) + meta.text_lines())
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data, photometric="rgb" if data.ndim == 3 else "minisblack",
            compression=compression, predictor=predictor, metadata=None,
            description=_ascii(text) if text else None,
            software=_ascii(meta.software) if meta.software else False,
        )


def _fits_keyword(name: str) -> str:
    key = _ascii(name).strip().upper().replace(" ", "_")
    if len(key) <= 8 and key and all(ch.isalnum() or ch in "-_" for ch in key):
        return key
    return f"HIERARCH {key}"


def _fits_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return _ascii(str(value)).replace("\n", " ")


def _write_fits(path: Path, image: np.ndarray, meta: _Meta) -> None:
    from oscdeep.io.fits import write_fits_image

    data = np.asarray(_check_image(image, display=False), dtype=np.float32)
    header: dict[str, Any] = {}
    if meta.object:
        header["OBJECT"] = _fits_value(meta.object)
    if meta.exptime is not None:
        header["EXPTIME"] = (meta.exptime, "[s] total integration time")
    if meta.software:
        header["SWCREATE"] = (_fits_value(meta.software), "software that wrote this file")
    for key, value in meta.extra:
        header[_fits_keyword(key)] = _fits_value(value)
    history = [_ascii(line) for line in meta.history]
    if meta.description:
        history += [_ascii(line) for line in meta.description.splitlines() if line.strip()]
    write_fits_image(path, data, header, history=history, dtype="float32")


# --- entry point ---------------------------------------------------------------------------------


def export_format(path: str | os.PathLike[str]) -> str:
    """The format name for ``path``'s extension, or a ConfigError listing the known ones."""
    path = Path(path)
    fmt = EXPORT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(EXPORT_FORMATS)
        raise ConfigError(f"cannot export {str(path)!r}: unknown image format "
                          f"{path.suffix or '(no extension)'!r}; use one of {allowed}")
    return fmt


def export_image(path: str | os.PathLike[str], image: np.ndarray, *,
                 metadata: Mapping[str, Any] | None = None, bits: int | None = None) -> Path:
    """Write ``image`` ((H, W) or (H, W, 3), R G B) to ``path`` atomically; returns the path.

    The format comes from the extension (see :data:`EXPORT_FORMATS`), ``bits`` defaults to the
    format's first entry in :data:`FORMAT_BITS`. A failed write leaves an existing file as it
    was.
    """
    path = Path(path)
    fmt = export_format(path)
    allowed = FORMAT_BITS[fmt]
    bits = allowed[0] if bits is None else bits
    if bits not in allowed:
        raise ConfigError(f"cannot export {str(path)!r}: {fmt.upper()} is written with "
                          f"{' or '.join(map(str, allowed))} bits, not {bits!r}")
    meta = _parse_meta(metadata)
    if fmt == "fits":
        _write_fits(path, image, meta)
    elif fmt == "tiff":
        _write_tiff(path, image, bits, meta)
    else:
        data = (encode_png(image, bits=bits, metadata=metadata) if fmt == "png"
                else _encode_jpeg(image, meta))
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return path


__all__ = ["EXPORT_FORMATS", "FORMAT_BITS", "encode_png", "export_format", "export_image"]
