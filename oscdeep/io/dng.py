"""Minimal CFA DNG writer: real camera-raw files for tests and the demo, readable by LibRaw.

tifffile writes the mosaic with the DNG tags LibRaw needs; pyexiv2 (optional) adds the EXIF
sub-IFD, because LibRaw reads ISO only from a real EXIF IFD.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from oscdeep.errors import OscdeepError
from oscdeep.io.atomic import atomic_path
from oscdeep.types import BAYER_PATTERNS

# TIFF field types used by tifffile's extratags.
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10

PHOTOMETRIC_CFA = 32803
_CFA_INDEX = {"R": 0, "G": 1, "B": 2}

# XYZ (D65) -> linear sRGB: a synthetic camera whose channels are linear sRGB primaries.
XYZ_TO_SRGB = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)


def _rationals(values: Sequence[float], denominator: int = 10000) -> list[int]:
    """Flat numerator/denominator pairs as tifffile expects for (S)RATIONAL tags."""
    out: list[int] = []
    for v in values:
        out += [int(round(v * denominator)), denominator]
    return out


def _exposure_text(seconds: float) -> str:
    frac = Fraction(seconds).limit_denominator(1_000_000)
    return f"{frac.numerator}/{frac.denominator}"


def write_dng(
    path: str | os.PathLike[str],
    mosaic_uint16: np.ndarray,
    pattern: str,
    *,
    black_level: int = 0,
    white_level: int = 65535,
    exposure: float | None = None,
    iso: int | None = None,
    date_obs: dt.datetime | None = None,
    make: str = "oscdeep",
    model: str = "Synthetic OSC",
    color_matrix: Sequence[float] = XYZ_TO_SRGB,
    as_shot_neutral: Sequence[float] = (1.0, 1.0, 1.0),
    extra_tags: Sequence[tuple[int, int, int, Any]] = (),
) -> Path:
    """Write a (H, W) uint16 CFA mosaic as an uncompressed DNG, atomically.

    ``pattern`` is the Bayer pattern at array (0, 0). ``date_obs`` (naive UTC) becomes
    DateTimeOriginal with sub-seconds and OffsetTimeOriginal '+00:00'. ``extra_tags`` are
    extra ``(code, tiff_type, count, value)`` tags for IFD0 (e.g. ActiveArea 50829).
    """
    mosaic = np.asarray(mosaic_uint16)
    if mosaic.ndim != 2 or mosaic.dtype != np.uint16:
        raise ValueError(
            f"DNG mosaic must be a 2-D uint16 array, got {mosaic.dtype} {mosaic.shape}"
        )
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r}; expected one of {BAYER_PATTERNS}")
    exif = _exif_fields(exposure, iso, date_obs)
    if exif:
        try:
            import pyexiv2
        except ImportError as exc:
            raise OscdeepError(
                "writing DNG EXIF (exposure, ISO, date) needs pyexiv2: pip install 'oscdeep[dng]'"
            ) from exc

    import tifffile

    tags: list[tuple[int, int, int, Any, bool]] = [
        (271, _ASCII, 0, make, True),  # Make
        (272, _ASCII, 0, model, True),  # Model
        (33421, _SHORT, 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, _BYTE, 4, bytes(_CFA_INDEX[c] for c in pattern), True),  # CFAPattern
        (50706, _BYTE, 4, bytes((1, 4, 0, 0)), True),  # DNGVersion
        (50707, _BYTE, 4, bytes((1, 1, 0, 0)), True),  # DNGBackwardVersion
        (50708, _ASCII, 0, f"{make} {model}", True),  # UniqueCameraModel
        (50710, _BYTE, 3, bytes((0, 1, 2)), True),  # CFAPlaneColor
        (50711, _SHORT, 1, 1, True),  # CFALayout: rectangular
        (50714, _LONG, 1, int(black_level), True),  # BlackLevel
        (50717, _LONG, 1, int(white_level), True),  # WhiteLevel
        (50721, _SRATIONAL, 9, _rationals(color_matrix), True),  # ColorMatrix1
        (50728, _RATIONAL, 3, _rationals(as_shot_neutral), True),  # AsShotNeutral
        (50778, _SHORT, 1, 21, True),  # CalibrationIlluminant1: D65
    ]
    tags += [(code, typ, count, value, True) for code, typ, count, value in extra_tags]

    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, mosaic, photometric=PHOTOMETRIC_CFA, subfiletype=0, metadata=None,
            software="oscdeep", extratags=tags,
        )
        if exif:
            with pyexiv2.Image(str(tmp)) as img:
                img.modify_exif(exif)
    return path


def _exif_fields(
    exposure: float | None, iso: int | None, date_obs: dt.datetime | None
) -> dict[str, str]:
    exif: dict[str, str] = {}
    if exposure is not None:
        exif["Exif.Photo.ExposureTime"] = _exposure_text(exposure)
    if iso is not None:
        exif["Exif.Photo.ISOSpeedRatings"] = str(int(iso))
    if date_obs is not None:
        exif["Exif.Photo.DateTimeOriginal"] = date_obs.strftime("%Y:%m:%d %H:%M:%S")
        exif["Exif.Photo.SubSecTimeOriginal"] = f"{date_obs.microsecond:06d}"
        exif["Exif.Photo.OffsetTimeOriginal"] = "+00:00"
    return exif
