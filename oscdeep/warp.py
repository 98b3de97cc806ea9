"""Resample a registered frame onto the reference pixel grid (OpenCV ``warpAffine``/``warpPerspective``).

Direction: a :class:`~oscdeep.transform.Transform` from registration maps *frame pixel ->
reference pixel*. Resampling needs the opposite map (each output pixel asks where it comes
from), so the inverse matrix is handed to OpenCV with ``WARP_INVERSE_MAP``.

No-data: an output pixel is valid exactly when its source position lies inside the hull of
the frame's pixel centres, ``0 <= x <= W-1`` and ``0 <= y <= H-1`` (plus 1e-4 px of slack for
rounding); everything else is NaN, never zero. The edges are found by *geometry* (for every
output row the source position is a linear fraction of x, so the valid columns are one
interval), not by warping a mask or a NaN border: the image itself is warped with
``BORDER_REPLICATE``, so cubic and Lanczos kernels near the edge read replicated pixels
instead of spreading NaN 2-4 px inwards, and the valid region is the same for every
interpolation and equals :func:`coverage`. NaN inside the frame (bad pixels) is left to
OpenCV: it turns exactly the output pixels whose kernel touches it into NaN (2x2 source
pixels for bilinear, 4x4 bicubic, 8x8 Lanczos-4) and goes no further.

Values are interpolated, not flux-resampled: a transform with scale s != 1 keeps surface
brightness (per-pixel values), which is what stacking onto one grid needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import cv2
import numpy as np

from oscdeep.transform import Transform
from oscdeep.types import accept_aliases, choice

__all__ = ["Interpolation", "WarpedSource", "as_interpolation", "coverage", "warp_image"]

EDGE_SLACK_PX = 1e-4
"""Source positions this far outside the pixel-centre hull still count as inside (rounding)."""


@accept_aliases({"linear": "bilinear", "cubic": "bicubic", "lanczos4": "lanczos",
                 "lanczos-4": "lanczos"})
class Interpolation(StrEnum):
    """Resampling kernel: bilinear (2x2), bicubic (4x4, a = -0.75), Lanczos-4 (8x8)."""

    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"


def as_interpolation(value: Interpolation | str) -> Interpolation:
    """The interpolation named ``value`` ('linear', 'cubic', 'lanczos4' are accepted too)."""
    return choice(Interpolation, value, "interpolation")


_CV_FLAG = {Interpolation.BILINEAR: cv2.INTER_LINEAR, Interpolation.BICUBIC: cv2.INTER_CUBIC,
            Interpolation.LANCZOS: cv2.INTER_LANCZOS4}
# Source rows a kernel reads around floor(y): floor - before .. floor + after.
_KERNEL_ROWS = {Interpolation.BILINEAR: (0, 1), Interpolation.BICUBIC: (1, 2),
                Interpolation.LANCZOS: (3, 4)}
_CLAMP_KERNEL = np.ones((2, 2), np.uint8)


# --------------------------------------------------------------------------- geometry

def _inverse_matrix(transform: Transform) -> np.ndarray:
    """Reference pixel -> frame pixel, normalised so that m[2, 2] == 1."""
    return transform.inverse().matrix


def _is_affine(m: np.ndarray) -> bool:
    return m[2, 0] == 0.0 and m[2, 1] == 0.0


def _integer_shift(m: np.ndarray) -> tuple[int, int] | None:
    """(dx, dy) when ``m`` (reference -> frame) is a pure whole-pixel translation."""
    if not np.array_equal(m[:, :2], np.eye(3)[:, :2]):
        return None
    dx, dy = m[0, 2], m[1, 2]
    if abs(dx - round(dx)) > 1e-9 or abs(dy - round(dy)) > 1e-9:
        return None
    return int(round(dx)), int(round(dy))


def _row_intervals(inv: np.ndarray, frame_hw: tuple[int, int], y0: int, y1: int,
                   out_w: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last valid column of output rows ``y0 .. y1-1`` (last < first: none).

    With source ``(nx/w, ny/w)``, each edge condition (``nx >= 0``, ``nx <= (W-1) w``, the
    same for y, and ``w > 0``) is linear in x for a fixed row, so together they cut the row
    down to one interval.
    """
    fh, fw = frame_hw
    y = np.arange(y0, y1, dtype=np.float64)
    a, b, c = inv[0]
    d, e, f = inv[1]
    g, h, i = inv[2]
    s = EDGE_SLACK_PX
    # Each condition is p * x + q(y) >= 0.
    conditions = [
        (a + s * g, (b + s * h) * y + (c + s * i)),
        ((fw - 1 + s) * g - a, ((fw - 1 + s) * h - b) * y + ((fw - 1 + s) * i - c)),
        (d + s * g, (e + s * h) * y + (f + s * i)),
        ((fh - 1 + s) * g - d, ((fh - 1 + s) * h - e) * y + ((fh - 1 + s) * i - f)),
        (g, h * y + i - 1e-12),
    ]
    lo = np.zeros(len(y))
    hi = np.full(len(y), out_w - 1.0)
    for p, q in conditions:
        if p > 0:
            lo = np.maximum(lo, -q / p)
        elif p < 0:
            hi = np.minimum(hi, -q / p)
        else:
            hi = np.where(q >= 0, hi, -1.0)
    # Nearly parallel edges give huge or infinite bounds: clip before converting to ints.
    first = np.ceil(np.clip(lo, -1.0, out_w)).astype(np.int64)
    last = np.floor(np.clip(hi, -1.0, out_w)).astype(np.int64)
    if fw == 0 or fh == 0:
        last[:] = -1
    return first, last


def coverage(transform: Transform, frame_shape: tuple[int, ...],
             out_shape: tuple[int, ...]) -> np.ndarray:
    """Bool ``(H_out, W_out)``: where a frame of ``frame_shape`` lands on the output grid.

    Exactly the non-NaN region of :func:`warp_image` for a frame without NaN pixels.
    """
    oh, ow = int(out_shape[0]), int(out_shape[1])
    first, last = _row_intervals(_inverse_matrix(transform), _hw(frame_shape), 0, oh, ow)
    cols = np.arange(ow)
    return (cols >= first[:, None]) & (cols <= last[:, None])


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    return int(shape[0]), int(shape[1])


# --------------------------------------------------------------------------- warping

def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {arr.shape}")
    # cv2 needs native byte order and contiguous rows (FITS data arrive big-endian).
    return np.ascontiguousarray(arr, dtype=np.float32)


def _warp_rows(read_rows: Callable[[int, int], np.ndarray], frame_shape: tuple[int, ...],
               inv: np.ndarray, y0: int, y1: int, out_w: int, interp: Interpolation,
               clamp: bool) -> np.ndarray:
    """Output rows ``y0 .. y1-1`` of the warp, reading only the source rows they need."""
    fh, fw = _hw(frame_shape)
    first, last = _row_intervals(inv, (fh, fw), y0, y1, out_w)
    rows = np.flatnonzero(last >= first)
    shift = _integer_shift(inv)
    if rows.size == 0 or shift is not None:
        out = np.full((y1 - y0, out_w, *frame_shape[2:]), np.nan, dtype=np.float32)
        if rows.size == 0:
            return out
        dx, dy = shift
        ya, yb = y0 + rows[0], y0 + rows[-1] + 1
        xa, xb = int(first[rows[0]]), int(last[rows[0]]) + 1
        out[ya - y0:yb - y0, xa:xb] = _check_image(read_rows(ya + dy, yb + dy))[:, xa + dx:xb + dx]
        return out

    # Source rows needed by geometry: y along a row is monotone, so its extremes over the
    # valid part are at the interval ends.
    ys = np.concatenate([_source_y(inv, first[rows], y0 + rows),
                         _source_y(inv, last[rows], y0 + rows)])
    before, after = _KERNEL_ROWS[interp]
    top = max(0, math.floor(ys.min()) - before - 1)
    bottom = min(fh, math.floor(ys.max()) + after + 2)
    src = _check_image(read_rows(top, bottom))

    # Output row r of this band is reference row y0 + r; source row s of the crop is frame
    # row top + s.
    r0, r1 = int(rows[0]), int(rows[-1]) + 1  # valid rows are contiguous (convex region)
    m = inv @ np.array([[1.0, 0.0, 0.0], [0.0, 1.0, y0 + r0], [0.0, 0.0, 1.0]])
    m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -top], [0.0, 0.0, 1.0]]) @ m
    out = np.empty((y1 - y0, out_w, *frame_shape[2:]), dtype=np.float32)
    out[:r0] = np.nan
    out[r1:] = np.nan
    block = out[r0:r1]
    _cv_warp(src, m, block, _CV_FLAG[interp])
    if clamp:
        _clamp_to_neighbours(block, src, m)
    for r in range(r0, r1):
        if last[r] < first[r]:
            out[r] = np.nan
            continue
        out[r, :first[r]] = np.nan
        out[r, last[r] + 1:] = np.nan
    return out


def _source_y(inv: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return (inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) / (inv[2, 0] * x + inv[2, 1] * y + inv[2, 2])


def _cv_warp(src: np.ndarray, m: np.ndarray, dst: np.ndarray, flag: int) -> None:
    """OpenCV warp into the contiguous array ``dst``; ``m`` maps destination -> source pixels."""
    flags = flag | cv2.WARP_INVERSE_MAP
    dsize = (dst.shape[1], dst.shape[0])
    if _is_affine(m):
        res = cv2.warpAffine(src, m[:2], dsize, dst=dst, flags=flags,
                             borderMode=cv2.BORDER_REPLICATE)
    else:
        res = cv2.warpPerspective(src, m, dsize, dst=dst, flags=flags,
                                  borderMode=cv2.BORDER_REPLICATE)
    if res is not dst and not np.shares_memory(res, dst):  # cv2 reallocated: copy back
        dst[...] = res.reshape(dst.shape)


def _clamp_to_neighbours(block: np.ndarray, src: np.ndarray, m: np.ndarray) -> None:
    """Clamp ``block`` in place to the min/max of the 2x2 source pixels around each position.

    Removes the ringing (dark rings, overshoot) a Lanczos or cubic kernel puts around stars,
    the way Siril clamps its Lanczos warp. ``lo``/``hi`` are the 2x2 minimum and maximum
    images (anchored at the top-left pixel) sampled at ``floor(x), floor(y)``: nearest
    sampling at a position shifted by half a pixel.
    """
    lo = cv2.erode(src, _CLAMP_KERNEL, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(src, _CLAMP_KERNEL, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    half = m.copy()
    half[0] -= 0.5 * m[2]
    half[1] -= 0.5 * m[2]
    bound = np.empty_like(block)
    _cv_warp(hi, half, bound, cv2.INTER_NEAREST)
    np.minimum(block, bound, out=block)
    _cv_warp(lo, half, bound, cv2.INTER_NEAREST)
    np.maximum(block, bound, out=block)


def _default_clamp(interp: Interpolation, clamp: bool | None) -> bool:
    return interp == Interpolation.LANCZOS if clamp is None else bool(clamp)


def warp_image(image: np.ndarray, transform: Transform, out_shape: tuple[int, ...], *,
               interpolation: Interpolation | str = Interpolation.BILINEAR,
               clamp: bool | None = None) -> np.ndarray:
    """Resample ``image`` (frame grid) onto the reference grid of ``out_shape`` (H, W).

    ``transform`` maps frame pixels to reference pixels. Returns float32 ``(H_out, W_out)``
    or ``(H_out, W_out, 3)`` with NaN wherever the frame does not cover (see module doc).
    ``clamp`` limits each value to the range of the 2x2 nearest source pixels (against
    ringing); ``None`` means on for Lanczos, off otherwise.
    """
    src = _check_image(image)
    interp = as_interpolation(interpolation)
    oh, ow = _hw(out_shape)
    return _warp_rows(lambda a, b: src[a:b], src.shape, _inverse_matrix(transform), 0, oh, ow,
                      interp, _default_clamp(interp, clamp))


# --------------------------------------------------------------------------- band source

class WarpedSource:
    """A frame warped onto the reference grid, read a band of output rows at a time.

    Implements the :class:`oscdeep.integrate.FrameSource` protocol. ``source`` is a frame
    source (``shape`` + ``read_rows``), an array, or a zero-argument callable returning the
    frame (called once, on first use, and kept until :meth:`release`; give ``frame_shape``
    so that ``shape`` does not load it). Each band warps only its own output rows from the
    source rows they need (by geometry: band height + ``W·|sin θ|`` + the kernel rows), so a
    row-wise source like ``FitsSource`` never holds the whole frame; the result equals
    :func:`warp_image` to float32 rounding.
    """

    def __init__(self, source: Any, transform: Transform, out_shape: tuple[int, ...], *,
                 interpolation: Interpolation | str = Interpolation.BILINEAR,
                 clamp: bool | None = None, frame_shape: tuple[int, ...] | None = None) -> None:
        self._source = source
        self._array: np.ndarray | None = None
        if isinstance(source, np.ndarray):
            self._array = _check_image(source)
        elif not hasattr(source, "read_rows") and not callable(source):
            raise TypeError("source must be a frame source, an array or a callable")
        self.transform = transform
        self.interpolation = as_interpolation(interpolation)
        self.clamp = _default_clamp(self.interpolation, clamp)
        self._inv = _inverse_matrix(transform)
        self._out_hw = _hw(out_shape)
        self._frame_shape = tuple(frame_shape) if frame_shape is not None else None

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self._frame_shape is None:
            if self._array is None and hasattr(self._source, "shape"):
                self._frame_shape = tuple(self._source.shape)
            else:
                self._frame_shape = self._load().shape
        return self._frame_shape

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self._out_hw, *self.frame_shape[2:])

    def _load(self) -> np.ndarray:
        if self._array is None:
            self._array = _check_image(self._source())
        return self._array

    def _read_source(self, y0: int, y1: int) -> np.ndarray:
        if self._array is None and hasattr(self._source, "read_rows"):
            return self._source.read_rows(y0, y1)
        return self._load()[y0:y1]

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        if not 0 <= y0 <= y1 <= self._out_hw[0]:
            raise ValueError(f"rows {y0}:{y1} are outside a frame of height {self._out_hw[0]}")
        return _warp_rows(self._read_source, self.frame_shape, self._inv, y0, y1,
                          self._out_hw[1], self.interpolation, self.clamp)

    def coverage(self) -> np.ndarray:
        """Where this frame lands on the output grid (see :func:`coverage`)."""
        return coverage(self.transform, self.frame_shape, self._out_hw)

    def release(self) -> None:
        """Drop a frame loaded from a callable (it is loaded again if read later)."""
        if not isinstance(self._source, np.ndarray):
            self._array = None
