"""Camera raw files through rawpy (LibRaw) for pixels and CFA layout, exifread for EXIF.

Measured with rawpy 0.28 / LibRaw 0.22: ``RawPy.open_file`` parses headers only (< 1 ms), and
``sizes``, ``color_desc`` and ``num_colors`` are available then; but ``raw_pattern``,
``black_level_per_channel``, ``white_level`` and ``other`` (ISO, shutter, time) all call
``unpack()`` first, which decodes the raw data (~14 ms for an uncompressed 6 Mpx DNG; more for
compressed formats). LibRaw also fixes some black levels only while unpacking (from masked
pixels), so :func:`read_raw_meta` unpacks by default: the pattern and levels it reports are
then the same ones :func:`read_raw_mosaic` works with. Nothing here demosaics.
``read_raw_meta(path, unpack=False)`` is the header-only variant (sizes and EXIF).

Geometry: ``width``/``height`` and the Bayer pattern refer to ``raw_image_visible`` (the
sensor area without LibRaw's margins, in sensor orientation, not rotated by EXIF Orientation),
which is the mosaic oscdeep calibrates.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from oscdeep.errors import FrameReadError
from oscdeep.io.meta import FrameMeta
from oscdeep.types import BAYER_PATTERNS, FileFormat, shift_pattern

RAW_SUFFIXES: tuple[str, ...] = (
    ".3fr", ".ari", ".arw", ".bay", ".cap", ".cr2", ".cr3", ".crw", ".dcr", ".dcs", ".dng",
    ".drf", ".eip", ".erf", ".fff", ".iiq", ".k25", ".kdc", ".mdc", ".mef", ".mos", ".mrw",
    ".nef", ".nrw", ".orf", ".ori", ".pef", ".ptx", ".pxn", ".r3d", ".raf", ".raw", ".rw2",
    ".rwl", ".rwz", ".sr2", ".srf", ".srw", ".x3f",
)


def is_raw_name(path: str | os.PathLike[str]) -> bool:
    """True if the file name has a camera-raw suffix (any case)."""
    return Path(path).suffix.lower() in RAW_SUFFIXES


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()) or type(exc).__name__


@contextmanager
def _opened(path: Path, *, unpack: bool = True) -> Iterator[Any]:
    """An opened (and unpacked) ``rawpy.RawPy``; LibRaw errors become FrameReadError."""
    import rawpy

    if path.is_file() and path.stat().st_size == 0:
        raise FrameReadError(path, "empty file (0 bytes)")
    raw = rawpy.RawPy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rawpy warns on LibRaw's non-fatal data errors
            raw.open_file(str(path))
            if unpack:
                raw.unpack()
        yield raw
    except rawpy.LibRawFileUnsupportedError as exc:
        raise FrameReadError(
            path, "LibRaw cannot read it: not a camera raw file, or a camera LibRaw does not know"
        ) from exc
    except (rawpy.LibRawError, OSError) as exc:
        raise FrameReadError(path, f"cannot read camera raw ({_one_line(exc)})") from exc
    finally:
        raw.close()


def _cfa_pattern(raw: Any) -> tuple[str | None, str | None]:
    """Bayer pattern at ``raw_image_visible[0, 0]`` as R/G/B letters, or (None, note)."""
    try:
        cells = raw.raw_pattern
    except NotImplementedError:
        cells = None
    if cells is None:
        return None, "not a flat CFA raw (LibRaw gives no mosaic pattern)"
    if cells.shape == (1, 1):
        return None, "monochrome sensor (no colour filter array)"
    if cells.shape != (2, 2):
        n = cells.shape[0]
        name = "X-Trans" if n == 6 else f"{n}x{n}"
        return None, f"{name} colour filter array is not a 2x2 Bayer pattern"
    desc = raw.color_desc.decode("ascii", "replace")
    letters = "".join(desc[i] for i in cells.flat)
    # raw_pattern is indexed from the full raw image; shift it to the visible area's origin.
    sizes = raw.sizes
    letters = shift_pattern(letters, sizes.left_margin % 2, sizes.top_margin % 2)
    if letters not in BAYER_PATTERNS:
        return None, f"colour filter array {letters!r} ({desc}) is not an RGB Bayer pattern"
    return letters, None


def _read_exif(path: Path) -> dict[str, Any]:
    """EXIF tags by exifread name (header walk only; makernotes skipped); {} if unreadable."""
    import exifread

    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(exifread.process_file(fh, details=False, strict=False))
    except Exception:  # exifread raises many unrelated types on odd files; EXIF is optional
        return {}


def _exif_value(tags: dict[str, Any], name: str) -> Any:
    """First value of tag ``name`` from the EXIF IFD or IFD0 (``'EXIF X'`` / ``'Image X'``)."""
    for key in (f"EXIF {name}", f"Image {name}"):
        tag = tags.get(key)
        if tag is None:
            continue
        values = tag.values
        if isinstance(values, (list, tuple)):
            if not values:
                continue
            values = values[0]
        return values
    return None


def _exif_text(tags: dict[str, Any], name: str) -> str | None:
    value = _exif_value(tags, name)
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _exif_float(tags: dict[str, Any], name: str) -> float | None:
    value = _exif_value(tags, name)
    try:
        number = float(Fraction(value.num, value.den)) if hasattr(value, "den") else float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if np.isfinite(number) and number > 0 else None


_EXIF_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")


def _exif_datetime(tags: dict[str, Any]) -> dt.datetime | None:
    """DateTimeOriginal (else DateTime) with sub-seconds, converted to UTC if an offset is given.

    Without OffsetTimeOriginal the camera clock is taken as it is (cameras usually run on
    local time; nothing in the file says which).
    """
    for name, sub, off in (("DateTimeOriginal", "SubSecTimeOriginal", "OffsetTimeOriginal"),
                           ("DateTime", "SubSecTime", "OffsetTime")):
        match = _EXIF_DATE.match(_exif_text(tags, name) or "")
        if not match:
            continue
        try:
            stamp = dt.datetime(*(int(g) for g in match.groups()))
        except ValueError:
            continue
        digits = re.sub(r"\D", "", _exif_text(tags, sub) or "")
        if digits:
            stamp = stamp.replace(microsecond=int(digits[:6].ljust(6, "0")))
        offset = _OFFSET.fullmatch(_exif_text(tags, off) or "")
        if offset:
            sign = 1 if offset.group(1) == "+" else -1
            stamp -= sign * dt.timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3)))
        return stamp
    return None


def _meta(raw: Any, path: Path, tags: dict[str, Any], *, unpacked: bool) -> FrameMeta:
    sizes = raw.sizes
    header: dict[str, Any] = {
        "color_desc": raw.color_desc.decode("ascii", "replace"),
        "raw_width": sizes.raw_width,
        "raw_height": sizes.raw_height,
        "top_margin": sizes.top_margin,
        "left_margin": sizes.left_margin,
        "flip": sizes.flip,
    }
    for name in ("Make", "Model", "DateTimeOriginal", "ExposureTime", "ISOSpeedRatings",
                 "FNumber", "FocalLength", "Software"):
        value = _exif_value(tags, name)
        if value is not None:
            header[name] = str(value).strip()
    # Exposure: EXIF's rational is exact, LibRaw's shutter is a float32.
    exposure = _exif_float(tags, "ExposureTime")
    exif_iso = _exif_float(tags, "ISOSpeedRatings")
    iso = int(exif_iso) if exif_iso else None
    # Time: EXIF keeps sub-seconds and the UTC offset; LibRaw's timestamp went through mktime.
    date_obs = _exif_datetime(tags)
    focal = _exif_float(tags, "FocalLength")
    pattern = black_level = white_level = None
    if unpacked:
        pattern, note = _cfa_pattern(raw)
        black = raw.black_level_per_channel
        black_level = float(np.mean(black)) if len(black) else None
        white_level = float(raw.white_level)
        cells = raw.raw_pattern
        header.update(raw_pattern=cells.tolist() if cells is not None else None,
                      black_level_per_channel=list(black))
        other = raw.other
        if exposure is None and other.shutter_speed > 0:
            exposure = float(other.shutter_speed)
        # ISO: LibRaw also reads makernote ISO where EXIF's is missing or clipped at 65535.
        if other.iso_speed > 0:
            iso = int(round(other.iso_speed))
        if date_obs is None and other.timestamp != dt.datetime.fromtimestamp(0):
            date_obs = other.timestamp
        if focal is None and other.focal_length > 0:
            focal = float(other.focal_length)
    else:
        note = "CFA pattern and black/white levels not read (raw data not unpacked)"
    if note:
        header["note"] = note
    model = _exif_text(tags, "Model") or _exif_text(tags, "UniqueCameraModel")
    return FrameMeta(
        path=path,
        file_format=FileFormat.RAW,
        width=int(sizes.width),
        height=int(sizes.height),
        kind=None,
        bayer_pattern=pattern,
        camera_make=_exif_text(tags, "Make"),
        camera_model=model,
        instrument=model,
        exposure=exposure,
        iso=iso,
        date_obs=date_obs,
        black_level=black_level,
        white_level=white_level,
        focal_length=focal,
        header=header,
    )


def read_raw_meta(path: str | os.PathLike[str], *, unpack: bool = True) -> FrameMeta:
    """Metadata of a camera raw file: CFA pattern and levels from LibRaw, the rest from EXIF.

    ``kind`` is None: raw files do not say what a frame was for. With ``unpack=True`` the
    raw data is decoded (see the module notes; never demosaiced). ``unpack=False`` reads
    headers only (< 1 ms) but leaves ``bayer_pattern``, ``black_level`` and ``white_level``
    None and takes ISO from EXIF alone; a caller can copy those from one unpacked frame of
    the same camera model and size.
    """
    path = Path(path)
    with _opened(path, unpack=unpack) as raw:
        return _meta(raw, path, _read_exif(path), unpacked=unpack)


def read_raw_mosaic(path: str | os.PathLike[str]) -> tuple[np.ndarray, FrameMeta]:
    """The visible CFA mosaic as float32 (H, W), black level NOT subtracted, and its metadata."""
    path = Path(path)
    with _opened(path) as raw:
        meta = _meta(raw, path, _read_exif(path), unpacked=True)
        if raw.raw_pattern is None:
            raise FrameReadError(path, "camera raw holds no single-plane CFA mosaic")
        mosaic = raw.raw_image_visible.astype(np.float32)
    return mosaic, meta
