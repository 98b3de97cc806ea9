"""What ingest learns about a file from its header or EXIF, without decoding the image."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oscdeep.types import FileFormat, FrameKind


@dataclass(frozen=True)
class FrameMeta:
    """Acquisition metadata of one frame file.

    ``bayer_pattern`` is the pattern of the array as oscdeep holds it (top-down, see
    ``oscdeep.types``), after ROWORDER and XBAYROFF/YBAYROFF are applied; None for mono.
    ``kind`` is None when the header does not say; ``date_obs`` is naive UTC.
    """

    path: Path
    file_format: FileFormat
    width: int
    height: int
    kind: FrameKind | None = None
    bayer_pattern: str | None = None
    row_order: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    instrument: str | None = None
    telescope: str | None = None
    exposure: float | None = None
    iso: int | None = None
    gain: float | None = None
    offset: float | None = None
    temperature: float | None = None
    set_temperature: float | None = None
    xbinning: int = 1
    ybinning: int = 1
    filter: str | None = None
    object: str | None = None
    date_obs: dt.datetime | None = None
    black_level: float | None = None
    white_level: float | None = None
    focal_length: float | None = None
    pixel_size: float | None = None
    header: dict[str, Any] = field(default_factory=dict)
