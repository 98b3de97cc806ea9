"""Which calibration frames belong together in one master, and how lights are grouped.

Pure rules over frame records (no database session, no files), so they are table-testable:
frames must share camera, binning, gain/ISO and offset; darks and dark-flats also exposure
(within a tolerance) and sensor temperature (frames within the tolerance of the coolest one of
a cluster); flats also session and filter. Inside a group the commonest sensor size and Bayer
pattern win and the other frames are excluded with the reason.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from oscdeep.config import MatchTolerances


class FrameRecord(Protocol):
    """What grouping reads from a frame (a ``Frame`` row satisfies it)."""

    id: int
    kind: str
    width: int
    height: int
    bayer_pattern: str | None
    xbinning: int
    ybinning: int
    gain: float | None
    iso: int | None
    offset: float | None
    exposure: float | None
    temperature: float | None
    session_id: int
    filter: str | None

    @property
    def camera(self) -> str | None: ...


@dataclass
class FrameGroup:
    """Frames that make one master (or lights that share one calibration)."""

    kind: str
    frames: list[Any]
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def exposure(self) -> float | None:
        values = [f.exposure for f in self.frames if f.exposure is not None]
        return statistics.median(values) if values else None

    @property
    def temperature(self) -> float | None:
        values = [f.temperature for f in self.frames if f.temperature is not None]
        return statistics.median(values) if values else None

    def describe(self) -> str:
        """Short words for tables: '12 darks 300 s at -10.1 °C, gain 100'."""
        first = self.frames[0]
        plural = "" if len(self.frames) == 1 or self.kind == "bias" else "s"
        parts = [f"{len(self.frames)} {self.kind}{plural}"]
        if self.kind in ("dark", "darkflat", "light") and self.exposure is not None:
            parts.append(f"{self.exposure:g} s")
        if self.temperature is not None and self.kind != "flat":
            parts.append(f"at {self.temperature:.1f} °C")
        if first.gain is not None:
            parts.append(f"gain {first.gain:g}")
        if first.iso is not None:
            parts.append(f"ISO {first.iso}")
        if self.kind in ("flat", "light") and first.filter:
            parts.append(f"filter {first.filter}")
        return ", ".join(parts)

    def key_text(self) -> str:
        """Stable identity of the group, used to number master versions."""
        return "|".join(f"{k}={_fmt(v)}" for k, v in sorted(self.key.items()))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _settings_key(frame: FrameRecord) -> dict[str, Any]:
    return {
        "camera": frame.camera,
        "binning": f"{frame.xbinning}x{frame.ybinning}",
        "gain": frame.gain,
        "iso": frame.iso,
        "offset": frame.offset,
    }


def cluster(values: Sequence[Any], *, value: Callable[[Any], float | None],
            same: Callable[[float, float], bool]) -> list[list[Any]]:
    """Split items into runs of similar ``value`` (sorted); items with no value form one run.

    A run starts at its smallest value and takes every following item for which
    ``same(first, value)`` holds, so a run never spans more than one tolerance.
    """
    known = sorted((v for v in values if value(v) is not None), key=value)  # type: ignore[arg-type]
    unknown = [v for v in values if value(v) is None]
    runs: list[list[Any]] = []
    for item in known:
        if runs and same(value(runs[-1][0]), value(item)):  # type: ignore[arg-type]
            runs[-1].append(item)
        else:
            runs.append([item])
    if unknown:
        runs.append(unknown)
    return runs


def _split(frames: list[Any], kind: str, tol: MatchTolerances) -> list[list[Any]]:
    runs = [frames]
    if kind in ("dark", "darkflat", "light"):
        runs = [r for run in runs for r in cluster(
            run, value=lambda f: f.exposure, same=tol.same_exposure)]
        runs = [r for run in runs for r in cluster(
            run, value=lambda f: f.temperature, same=lambda a, b: b - a <= tol.temperature)]
    return runs


def group_frames(frames: Iterable[Any], tol: MatchTolerances = MatchTolerances()
                 ) -> tuple[list[FrameGroup], list[tuple[Any, str]]]:
    """Group calibration frames (or lights) of any kinds; returns (groups, excluded + reason)."""
    by_key: dict[tuple[Any, ...], list[Any]] = {}
    for frame in frames:
        key = {"kind": frame.kind, **_settings_key(frame)}
        if frame.kind in ("flat", "light"):
            key.update(session=frame.session_id, filter=(frame.filter or "").strip() or None)
        by_key.setdefault(tuple(sorted(key.items(), key=lambda kv: kv[0])), []).append(frame)

    groups: list[FrameGroup] = []
    excluded: list[tuple[Any, str]] = []
    for key_items, members in by_key.items():
        key = dict(key_items)
        kind = key.pop("kind")
        geometry = Counter((f.width, f.height, f.bayer_pattern) for f in members)
        (width, height, pattern), _ = geometry.most_common(1)[0]
        kept = []
        for f in members:
            if (f.width, f.height, f.bayer_pattern) == (width, height, pattern):
                kept.append(f)
            else:
                excluded.append((f, f"{f.width}x{f.height} {f.bayer_pattern or 'mono'} differs "
                                    f"from its group's {width}x{height} {pattern or 'mono'}"))
        key.update(size=f"{width}x{height}", pattern=pattern)
        for run in _split(kept, kind, tol):
            group = FrameGroup(kind, sorted(run, key=lambda f: f.id), dict(key))
            if kind in ("dark", "darkflat", "light"):
                if group.exposure is not None:
                    group.key["exposure"] = round(group.exposure, 3)
                if group.temperature is not None:
                    group.key["temperature"] = round(group.temperature)
            groups.append(group)
    groups.sort(key=lambda g: (g.kind, g.key_text()))
    return groups, excluded
