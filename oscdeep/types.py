"""Shared enums, array aliases and conventions, stated once.

Conventions used everywhere in oscdeep:

* Image arrays are float32 working data: ``(H, W)`` for a CFA mosaic or mono frame,
  ``(H, W, 3)`` for RGB (channel order R, G, B).
* Arrays are held in *top-down* order: row 0 is the top row of the picture as the camera
  sees it. FITS files marked ``ROWORDER = 'BOTTOM-UP'`` are flipped on read.
* A Bayer pattern string names the colours of the 2x2 cell at array rows 0-1, columns 0-1,
  read left to right, top to bottom (``"RGGB"``: R at (0,0), G at (0,1), G at (1,0), B at (1,1)).
* Pixel coordinates are ``(x, y)`` with 0 at the centre of the first pixel; NaN means no data.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image: TypeAlias = npt.NDArray[np.float32]
    """A float32 frame: (H, W) mosaic/mono or (H, W, 3) RGB."""


def __getattr__(name: str) -> Any:
    # ``Image`` is built on first use so that importing oscdeep.types does not import numpy.
    if name == "Image":
        import numpy as np
        import numpy.typing as npt

        return npt.NDArray[np.float32]
    raise AttributeError(name)

BAYER_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
BayerPattern: TypeAlias = Literal["RGGB", "BGGR", "GRBG", "GBRG"]


class FrameKind(StrEnum):
    """What a frame was taken for."""

    LIGHT = "light"
    DARK = "dark"
    FLAT = "flat"
    BIAS = "bias"
    DARKFLAT = "darkflat"


class FrameStatus(StrEnum):
    """Whether a frame takes part in processing."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"


class FileFormat(StrEnum):
    """Container format of a source file."""

    FITS = "fits"
    RAW = "raw"


def _canonical(text: object) -> str:
    return "".join(ch for ch in str(text).strip().lower() if ch.isalnum())


def accept_aliases(aliases: dict[str, str]) -> Any:
    """Class decorator: a StrEnum also accepts ``aliases`` and any case or -/_/space spelling.

    ``Method("Edge-Aware")`` then finds the member whose value is ``aliases["edge-aware"]``.
    """

    def decorate(cls: Any) -> Any:
        table = {_canonical(k): v for k, v in aliases.items()}
        table.update({_canonical(m.value): m.value for m in cls})

        def _missing_(klass: Any, value: object) -> Any:
            found = table.get(_canonical(value))
            return klass(found) if found is not None else None

        cls._missing_ = classmethod(_missing_)
        return cls

    return decorate


def choice(cls: Any, value: object, what: str) -> Any:
    """``cls(value)`` for an enum, or a ConfigError naming ``what`` and the accepted values."""
    from oscdeep.errors import ConfigError

    try:
        return cls(value)
    except ValueError:
        names = ", ".join(m.value for m in cls)
        raise ConfigError(f"unknown {what} {value!r}: use one of {names}") from None


def shift_pattern(pattern: str, dx: int, dy: int) -> str:
    """Pattern seen when the 2x2 cell is read starting ``dx`` columns right, ``dy`` rows down."""
    cell = [[pattern[0], pattern[1]], [pattern[2], pattern[3]]]
    return "".join(cell[(r + dy) % 2][(c + dx) % 2] for r in (0, 1) for c in (0, 1))


def flip_pattern_rows(pattern: str, height: int) -> str:
    """Pattern of a mosaic of ``height`` rows after flipping it upside down."""
    return shift_pattern(pattern, 0, (height - 1) % 2)
