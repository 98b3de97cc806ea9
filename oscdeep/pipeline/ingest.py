"""Ingest: scan folders, read headers, identify files by content, record frames in a session.

Files are identified by a SHA-256 of their bytes, so adding the same night twice adds nothing and
a moved file is re-linked to its existing row. Header reads only: no image is decoded here.
Writes happen in transactions of at most ``CHUNK`` frames, so an interrupted ingest leaves
whole chunks recorded and a rerun adds only the rest. User files are only ever read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session as OrmSession

from oscdeep.db import catalog
from oscdeep.db.engine import Library
from oscdeep.db.models import Frame
from oscdeep.errors import FrameReadError
from oscdeep.io.headers import kind_from_path, read_frame_meta
from oscdeep.io.meta import FrameMeta
from oscdeep.io.scan import scan_paths
from oscdeep.progress import NullProgress, Progress
from oscdeep.types import FrameKind

CHUNK = 100
UNKNOWN_KIND = ("frame type unknown: no IMAGETYP/FRAME header and no lights/darks/flats/bias "
                "folder or file name; move it into such a folder, or add it with "
                "`oscdeep session add --kind KIND`")


@dataclass(frozen=True)
class IngestOptions:
    """What the user told ``session add``: all optional."""

    target: str | None = None
    kind: FrameKind | None = None
    session_name: str | None = None
    fallback_target: str | None = None
    """Target of the lights whose header names none (camera raw files), when ``target`` is
    not given: ``run`` passes the name of the folder it was given."""


@dataclass
class Skipped:
    """A file that was not ingested, and why."""

    path: Path
    cause: str


@dataclass
class IngestReport:
    """What an ingest did, for the summary table and ``--json``."""

    session_id: int | None = None
    session_name: str | None = None
    session_created: bool = False
    target: str | None = None
    sessions: list[tuple[int, str, bool]] = field(default_factory=list)
    scanned: int = 0
    added: list[tuple[int, str, str]] = field(default_factory=list)
    unchanged: int = 0
    relinked: list[tuple[int, str, str]] = field(default_factory=list)
    duplicates: list[Skipped] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    ignored: int = 0
    warnings: list[str] = field(default_factory=list)

    def added_by_kind(self) -> dict[str, int]:
        return dict(Counter(kind for _, _, kind in self.added))


@dataclass
class _Candidate:
    path: Path
    meta: FrameMeta
    kind: FrameKind | None
    kind_source: str
    digest: str
    size: int


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _read_one(path: Path, fallback: FrameKind | None) -> _Candidate | Skipped:
    try:
        size = path.stat().st_size
        if size == 0:
            return Skipped(path, "empty file (0 bytes)")
        meta = read_frame_meta(path)
        if meta.kind is not None:
            kind, source = meta.kind, "header"
        elif (by_name := kind_from_path(path)) is not None:
            kind, source = by_name, "path"
        elif fallback is not None:
            kind, source = fallback, "option"
        else:
            kind, source = None, "unknown"
        return _Candidate(path, meta, kind, source, file_digest(path), size)
    except FrameReadError as exc:
        return Skipped(path, exc.cause)
    except OSError as exc:
        return Skipped(path, f"cannot read file ({exc.strerror or exc})")


def night_of(when: dt.datetime, longitude: float | None = None) -> dt.date:
    """Calendar date of the evening a night started on (local solar time when longitude is known)."""
    local = when + dt.timedelta(hours=(longitude or 0.0) / 15.0)
    return (local - dt.timedelta(hours=12)).date()


def _longitude(meta: FrameMeta) -> float | None:
    for key in ("SITELONG", "LONG-OBS", "OBSLONG"):
        value = meta.header.get(key)
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _default_target(cands: list[_Candidate]) -> str | None:
    objects = Counter(c.meta.object.strip() for c in cands
                      if c.kind == FrameKind.LIGHT and c.meta.object and c.meta.object.strip())
    return objects.most_common(1)[0][0] if objects else None


def _frame_row(c: _Candidate, session_id: int, target_id: int | None) -> Frame:
    m = c.meta
    return Frame(
        session_id=session_id,
        target_id=target_id if c.kind == FrameKind.LIGHT else None,
        path=str(c.path),
        content_hash=c.digest,
        file_size=c.size,
        file_format=str(m.file_format),
        kind=str(c.kind),
        kind_source=c.kind_source,
        camera_make=m.camera_make,
        camera_model=m.camera_model,
        instrument=m.instrument,
        telescope=m.telescope,
        width=m.width,
        height=m.height,
        bayer_pattern=m.bayer_pattern,
        row_order=m.row_order,
        exposure=m.exposure,
        iso=m.iso,
        gain=m.gain,
        offset=m.offset,
        temperature=m.temperature,
        set_temperature=m.set_temperature,
        xbinning=m.xbinning,
        ybinning=m.ybinning,
        filter=m.filter,
        object=m.object,
        date_obs=m.date_obs,
        black_level=m.black_level,
        white_level=m.white_level,
        focal_length=m.focal_length,
        pixel_size=m.pixel_size,
        header=m.header,
    )


def _check_consistency(cands: list[_Candidate], report: IngestReport) -> list[_Candidate]:
    """Drop frames whose sensor geometry or pattern disagrees with the rest of their kind."""
    kept: list[_Candidate] = []
    by_kind: dict[FrameKind | None, list[_Candidate]] = {}
    for c in cands:
        by_kind.setdefault(c.kind, []).append(c)
    for kind, group in by_kind.items():
        shapes = Counter((c.meta.width, c.meta.height) for c in group)
        (common, count), = shapes.most_common(1)
        for c in group:
            shape = (c.meta.width, c.meta.height)
            if shape != common and count > len(group) / 2:
                report.skipped.append(Skipped(
                    c.path, f"size {shape[0]}x{shape[1]} differs from the other {kind} frames "
                            f"({common[0]}x{common[1]})"))
            else:
                kept.append(c)
    return kept


def ingest(
    library: Library,
    paths: Sequence[str | os.PathLike[str]],
    options: IngestOptions = IngestOptions(),
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Add the frames under ``paths`` to one session of the library and report what happened."""
    progress = progress or NullProgress()
    roots = [Path(p).expanduser() for p in paths]
    listing = scan_paths(roots)
    report = IngestReport(scanned=len(listing.frames), ignored=len(listing.ignored))
    report.skipped.extend(Skipped(p, "unsupported file type") for p in listing.unsupported)

    workers = workers or min(4, os.cpu_count() or 1)
    progress.begin("Reading headers", len(listing.frames))
    results: list[_Candidate | Skipped] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(lambda p: _read_one(p, options.kind), listing.frames):
            results.append(result)
            progress.advance()
    progress.end()

    cands = [r for r in results if isinstance(r, _Candidate)]
    report.skipped.extend(r for r in results if isinstance(r, Skipped))
    cands = _check_consistency(cands, report)
    for c in cands:
        if c.meta.kind is not None and (by_name := kind_from_path(c.path)) and by_name != c.meta.kind:
            report.warnings.append(f"{c.path}: header says {c.meta.kind}, folder says {by_name}; "
                                   "using the header")

    progress.begin("Recording frames", len(cands))
    # One unit of work per chunk: sessions, targets and re-links commit with the first chunk,
    # so an interruption leaves either nothing or whole chunks, never a half-recorded frame.
    with library.sessionmaker() as orm:
        try:
            new, relinks = _sort_out(orm, cands, report)
            if not new and not relinks:
                _describe_existing_session(orm, cands, report)
                orm.rollback()
                return report
            for frame_id, new_path in relinks:
                frame = orm.get(Frame, frame_id)
                assert frame is not None
                report.relinked.append((frame_id, frame.path, str(new_path)))
                frame.path = str(new_path)
            progress.advance(len(cands) - len(new))
            rows_todo: list[tuple[_Candidate, int, int | None]] = []
            groups = _split_sessions(new, options, roots)
            for group in groups:
                target = (catalog.get_or_create_target(orm, group.target)
                          if group.target else None)
                session, created = catalog.get_or_create_session(
                    orm, group.name, target=target, night=group.night,
                    source=str(roots[0].resolve()))
                report.sessions.append((session.id, session.name, created))
                for c in group.frames:
                    own = (options.target or _object_of(c) or group.target
                           or options.fallback_target)
                    light_target = (catalog.get_or_create_target(orm, own)
                                    if own and c.kind == FrameKind.LIGHT else None)
                    rows_todo.append((c, session.id, light_target.id if light_target else None))
            if report.sessions:
                report.session_id, report.session_name, report.session_created = report.sessions[0]
                report.target = options.target or next((g.target for g in groups if g.target), None)
            for start in range(0, max(len(rows_todo), 1), CHUNK):
                rows = [_frame_row(c, sid, tid) for c, sid, tid in rows_todo[start:start + CHUNK]]
                orm.add_all(rows)
                orm.flush()
                orm.commit()
                report.added.extend((row.id, row.path, row.kind) for row in rows)
                progress.advance(len(rows))
        except BaseException:
            orm.rollback()
            raise
        finally:
            progress.end()
    return report


@dataclass
class _SessionGroup:
    name: str
    night: dt.date | None
    target: str | None
    frames: list[_Candidate]


def _object_of(c: _Candidate) -> str | None:
    return " ".join(c.meta.object.split()) if c.meta.object and c.meta.object.strip() else None


def _night_of_candidate(c: _Candidate) -> dt.date | None:
    return night_of(c.meta.date_obs, _longitude(c.meta)) if c.meta.date_obs else None


def _split_sessions(new: list[_Candidate], options: IngestOptions, roots: Sequence[Path]
                    ) -> list[_SessionGroup]:
    """New frames grouped into sessions: one per night, or all in the session the user named.

    Frames without a date join the night with the most frames.
    """
    if not new:
        return []
    if options.session_name:
        nights = sorted({n for c in new if (n := _night_of_candidate(c))})
        target = options.target or _default_target(new)
        return [_SessionGroup(options.session_name, nights[0] if nights else None, target, new)]
    by_night: dict[dt.date | None, list[_Candidate]] = {}
    for c in new:
        by_night.setdefault(_night_of_candidate(c), []).append(c)
    undated = by_night.pop(None, [])
    if not by_night:
        by_night[None] = undated
    elif undated:
        biggest = max(by_night, key=lambda n: len(by_night[n]))  # type: ignore[arg-type]
        by_night[biggest].extend(undated)
    groups = []
    for night, frames in sorted(by_night.items(), key=lambda kv: kv[0] or dt.date.min):
        target = options.target or _default_target(frames)
        parts = [p for p in (night.isoformat() if night else None, target) if p]
        name = " ".join(parts) if parts else roots[0].resolve().name
        groups.append(_SessionGroup(name, night, target, frames))
    return groups


def _sort_out(orm: OrmSession, cands: list[_Candidate], report: IngestReport
              ) -> tuple[list[_Candidate], list[tuple[int, Path]]]:
    """Split candidates into new frames and moved ones; count unchanged, duplicates, changed."""
    existing_hash = catalog.frames_by(orm, "content_hash", [c.digest for c in cands])
    existing_path = catalog.frames_by(orm, "path", [str(c.path) for c in cands])
    new: list[_Candidate] = []
    relinks: list[tuple[int, Path]] = []
    seen: dict[str, Path] = {}
    for c in cands:
        if c.digest in seen:
            report.duplicates.append(Skipped(c.path, f"same content as {seen[c.digest]}"))
            continue
        seen[c.digest] = c.path
        old = existing_hash.get(c.digest)
        if old is not None:
            if old.path == str(c.path):
                report.unchanged += 1
            elif not Path(old.path).exists():
                relinks.append((old.id, c.path))
            else:
                report.duplicates.append(
                    Skipped(c.path, f"same content as frame {old.id} ({old.path})"))
            continue
        if c.kind is None:
            report.skipped.append(Skipped(c.path, UNKNOWN_KIND))
            continue
        if str(c.path) in existing_path:
            report.skipped.append(Skipped(
                c.path, f"content changed since it was added as frame "
                        f"{existing_path[str(c.path)].id}; not re-ingested"))
            continue
        new.append(c)
    return new, relinks


def _describe_existing_session(orm: OrmSession, cands: list[_Candidate],
                                report: IngestReport) -> None:
    """When nothing is new, name the session the files already belong to."""
    if not cands:
        return
    frames = catalog.frames_by(orm, "content_hash", [cands[0].digest])
    frame = frames.get(cands[0].digest)
    if frame is not None:
        report.session_id, report.session_name = frame.session_id, frame.session.name
