"""Colour filter array (Bayer) geometry: which colour sits where in a mosaic.

A pattern string names the 2x2 cell at array rows 0-1 (see :mod:`oscdeep.types`). The four
*sites* of the cell are numbered 0-3 in reading order: (row 0, col 0), (0, 1), (1, 0), (1, 1);
``image[dy::2, dx::2]`` is the half-resolution plane of site ``2 * dy + dx``. ``None`` as a
pattern means a mono frame, which has a single site: the whole image.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from oscdeep.types import BAYER_PATTERNS

CHANNEL_INDEX = {"R": 0, "G": 1, "B": 2}
"""Colour index of each filter letter, as in (H, W, 3) RGB arrays."""


def check_pattern(pattern: str | None) -> None:
    """Raise ValueError unless ``pattern`` is a Bayer pattern string or None (mono)."""
    if pattern is not None and pattern not in BAYER_PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r} (expected one of "
                         f"{', '.join(BAYER_PATTERNS)} or None for mono)")


def cfa_sites(pattern: str) -> tuple[tuple[int, int, int], ...]:
    """``(dy, dx, colour index)`` of the four sites of the 2x2 cell, in site order."""
    check_pattern(pattern)
    return tuple((dy, dx, CHANNEL_INDEX[pattern[2 * dy + dx]]) for dy in (0, 1) for dx in (0, 1))


def site_planes(image: np.ndarray, pattern: str | None) -> Iterator[np.ndarray]:
    """Views of each site's plane (``image[dy::2, dx::2]``); the whole image for mono."""
    if pattern is None:
        yield image
        return
    for dy, dx, _ in cfa_sites(pattern):
        yield image[dy::2, dx::2]


def cfa_channels(pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 colour index (0 R, 1 G, 2 B) of each pixel of a ``pattern`` mosaic."""
    h, w = shape
    cell = np.array([c for _, _, c in cfa_sites(pattern)], dtype=np.uint8).reshape(2, 2)
    return np.ascontiguousarray(np.tile(cell, ((h + 1) // 2, (w + 1) // 2))[:h, :w])


def is_green(pattern: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Whether pixels at rows ``y``, columns ``x`` are green sites (vectorised)."""
    greens = np.array([c == CHANNEL_INDEX["G"] for _, _, c in cfa_sites(pattern)])
    return greens[2 * (np.asarray(y) & 1) + (np.asarray(x) & 1)]


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an (H, W, 3) image through a Bayer filter: (H, W), each pixel its own colour."""
    rgb = np.asarray(rgb)
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for dy, dx, colour in cfa_sites(pattern):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, colour]
    return out
