"""What a report shows, as plain frozen data: gathered from the library, rendered to HTML.

Nothing here knows about the database or the page; ``oscdeep.pipeline.report`` fills these
records and ``oscdeep.report.html`` draws them, so either side can change alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FrameRow:
    """One light of a night with its quality measurements (None where not measured)."""

    id: int
    name: str
    time: dt.datetime | None
    fwhm: float | None
    roundness: float | None
    background: float | None
    n_stars: int | None
    status: str
    reason: str | None = None
    exposure: float | None = None
    noise: float | None = None
    weight: float | None = None


@dataclass(frozen=True)
class MasterRow:
    """A master calibration used by (or built for) a session's lights."""

    id: int
    kind: str
    version: int
    file_name: str
    n_frames: int
    camera: str | None = None
    exposure: float | None = None
    temperature: float | None = None
    gain: float | None = None
    iso: int | None = None
    filter: str | None = None
    median: float | None = None
    noise: float | None = None
    hot_pixels: int | None = None
    created: dt.datetime | None = None
    used_by: int = 0
    """Lights of the session calibrated with (or matched to) this master."""
    exists: bool = True
    """Whether the master's file is still on disk."""


@dataclass(frozen=True)
class KindCount:
    """Frames of one kind in a session: counts by status and total exposure."""

    kind: str
    total: int
    accepted: int
    rejected: int
    failed: int
    exposure_s: float


@dataclass(frozen=True)
class SessionSection:
    """One night: its frame counts, its lights for the quality plots, its masters."""

    id: int
    name: str
    target: str | None
    night: dt.date | None
    kinds: tuple[KindCount, ...] = ()
    frames: tuple[FrameRow, ...] = ()
    masters: tuple[MasterRow, ...] = ()
    masters_note: str | None = None
    """How the masters were found (recorded on the lights, or matched now)."""
    notes: str | None = None


@dataclass(frozen=True)
class ProductSection:
    """A finished picture made from a stack, with a downsampled preview."""

    id: int
    file_name: str
    path: str
    format: str
    params: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)
    created: dt.datetime | None = None
    preview: bytes | None = None
    """PNG bytes, or None when the file could not be read (``note`` says why)."""
    note: str | None = None


@dataclass(frozen=True)
class StackSection:
    """An integration: its statistics, options, preview and the pictures made from it."""

    id: int
    name: str
    target: str | None
    n_frames: int
    integration_s: float | None
    stats: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    selection: str | None = None
    output_path: str | None = None
    created: dt.datetime | None = None
    wall_time_s: float | None = None
    preview: bytes | None = None
    """PNG bytes of the auto-stretched stack, or None (``note`` says why)."""
    note: str | None = None
    products: tuple[ProductSection, ...] = ()


@dataclass(frozen=True)
class IntegrationLine:
    """Accepted light integration of one target and filter."""

    target: str
    filter: str
    frames: int
    exposure_s: float
    sessions: int


@dataclass(frozen=True)
class ReportData:
    """Everything one report page shows."""

    title: str
    scope: str
    """'library', 'session', 'target' or 'stack'."""
    generated: dt.datetime
    software_version: str
    sessions: tuple[SessionSection, ...] = ()
    stacks: tuple[StackSection, ...] = ()
    integration: tuple[IntegrationLine, ...] = ()
    subtitle: str | None = None
    location: str | None = None
    """Where the library is (for the page footer)."""

    def final_image(self) -> tuple[str, bytes] | None:
        """(caption, PNG) of the picture to show first: the newest product, else stack preview."""
        newest_first = sorted(self.stacks, key=lambda s: s.id, reverse=True)
        for stack in newest_first:
            for product in sorted(stack.products, key=lambda p: p.id, reverse=True):
                if product.preview:
                    return f"{product.file_name} (from stack {stack.name})", product.preview
        for stack in newest_first:
            if stack.preview:
                return f"stack {stack.name}, automatic stretch", stack.preview
        return None


__all__ = [
    "FrameRow",
    "IntegrationLine",
    "KindCount",
    "MasterRow",
    "ProductSection",
    "ReportData",
    "SessionSection",
    "StackSection",
]
