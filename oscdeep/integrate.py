"""Memory-bounded integration of N frames: frame sources, normalisation, the row-band driver.

``combine`` stacks N frames of one shape ((H, W) mosaic/mono or (H, W, 3) RGB) with any
rejection method of :mod:`oscdeep.rejection`. It works in row bands whose height comes from a
memory budget: for each band every frame is read once (so the time grows linearly with N),
normalised, and handed to the parallel numba kernel as one ``(N, P)`` block. An optional
first pass measures each frame's robust location and scale on a sparse grid of rows for
normalisation. Frames come from :class:`FrameSource` objects, so files are never loaded
whole: :class:`FitsSource` reads just the requested rows from disk.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numba
import numpy as np

from oscdeep.errors import ConfigError, FrameReadError
from oscdeep.framecode import decode_into
from oscdeep.io.fits import scale_into
from oscdeep.progress import NullProgress, Progress
from oscdeep.robust import median_sigma
from oscdeep.types import accept_aliases
from oscdeep.rejection import (
    MAX_FRAMES,
    CombineMethod,
    RejectionMethod,
    RejectionParams,
    reject_and_combine_into,
)

__all__ = [
    "ArraySource",
    "CombineOptions",
    "CombineResult",
    "FitsSource",
    "FrameSource",
    "Normalization",
    "TransformSource",
    "band_rows_for_budget",
    "combine",
    "default_memory_budget",
    "frame_location_scale",
    "memory_for_band_rows",
    "normalization_coefficients",
    "parse_memory_size",
]

DEFAULT_MEMORY_FRACTION = 0.5
"""Default budget: this fraction of the memory the kernel reports as available."""

MAX_BAND_BYTES = 64 << 20
"""Bands stop growing here whatever the budget: 40 frames of 3000x2000x3 combined as fast with
bands of 64, 128 or 256 MiB (6.9-7.9 s each, run to run), and the peak memory fell from 636
to 449 MiB; taller bands only hold more memory."""

_SLACK_BYTES = 8 << 20  # kernel scratch, per-frame counters, small arrays
_OUTPUT_BYTES_PER_VALUE = 4 + 3 * 2  # float32 image + three uint16 count maps
_READ_TEMP_BYTES_PER_VALUE = 8  # per reading thread: raw file buffer or a float copy
_SAMPLE_TARGET = 300_000  # normalisation: values per channel in the sample
_SAMPLE_COL_STEP = 3  # every 3rd column (odd, so both CFA columns are seen)


# --------------------------------------------------------------------------- sources

@runtime_checkable
class FrameSource(Protocol):
    """A frame that can be read a band of rows at a time.

    ``shape`` is (H, W) or (H, W, 3); ``read_rows(y0, y1)`` returns rows y0..y1-1 (top-down)
    as float32, NaN meaning no data. A source may also offer ``read_rows_into(out, y0, y1)``
    to fill a preallocated float32 array, which the driver then uses to avoid a copy, and a
    ``location_scale`` (per-channel median and MAD sigma, as :func:`frame_location_scale`
    measures them) known from when it was written, which spares the normalisation pass.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    def read_rows(self, y0: int, y1: int) -> np.ndarray: ...


def _check_rows(shape: tuple[int, ...], y0: int, y1: int) -> None:
    if not 0 <= y0 <= y1 <= shape[0]:
        raise ValueError(f"rows {y0}:{y1} are outside a frame of height {shape[0]}")


class ArraySource:
    """A frame already in memory (any numeric dtype; converted to float32 per band)."""

    def __init__(self, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
            raise ValueError(f"frame must be (H, W) or (H, W, 3), got {array.shape}")
        self._array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        _check_rows(self.shape, y0, y1)
        return np.array(self._array[y0:y1], dtype=np.float32)

    def read_rows_into(self, out: np.ndarray, y0: int, y1: int) -> None:
        _check_rows(self.shape, y0, y1)
        np.copyto(out, self._array[y0:y1], casting="unsafe")


class NpySource:
    """A frame in a ``.npy`` file, read row band by row band with plain file reads.

    Unlike a memory map, reading does not leave the whole file mapped into the process, so
    the memory a stack uses stays within its budget however many frames it combines. A
    uint16 file holds :mod:`oscdeep.framecode` codes; ``coding`` is their ``(lo, span)``.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 location_scale: tuple[np.ndarray, np.ndarray] | None = None,
                 coding: tuple[float, float] | None = None) -> None:
        self.path = Path(path)
        self.location_scale = location_scale
        """Known :func:`frame_location_scale` of the frame (measured when it was written)."""
        self.coding = coding
        with open(self.path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            self._offset = fh.tell()
        if fortran or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
            raise FrameReadError(self.path, f"unsupported cached frame layout {shape}")
        self._shape = tuple(shape)
        self._dtype = np.dtype(dtype)
        if (self._dtype == np.uint16) != (coding is not None):
            raise FrameReadError(self.path, "cached frame and its coding do not agree "
                                 f"({self._dtype}, coding {coding})")
        self._row_bytes = int(np.prod(shape[1:])) * self._dtype.itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        out = np.empty((y1 - y0, *self._shape[1:]), np.float32)
        self.read_rows_into(out, y0, y1)
        return out

    def read_rows_into(self, out: np.ndarray, y0: int, y1: int) -> None:
        _check_rows(self.shape, y0, y1)
        if self.coding is not None:
            codes = np.empty((y1 - y0, *self._shape[1:]), np.uint16)
            self._read(codes, y0, y1)
            target = out if out.dtype == np.float32 and out.flags.c_contiguous else \
                np.empty(codes.shape, np.float32)
            decode_into(codes, target, *self.coding)
            if target is not out:
                np.copyto(out, target, casting="unsafe")
            return
        self._read(out, y0, y1)

    def _read(self, out: np.ndarray, y0: int, y1: int) -> None:
        """Rows y0..y1 as stored, into ``out`` (converted when its dtype differs)."""
        count = (y1 - y0) * self._row_bytes
        offset = self._offset + y0 * self._row_bytes
        with open(self.path, "rb", buffering=0) as fh:
            if out.dtype == self._dtype and out.flags.c_contiguous and hasattr(os, "preadv"):
                got = os.preadv(fh.fileno(), [memoryview(out).cast("B")], offset)
                raw = None
            else:
                raw = os.pread(fh.fileno(), count, offset)
                got = len(raw)
        if got != count:
            raise FrameReadError(self.path, "cached frame is truncated")
        if raw is not None:
            rows = np.frombuffer(raw, dtype=self._dtype).reshape(y1 - y0, *self._shape[1:])
            np.copyto(out, rows, casting="unsafe")


_FITS_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _is_packed_file(path: Path) -> bool:
    """True for gzip/bzip2/zip files, which astropy opens transparently but cannot seek."""
    with open(path, "rb") as fh:
        magic = fh.read(3)
    return magic[:2] == b"\x1f\x8b" or magic == b"BZh" or magic[:2] == b"PK"


class FitsSource:
    """Rows of the first 2-D (or 3×H×W colour) image of a FITS file, read straight from disk.

    Only the bytes of the requested rows are read (one positioned read per band and plane),
    so a band costs memory in proportion to its rows, not to the frame. BZERO/BSCALE and
    BLANK are applied, big-endian data is converted to native float32, and a file marked
    ``ROWORDER = 'BOTTOM-UP'`` comes out top-down like :func:`oscdeep.io.fits.read_fits_image`.
    Tile-compressed or gzipped files fall back to astropy's ``section`` (slower).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from astropy.io import fits
        from astropy.utils.exceptions import AstropyUserWarning

        self.path = Path(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyUserWarning)
                hdul = fits.open(self.path, memmap=False, lazy_load_hdus=True)
            with hdul:
                index = next((i for i, hdu in enumerate(hdul)
                              if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2), None)
                if index is None:
                    raise FrameReadError(self.path, "FITS file has no 2-D image")
                hdu = hdul[index]
                header = hdu.header
                compressed = isinstance(hdu, fits.CompImageHDU)
                info = hdul.fileinfo(index)
                self._index = index
                self._data_offset = int(info["datLoc"]) if info else 0
                bitpix = int(header["BITPIX"])
                naxis = int(header["NAXIS"])
                width, height = int(header["NAXIS1"]), int(header["NAXIS2"])
                planes = int(header.get("NAXIS3", 1)) if naxis >= 3 else 1
                self._bzero = float(header.get("BZERO", 0.0))
                self._bscale = float(header.get("BSCALE", 1.0))
                blank = header.get("BLANK")
                self._bottom_up = str(header.get("ROWORDER", "")).strip().upper() == "BOTTOM-UP"
        except FrameReadError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FrameReadError(self.path, f"not a readable FITS file ({exc})") from exc
        if naxis > 3 or planes not in (1, 3):
            raise FrameReadError(self.path,
                                 f"unsupported FITS image of {naxis} axes, {planes} planes")
        if bitpix not in _FITS_DTYPES:
            raise FrameReadError(self.path, f"unsupported BITPIX {bitpix}")
        self._raw_dtype = np.dtype(_FITS_DTYPES[bitpix])
        self._blank = int(blank) if blank is not None and bitpix > 0 else None
        self._planes = planes
        self._shape = (height, width, 3) if planes == 3 else (height, width)
        self._direct = not (compressed or _is_packed_file(self.path))
        if self._direct:
            need = self._data_offset + self._raw_dtype.itemsize * height * width * planes
            if self.path.stat().st_size < need:
                raise FrameReadError(self.path, f"truncated FITS: {self.path.stat().st_size} "
                                                f"bytes, header announces {need}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        out = np.empty((y1 - y0, *self._shape[1:]), dtype=np.float32)
        self.read_rows_into(out, y0, y1)
        return out

    def read_rows_into(self, out: np.ndarray, y0: int, y1: int) -> None:
        _check_rows(self._shape, y0, y1)
        height, width = self._shape[:2]
        rows = y1 - y0
        if rows == 0:
            return
        # File rows are stored bottom-up when ROWORDER says so.
        f0 = height - y1 if self._bottom_up else y0
        if self._direct:
            with open(self.path, "rb", buffering=0) as fh:
                for plane in range(self._planes):
                    raw = np.empty((rows, width), dtype=self._raw_dtype)
                    start = self._data_offset + ((plane * height + f0) * width
                                                 * self._raw_dtype.itemsize)
                    fh.seek(start)
                    got = fh.readinto(raw)
                    if got != raw.nbytes:
                        raise FrameReadError(self.path, "truncated FITS data")
                    self._convert(raw, out if self._planes == 1 else out[..., plane])
        else:
            self._read_section(out, f0, f0 + rows)

    def _read_section(self, out: np.ndarray, f0: int, f1: int) -> None:
        from astropy.io import fits

        with fits.open(self.path, do_not_scale_image_data=True) as hdul:
            section = hdul[self._index].section
            for plane in range(self._planes):
                raw = np.asarray(section[plane, f0:f1] if self._planes == 3 else section[f0:f1])
                self._convert(raw, out if self._planes == 1 else out[..., plane])

    def _convert(self, raw: np.ndarray, target: np.ndarray) -> None:
        if self._bottom_up:
            raw = raw[::-1]
        scale_into(raw, target, self._bscale, self._bzero, self._blank)


class TransformSource:
    """A source whose bands pass through ``fn(band, y0) -> band`` (e.g. calibration).

    ``fn`` gets the rows ``y0 ..`` of the wrapped source and returns rows of the same count;
    ``margin`` extra rows are read above and below (clipped at the frame edges) and cut off
    afterwards, for operations that look at neighbouring rows (debayering, filters).
    ``shape`` overrides the output shape when ``fn`` changes the channel count.
    """

    def __init__(self, source: FrameSource,
                 fn: Callable[[np.ndarray, int], np.ndarray], *, margin: int = 0,
                 shape: tuple[int, ...] | None = None) -> None:
        if margin < 0:
            raise ValueError("margin must be >= 0")
        self.source = source
        self.fn = fn
        self.margin = margin
        self._shape = tuple(shape) if shape is not None else tuple(source.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        _check_rows(self._shape, y0, y1)
        top = max(0, y0 - self.margin)
        bottom = min(self._shape[0], y1 + self.margin)
        band = np.asarray(self.fn(self.source.read_rows(top, bottom), top), dtype=np.float32)
        if band.shape[0] != bottom - top:
            raise ValueError(f"transform returned {band.shape[0]} rows for {bottom - top}")
        return band[y0 - top:y1 - top]


# --------------------------------------------------------------------------- options

@accept_aliases({"no": "none", "add": "additive", "mul": "multiplicative",
                 "addscale": "additive_scaling", "mulscale": "multiplicative_scaling"})
class Normalization(StrEnum):
    """Per-frame normalisation to the reference frame (Siril's names).

    With location L (median) and scale S (1.4826 × MAD) of frame i and L0, S0 of the
    reference, per channel, a value x becomes:

    * ``additive``: x + (L0 - L)
    * ``multiplicative``: x · L0 / L
    * ``additive_scaling``: (x - L) · S0 / S + L0 — matches both location and spread
    * ``multiplicative_scaling``: x · (L0 / L) · (S0 / S), Siril's product of both ratios
    """

    NONE = "none"
    ADDITIVE = "additive"
    MULTIPLICATIVE = "multiplicative"
    ADDITIVE_SCALING = "additive_scaling"
    MULTIPLICATIVE_SCALING = "multiplicative_scaling"


@dataclass(frozen=True)
class CombineOptions:
    """Everything :func:`combine` can be told.

    ``rejection="median"`` means a median combination without rejection. ``memory_bytes``
    bounds the working memory (band buffers, output maps, read buffers; not the interpreter
    and libraries); None takes :data:`DEFAULT_MEMORY_FRACTION` of the available memory. A
    band's frames never take more than :data:`MAX_BAND_BYTES` in any case.
    ``band_rows`` forces the band height instead. ``workers`` threads (None: all cores) run
    the kernel and the reads. ``prefetch`` reads the next band while the current one is
    combined (needs two band buffers, so bands are half as tall).
    """

    rejection: RejectionMethod | str = RejectionMethod.WINSORIZED
    combine: CombineMethod | str = CombineMethod.MEAN
    sigma_low: float = 3.0
    sigma_high: float = 3.0
    percentile_low: float = 0.2
    percentile_high: float = 0.1
    max_iter: int | None = None
    normalization: Normalization | str = Normalization.NONE
    reference: int = 0
    memory_bytes: int | None = None
    band_rows: int | None = None
    workers: int | None = None
    prefetch: bool = False
    output_dtype: str = "float32"

    def __post_init__(self) -> None:
        try:
            params = self.rejection_params()
            object.__setattr__(self, "rejection", params.method)
            object.__setattr__(self, "combine", params.combine)
            object.__setattr__(self, "normalization", Normalization(self.normalization))
        except ValueError as exc:
            raise ConfigError(f"invalid combine option: {exc}") from exc
        if self.output_dtype not in ("float32", "float64"):
            raise ConfigError(f"output_dtype must be float32 or float64, not {self.output_dtype}")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ConfigError("memory budget must be positive")
        if self.band_rows is not None and self.band_rows < 1:
            raise ConfigError("band_rows must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("workers must be >= 1")

    def rejection_params(self) -> RejectionParams:
        """The kernel's parameters."""
        return RejectionParams(self.rejection, self.combine, self.sigma_low, self.sigma_high,
                               self.percentile_low, self.percentile_high, self.max_iter)


@dataclass
class CombineResult:
    """The integrated image and what happened to every pixel and frame.

    Maps have the frame shape: ``rejected_low``/``rejected_high``/``n_used`` count, per pixel
    and channel, the values rejected below, above, and kept. Per-frame arrays have length N
    (``*_fraction``: share of the frame's valid pixels) or shape (N, C) for the per-channel
    normalisation: a frame's value x entered the stack as ``gains * x + offsets``.
    """

    image: np.ndarray
    rejected_low: np.ndarray
    rejected_high: np.ndarray
    n_used: np.ndarray
    frame_rejected_low_fraction: np.ndarray
    frame_rejected_high_fraction: np.ndarray
    locations: np.ndarray
    scales: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    band_rows: int
    n_bands: int
    memory_bytes: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def frame_rejected_fraction(self) -> np.ndarray:
        """Share of each frame's valid pixels rejected on either side."""
        return self.frame_rejected_low_fraction + self.frame_rejected_high_fraction


# --------------------------------------------------------------------------- memory

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_size(text: str | int) -> int:
    """Bytes from ``"2G"``, ``"500M"``, ``"750MiB"``, ``"1.5g"`` or a plain number of bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if not match:
        raise ConfigError(f"cannot read memory size {text!r}: use e.g. 2G or 500M")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def default_memory_budget() -> int:
    """The default working-memory budget: a fraction of the available memory."""
    return int(available_memory() * DEFAULT_MEMORY_FRACTION)


def _row_bytes(n_frames: int, values_per_row: int, workers: int, prefetch: bool) -> int:
    buffers = 2 if prefetch else 1
    return values_per_row * (4 * n_frames * buffers + _READ_TEMP_BYTES_PER_VALUE * workers)


def memory_for_band_rows(n_frames: int, shape: tuple[int, ...], rows: int, *,
                         workers: int = 1, prefetch: bool = False) -> int:
    """Working memory (bytes) that :func:`combine` needs with bands of ``rows`` rows."""
    per_row = math.prod(shape[1:])
    fixed = math.prod(shape) * _OUTPUT_BYTES_PER_VALUE + _SLACK_BYTES
    return fixed + rows * _row_bytes(n_frames, per_row, workers, prefetch)


def band_rows_for_budget(n_frames: int, shape: tuple[int, ...], memory_bytes: int, *,
                         workers: int = 1, prefetch: bool = False) -> int:
    """Tallest band (rows, at most H) whose working memory fits in ``memory_bytes``."""
    fixed = memory_for_band_rows(n_frames, shape, 0, workers=workers, prefetch=prefetch)
    per_row = _row_bytes(n_frames, math.prod(shape[1:]), workers, prefetch)
    rows = (memory_bytes - fixed) // per_row
    if rows < 1:
        need = memory_for_band_rows(n_frames, shape, 1, workers=workers, prefetch=prefetch)
        raise ConfigError(
            f"memory budget of {memory_bytes / 2**20:.0f} MiB is too small to combine "
            f"{n_frames} frames of {'x'.join(map(str, shape))}: at least "
            f"{math.ceil(need / 2**20)} MiB is needed (set a larger --memory)")
    return int(min(rows, shape[0]))


# --------------------------------------------------------------------------- normalisation

def _sample_grid(height: int, width: int) -> tuple[list[tuple[int, int]], int]:
    """Row bands and column step of the normalisation sample (about _SAMPLE_TARGET values).

    Rows come in adjacent pairs and the column step is odd, so every CFA colour is seen.
    """
    if height * width <= _SAMPLE_TARGET:
        return [(0, height)], 1
    col_step = _SAMPLE_COL_STEP
    period = 2 * max(1, math.ceil(height * width / (col_step * _SAMPLE_TARGET)))
    return [(y, min(height, y + 2)) for y in range(0, height, period)], col_step


def frame_location_scale(source: FrameSource) -> tuple[np.ndarray, np.ndarray]:
    """Robust location (median) and scale (1.4826 × MAD) per channel, from a sparse grid.

    About 300 000 values per channel are read (pairs of adjacent rows spread over the frame,
    every third column), band by band: a fraction of a full read, never the whole frame.
    A source with a known ``location_scale`` (measured when it was written) is not read.
    """
    known = getattr(source, "location_scale", None)
    if known is not None:
        return np.asarray(known[0], dtype=np.float64), np.asarray(known[1], dtype=np.float64)
    shape = tuple(source.shape)
    channels = shape[2] if len(shape) == 3 else 1
    bands, col_step = _sample_grid(shape[0], shape[1])
    pieces = [np.asarray(source.read_rows(y0, y1), dtype=np.float32)[:, ::col_step]
              for y0, y1 in bands]
    sample = np.concatenate(pieces, axis=0).reshape(-1, channels)
    locations = np.full(channels, np.nan)
    scales = np.full(channels, np.nan)
    for c in range(channels):
        locations[c], scales[c] = median_sigma(sample[:, c])
    return locations, scales


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    ok = np.isfinite(den) & (den != 0) & np.isfinite(num)
    return np.where(ok, num / np.where(ok, den, 1.0), 1.0)


def normalization_coefficients(locations: np.ndarray, scales: np.ndarray,
                               method: Normalization | str, reference: int = 0
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame, per-channel ``(gains, offsets)`` so that ``gains * x + offsets`` matches the
    reference frame. A frame whose location or scale is 0 or unknown keeps a ratio of 1.
    """
    method = Normalization(method)
    loc = np.asarray(locations, dtype=np.float64)
    sca = np.asarray(scales, dtype=np.float64)
    gains = np.ones_like(loc)
    offsets = np.zeros_like(loc)
    loc0, sca0 = loc[reference], sca[reference]
    if method is Normalization.ADDITIVE:
        offsets = np.where(np.isfinite(loc), loc0 - loc, 0.0)
    elif method is Normalization.MULTIPLICATIVE:
        gains = _ratio(loc0, loc)
    elif method is Normalization.ADDITIVE_SCALING:
        gains = _ratio(sca0, sca)
        offsets = np.where(np.isfinite(loc), loc0 - gains * loc, 0.0)
    elif method is Normalization.MULTIPLICATIVE_SCALING:
        gains = _ratio(loc0, loc) * _ratio(sca0, sca)
    offsets = np.where(np.isfinite(offsets), offsets, 0.0)
    return gains, offsets


# --------------------------------------------------------------------------- driver

def _bands(height: int, rows: int, balance: bool) -> list[tuple[int, int]]:
    if balance:
        count = math.ceil(height / rows)
        rows = math.ceil(height / count)
    return [(y, min(height, y + rows)) for y in range(0, height, rows)]


def _read_frame_band(source: Any, out: np.ndarray, y0: int, y1: int,
                     gain: np.ndarray, offset: np.ndarray) -> None:
    reader = getattr(source, "read_rows_into", None)
    if reader is not None:
        reader(out, y0, y1)
    else:
        band = source.read_rows(y0, y1)
        if band.shape != out.shape:
            raise ValueError(f"source returned rows of shape {band.shape}, expected {out.shape}")
        np.copyto(out, band, casting="unsafe")
    if out.ndim == 3 and out.shape[2] <= 4 and out.flags.c_contiguous:
        # OpenCV's per-channel scalars: numpy broadcasting over a last axis of 3 was 4x slower.
        if np.any(gain != 1.0):
            cv2.multiply(out, (*gain.tolist(), 0.0)[:4], dst=out)
        if np.any(offset != 0.0):
            cv2.add(out, (*offset.tolist(), 0.0)[:4], dst=out)
        return
    if np.any(gain != 1.0):
        out *= gain.astype(np.float32) if out.ndim == 3 else np.float32(gain[0])
    if np.any(offset != 0.0):
        out += offset.astype(np.float32) if out.ndim == 3 else np.float32(offset[0])


def combine(
    sources: Sequence[FrameSource],
    *,
    options: CombineOptions = CombineOptions(),
    weights: Sequence[float] | np.ndarray | None = None,
    progress: Progress | None = None,
) -> CombineResult:
    """Integrate ``sources`` (all of one shape) into one image under a memory budget.

    Each band of rows is read from every frame once, normalised, rejected and combined by
    :func:`oscdeep.rejection.reject_and_combine_into` on all ``options.workers`` cores.
    ``weights`` (one per frame, > 0) weight the mean. ``progress`` is any object with
    ``begin(description, total)``, ``advance(step)`` and ``end()``.
    """
    t_start = time.perf_counter()
    sources = list(sources)
    progress = progress or NullProgress()
    n_frames = len(sources)
    if n_frames == 0:
        raise ConfigError("no frames to combine")
    if n_frames > MAX_FRAMES:
        raise ConfigError(f"at most {MAX_FRAMES} frames can be combined at once")
    shape = tuple(sources[0].shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
        raise ConfigError(f"frames must be (H, W) or (H, W, 3), not {shape}")
    for i, src in enumerate(sources):
        if tuple(src.shape) != shape:
            raise ConfigError(f"frame {i} has shape {tuple(src.shape)}, frame 0 has {shape}")
    if not 0 <= options.reference < n_frames:
        raise ConfigError(f"reference frame {options.reference} is not among {n_frames}")
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (n_frames,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ConfigError(f"weights must be {n_frames} finite numbers > 0")

    height = shape[0]
    channels = shape[2] if len(shape) == 3 else 1
    values_per_row = math.prod(shape[1:])
    workers = min(options.workers or numba.config.NUMBA_NUM_THREADS,
                  numba.config.NUMBA_NUM_THREADS)
    budget = options.memory_bytes or default_memory_budget()
    if options.band_rows is not None:
        rows = min(options.band_rows, height)
    else:
        rows = band_rows_for_budget(n_frames, shape, budget, workers=workers,
                                    prefetch=options.prefetch)
        rows = min(rows, max(1, MAX_BAND_BYTES // (4 * n_frames * values_per_row)))
    bands = _bands(height, rows, balance=options.band_rows is None)
    rows = max(y1 - y0 for y0, y1 in bands)
    timings = {"normalization": 0.0, "read": 0.0, "combine": 0.0}

    # First pass: robust location and scale of every frame, for normalisation.
    locations = np.full((n_frames, channels), np.nan)
    scales = np.full((n_frames, channels), np.nan)
    normalization = Normalization(options.normalization)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oscdeep-read")
    try:
        if normalization is not Normalization.NONE:
            t0 = time.perf_counter()
            progress.begin("Measuring frames for normalisation", n_frames)
            for i, (loc, sca) in enumerate(pool.map(frame_location_scale, sources)):
                locations[i], scales[i] = loc, sca
                progress.advance(1)
            progress.end()
            timings["normalization"] = time.perf_counter() - t0
        gains, offsets = normalization_coefficients(locations, scales, normalization,
                                                    options.reference)

        out_dtype = np.dtype(options.output_dtype)
        image = np.empty(shape, dtype=out_dtype)
        n_low = np.empty(shape, dtype=np.uint16)
        n_high = np.empty(shape, dtype=np.uint16)
        n_used = np.empty(shape, dtype=np.uint16)
        flat = [a.reshape(-1) for a in (image, n_low, n_high, n_used)]
        frame_counts = np.zeros((n_frames, 3), dtype=np.int64)
        params = options.rejection_params()
        buffers = [np.empty(n_frames * rows * values_per_row, dtype=np.float32)
                   for _ in range(2 if options.prefetch and len(bands) > 1 else 1)]

        def band_views(buffer: np.ndarray, y0: int, y1: int) -> np.ndarray:
            return buffer[:n_frames * (y1 - y0) * values_per_row].reshape(
                n_frames, y1 - y0, *shape[1:])

        def start_reads(buffer: np.ndarray, y0: int, y1: int) -> list[Future[None]]:
            views = band_views(buffer, y0, y1)
            return [pool.submit(_read_frame_band, src, views[i], y0, y1, gains[i], offsets[i])
                    for i, src in enumerate(sources)]

        def wait(futures: list[Future[None]]) -> None:
            t0 = time.perf_counter()
            for fut in futures:
                fut.result()
            timings["read"] += time.perf_counter() - t0

        previous_threads = numba.get_num_threads()
        numba.set_num_threads(workers)
        progress.begin(f"Combining {n_frames} frames", len(bands))
        try:
            pending = start_reads(buffers[0], *bands[0])
            for k, (y0, y1) in enumerate(bands):
                buffer = buffers[k % len(buffers)]
                wait(pending)
                if k + 1 < len(bands) and len(buffers) == 2:
                    pending = start_reads(buffers[(k + 1) % 2], *bands[k + 1])
                t0 = time.perf_counter()
                block = band_views(buffer, y0, y1).reshape(n_frames, -1)
                lo, hi = y0 * values_per_row, y1 * values_per_row
                reject_and_combine_into(block, *(a[lo:hi] for a in flat), weights=w,
                                        params=params, frame_counts=frame_counts)
                timings["combine"] += time.perf_counter() - t0
                if k + 1 < len(bands) and len(buffers) == 1:
                    pending = start_reads(buffer, *bands[k + 1])
                progress.advance(1)
        finally:
            numba.set_num_threads(previous_threads)
            progress.end()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    valid = np.maximum(frame_counts[:, 2], 1).astype(np.float64)
    timings["total"] = time.perf_counter() - t_start
    return CombineResult(
        image=image, rejected_low=n_low, rejected_high=n_high, n_used=n_used,
        frame_rejected_low_fraction=frame_counts[:, 0] / valid,
        frame_rejected_high_fraction=frame_counts[:, 1] / valid,
        locations=locations, scales=scales, gains=gains, offsets=offsets,
        band_rows=rows, n_bands=len(bands),
        memory_bytes=memory_for_band_rows(n_frames, shape, rows, workers=workers,
                                          prefetch=len(buffers) == 2),
        timings=timings,
    )
