"""Frame metadata from headers only: FITS cards or camera-raw EXIF, and frame kinds from names.

Ingest reads every file through :func:`read_frame_meta`, so nothing here decodes FITS pixels.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oscdeep.errors import FrameReadError, UnsupportedFileError
from oscdeep.io.fits import is_bottom_up, is_fits_name, read_fits_header
from oscdeep.io.meta import FrameMeta
from oscdeep.io.raw import is_raw_name, read_raw_meta
from oscdeep.types import BAYER_PATTERNS, FileFormat, FrameKind, flip_pattern_rows, shift_pattern

FITS_MAGIC = b"SIMPLE  ="

# Leading bytes of image formats oscdeep does not read, to name them in error messages.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"XISF0100", "an XISF image"),
    (b"GIF8", "a GIF image"),
)


# ---------------------------------------------------------------------------------------------
# format detection and dispatch


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def has_fits_magic(path: str | os.PathLike[str]) -> bool:
    """True if the file starts with the mandatory FITS card ``SIMPLE  =``."""
    return _head(Path(path), len(FITS_MAGIC)) == FITS_MAGIC


def detect_format(path: str | os.PathLike[str]) -> FileFormat | None:
    """FITS or RAW from the file suffix, else FITS if the bytes say so, else None."""
    if is_fits_name(path):
        return FileFormat.FITS
    if is_raw_name(path):
        return FileFormat.RAW
    if has_fits_magic(path):
        return FileFormat.FITS
    return None


def check_readable_file(path: Path) -> None:
    """Raise FrameReadError unless ``path`` is an existing, non-empty regular file."""
    if not path.exists():
        raise FrameReadError(path, "no such file")
    if not path.is_file():
        raise FrameReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise FrameReadError(path, "empty file (0 bytes)")


def unsupported(path: Path) -> UnsupportedFileError:
    """The error for a file whose format oscdeep does not read, naming what it seems to be."""
    head = _head(path)
    what = next((name for magic, name in _OTHER_MAGIC if head.startswith(magic)), None)
    if what is None:
        what = f"a '{path.suffix}' file" if path.suffix else "a file without a suffix"
    return UnsupportedFileError(path, f"{what}: oscdeep reads FITS and camera raw frames only")


def _one_line(error: FrameReadError) -> FrameReadError:
    cause = " ".join(error.cause.split())
    if cause == error.cause:
        return error
    return type(error)(error.path, cause)


def read_frame_meta(path: str | os.PathLike[str]) -> FrameMeta:
    """Acquisition metadata of one frame file, from its header only.

    Raises FrameReadError (corrupt, truncated, empty or non-image files) or
    UnsupportedFileError (formats oscdeep does not read), each naming the file in one line.
    """
    path = Path(path)
    check_readable_file(path)
    fmt = detect_format(path)
    try:
        if fmt is FileFormat.FITS:
            return meta_from_fits_header(read_fits_header(path), path)
        if fmt is FileFormat.RAW:
            return read_raw_meta(path)
    except FrameReadError as exc:
        raise _one_line(exc) from exc
    raise unsupported(path)


# ---------------------------------------------------------------------------------------------
# FITS header values

_COMMENTARY = {"COMMENT", "HISTORY", ""}


def header_dict(header: Mapping[str, Any] | Any) -> dict[str, Any]:
    """JSON-serialisable cards: upper-case keys, first occurrence wins, no COMMENT/HISTORY.

    Keeps strings (trailing blanks stripped), bools, ints and finite floats; drops the rest
    (undefined values, complex numbers, NaN).
    """
    out: dict[str, Any] = {}
    for key, value in header.items():
        key = str(key).strip().upper()
        if key in _COMMENTARY or key in out:
            continue
        if isinstance(value, str):
            out[key] = value.rstrip()
        elif isinstance(value, (bool, int)):
            out[key] = value
        elif isinstance(value, float) and math.isfinite(value):
            out[key] = value
    return out


def _number(cards: Mapping[str, Any], *keys: str) -> float | None:
    """The first of ``keys`` whose value reads as a finite number (bools are not numbers)."""
    for key in keys:
        value = cards.get(key)
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            return number
    return None


def _positive(cards: Mapping[str, Any], *keys: str) -> float | None:
    number = _number(cards, *keys)
    return number if number is not None and number > 0 else None


def _count(cards: Mapping[str, Any], key: str, default: int | None) -> int | None:
    number = _number(cards, key)
    if number is None or number != int(number) or number < 0:
        return default
    return int(number)


def _text(cards: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = cards.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


_OLD_FITS_DATE = re.compile(r"(\d{2})/(\d{2})/(\d{2})")


def parse_fits_datetime(date: Any, time: Any = None) -> dt.datetime | None:
    """DATE-OBS (optionally with TIME-OBS) as naive UTC, or None if it cannot be read.

    Accepts ISO 8601 with or without fractional seconds (any number of digits), 'Z' or a UTC
    offset, a date alone with the time in ``time``, and the old 'dd/mm/yy' form (19yy).
    """
    if not isinstance(date, str) or not date.strip():
        return None
    text = date.strip()
    old = _OLD_FITS_DATE.fullmatch(text)
    if old:
        text = f"19{old.group(3)}-{old.group(2)}-{old.group(1)}"
    if "T" not in text and " " not in text.strip() and isinstance(time, str) and time.strip():
        text = f"{text}T{time.strip()}"
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return stamp


def kind_from_text(text: Any) -> FrameKind | None:
    """Frame kind from an IMAGETYP/FRAME value ('Light Frame', 'DARKFLAT', 'Offset', ...)."""
    if not isinstance(text, str):
        return None
    s = re.sub(r"[^a-z]", "", text.lower())
    if not s:
        return None
    if "dark" in s and "flat" in s:
        return FrameKind.DARKFLAT
    if "flat" in s:
        return FrameKind.FLAT
    if "dark" in s:
        return FrameKind.DARK
    if "bias" in s or "offset" in s or s == "zero":
        return FrameKind.BIAS
    if "light" in s or s in ("object", "science"):
        return FrameKind.LIGHT
    return None


def fits_bayer_pattern(cards: Mapping[str, Any], height: int) -> str | None:
    """Bayer pattern of the array as oscdeep holds it (top-down), from the FITS cards.

    BAYERPAT (or COLORTYP when it holds a pattern) with XBAYROFF/YBAYROFF describes the
    pattern at the first *stored* pixel; a BOTTOM-UP file is flipped on read, so its pattern
    is flipped too (which changes it when ``height`` is even).
    """
    pattern = None
    for key in ("BAYERPAT", "COLORTYP"):
        value = cards.get(key)
        if isinstance(value, str) and value.strip().upper() in BAYER_PATTERNS:
            pattern = value.strip().upper()
            break
    if pattern is None or (_count(cards, "NAXIS", 2) or 2) > 2:
        return None
    dx = _count(cards, "XBAYROFF", None)
    dy = _count(cards, "YBAYROFF", None)
    dx = _count(cards, "BAYOFFX", 0) if dx is None else dx
    dy = _count(cards, "BAYOFFY", 0) if dy is None else dy
    pattern = shift_pattern(pattern, (dx or 0) % 2, (dy or 0) % 2)
    if is_bottom_up(cards):
        pattern = flip_pattern_rows(pattern, height)
    return pattern


def meta_from_fits_header(
    header: Mapping[str, Any] | Any, path: str | os.PathLike[str]
) -> FrameMeta:
    """FrameMeta from FITS cards (an astropy Header or a plain mapping); never raises on values.

    Missing or unreadable values become None (binning 1).
    """
    cards = header_dict(header)
    width = _count(cards, "NAXIS1", 0) or 0
    height = _count(cards, "NAXIS2", 0) or 0
    kind = kind_from_text(cards.get("IMAGETYP")) or kind_from_text(cards.get("FRAME"))
    row_order = _text(cards, "ROWORDER")
    exposure = _number(cards, "EXPTIME", "EXPOSURE")
    iso = _positive(cards, "ISOSPEED")
    return FrameMeta(
        path=Path(path),
        file_format=FileFormat.FITS,
        width=width,
        height=height,
        kind=kind,
        bayer_pattern=fits_bayer_pattern(cards, height),
        row_order=row_order.upper() if row_order else None,
        instrument=_text(cards, "INSTRUME"),
        telescope=_text(cards, "TELESCOP"),
        exposure=exposure if exposure is not None and exposure >= 0 else None,
        iso=int(iso) if iso else None,
        gain=_number(cards, "GAIN"),
        offset=_number(cards, "OFFSET"),
        temperature=_number(cards, "CCD-TEMP", "CCD_TEMP", "TEMPERAT"),
        set_temperature=_number(cards, "SET-TEMP", "SET_TEMP"),
        xbinning=_count(cards, "XBINNING", 1) or 1,
        ybinning=_count(cards, "YBINNING", 1) or 1,
        filter=_text(cards, "FILTER"),
        object=_text(cards, "OBJECT"),
        date_obs=(parse_fits_datetime(cards.get("DATE-OBS"), cards.get("TIME-OBS"))
                  or parse_fits_datetime(cards.get("DATE-BEG"))),
        focal_length=_positive(cards, "FOCALLEN"),
        pixel_size=_positive(cards, "XPIXSZ"),
        header=cards,
    )


# ---------------------------------------------------------------------------------------------
# kind from folder and file names

_NAME_KINDS: dict[str, FrameKind] = {
    **dict.fromkeys(("light", "lights"), FrameKind.LIGHT),
    **dict.fromkeys(("dark", "darks"), FrameKind.DARK),
    **dict.fromkeys(("flat", "flats", "flatfield", "flatfields"), FrameKind.FLAT),
    **dict.fromkeys(("bias", "biases", "offset", "offsets"), FrameKind.BIAS),
    **dict.fromkeys(("darkflat", "darkflats", "flatdark", "flatdarks"), FrameKind.DARKFLAT),
}
_DARK_WORDS = ("dark", "darks")
_FLAT_WORDS = ("flat", "flats")


def _words(name: str) -> list[str]:
    """Lower-case letter runs of a name, split at camelCase humps ('DarkFlats' -> dark, flats)."""
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-z]+", name.lower()) if w]


def _kind_of_name(name: str) -> FrameKind | None:
    """The one kind a file or folder name names, or None if it names none or several."""
    words = _words(name)
    found: set[FrameKind] = set()
    i = 0
    while i < len(words):
        pair = tuple(words[i:i + 2])
        if len(pair) == 2 and (
            (pair[0] in _DARK_WORDS and pair[1] in _FLAT_WORDS)
            or (pair[0] in _FLAT_WORDS and pair[1] in _DARK_WORDS)
        ):
            found.add(FrameKind.DARKFLAT)
            i += 2
            continue
        if words[i] in _NAME_KINDS:
            found.add(_NAME_KINDS[words[i]])
        i += 1
    return found.pop() if len(found) == 1 else None


def kind_from_path(path: str | os.PathLike[str]) -> FrameKind | None:
    """Frame kind named by the file name or its folders, nearest first; None if none does.

    Whole words only ('darkflat' is not 'dark', 'highlights' is not a light); a name that
    names two kinds is skipped.
    """
    p = Path(path)
    names = [p.name, *(parent.name for parent in p.parents)]
    for name in names:
        kind = _kind_of_name(name)
        if kind is not None:
            return kind
    return None
