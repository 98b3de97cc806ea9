"""Gather what a report shows from the library: nights, their lights and masters, stacks, pictures.

``gather(library, ref)`` resolves ``ref`` to a session, a target or a stack (None: the whole
library) and returns a ``ReportData``; ``oscdeep.report.render`` turns it into a page. Previews
are made here from the files: a stack's FITS is downsampled, auto-stretched and encoded as
PNG; a finished picture is read and downsampled. A file that is missing or unreadable gives a
preview of None and a note saying why — a report never fails over a picture.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session as OrmSession

from oscdeep import __version__
from oscdeep.db import catalog
from oscdeep.db.engine import Library
from oscdeep.db.models import Frame, MasterCalibration, Stack, StackFrame, Target, utcnow
from oscdeep.db.models import Session as DbSession
from oscdeep.errors import NotFoundError, OscdeepError
from oscdeep.report.model import (
    FrameRow,
    IntegrationLine,
    KindCount,
    MasterRow,
    ProductSection,
    ReportData,
    SessionSection,
    StackSection,
)
from oscdeep.types import FrameKind

PREVIEW_WIDTH = 800
SCOPES = ("session", "target", "stack")
_KIND_ORDER = {"bias": 0, "darkflat": 1, "dark": 2, "flat": 3}


# ---------------------------------------------------------------- resolving the reference

def resolve(orm: OrmSession, ref: str) -> tuple[str, Any]:
    """('session'|'target'|'stack', row) for ``ref``; 'stack:NAME' etc. says which explicitly.

    Without a prefix: a number is a session id (else a stack id); a name is tried as an exact
    session name, a target name (any case), an exact stack name, then a session name prefix.
    """
    kind, sep, rest = ref.partition(":")
    if sep and kind.strip().lower() in SCOPES and rest.strip():
        kind, rest = kind.strip().lower(), rest.strip()
        if kind == "session":
            return kind, catalog.find_session(orm, rest)
        if kind == "stack":
            return kind, catalog.find_stack(orm, rest)
        target = _target_named(orm, rest)
        if target is None:
            raise NotFoundError(f"no target {rest!r}; targets: {_names(orm, Target)}")
        return kind, target
    ref = ref.strip()
    if ref.isdigit():
        found = orm.get(DbSession, int(ref))
        if found is not None:
            return "session", found
        stack = orm.get(Stack, int(ref))
        if stack is not None:
            return "stack", stack
    session = orm.scalars(select(DbSession).where(DbSession.name == ref)).first()
    if session is not None:
        return "session", session
    target = _target_named(orm, ref)
    if target is not None:
        return "target", target
    stack = orm.scalars(select(Stack).where(Stack.name == ref)).first()
    if stack is not None:
        return "stack", stack
    try:
        return "session", catalog.find_session(orm, ref)
    except NotFoundError as exc:
        if "ambiguous" in str(exc):
            raise
    raise NotFoundError(
        f"no session, target or stack {ref!r}; sessions: {_names(orm, DbSession)}; "
        f"targets: {_names(orm, Target)}; stacks: {_names(orm, Stack)}")


def _target_named(orm: OrmSession, name: str) -> Target | None:
    clean = " ".join(name.split()).lower()
    return orm.scalars(select(Target).where(func.lower(Target.name) == clean)).first()


def _names(orm: OrmSession, model: Any) -> str:
    names = list(orm.scalars(select(model.name).order_by(model.name)))
    return ", ".join(names) if names else "none"


# ---------------------------------------------------------------- sessions

def _frame_row(f: Frame) -> FrameRow:
    return FrameRow(id=f.id, name=Path(f.path).name, time=f.date_obs, fwhm=f.fwhm,
                    roundness=f.roundness, background=f.background, n_stars=f.star_count,
                    status=f.status, reason=f.reason, exposure=f.exposure, noise=f.noise,
                    weight=f.weight)


def _master_row(m: MasterCalibration, used_by: int) -> MasterRow:
    return MasterRow(id=m.id, kind=m.kind, version=m.version, file_name=Path(m.path).name,
                     n_frames=m.n_frames, camera=m.camera, exposure=m.exposure,
                     temperature=m.temperature, gain=m.gain, iso=m.iso, filter=m.filter,
                     median=m.median, noise=m.noise, hot_pixels=m.hot_pixels,
                     created=m.created_at, used_by=used_by, exists=Path(m.path).is_file())


def _masters(orm: OrmSession, session: DbSession, lights: Sequence[Frame]
             ) -> tuple[list[MasterRow], str | None]:
    """Masters the lights were calibrated with (recorded), else the ones matched now."""
    used: Counter[int] = Counter()
    for f in lights:
        used.update(i for i in (f.bias_id, f.dark_id, f.flat_id) if i is not None)
    note = None
    if used:
        note = "Masters recorded on the lights when they were calibrated."
    elif lights:
        from oscdeep.pipeline.matching import match_lights

        try:
            matches = match_lights(orm, lights)
        except OscdeepError as exc:
            matches, note = [], f"Masters could not be matched: {exc}"
        for match in matches:
            for choice in (match.bias, match.dark, match.flat):
                if choice.master is not None:
                    used[choice.master.id] += len(match.group.frames)
        if used:
            note = ("The lights carry no record of their calibration: these are the masters "
                    "the library matches to them now (as stacking does).")
    masters = {m.id: m for m in orm.scalars(select(MasterCalibration).where(or_(
        MasterCalibration.id.in_(list(used)), MasterCalibration.session_id == session.id)))}
    rows = [_master_row(m, used.get(m.id, 0)) for m in masters.values()]
    rows.sort(key=lambda r: (_KIND_ORDER.get(r.kind, 9), r.id))
    return rows, note


def _session_section(orm: OrmSession, session: DbSession, target_id: int | None = None
                     ) -> SessionSection:
    stmt = select(Frame).where(Frame.session_id == session.id, Frame.kind == FrameKind.LIGHT)
    if target_id is not None:
        stmt = stmt.where(Frame.target_id == target_id)
    lights = sorted(orm.scalars(stmt), key=lambda f: (f.date_obs is None,
                                                      f.date_obs or dt.datetime.min, f.id))
    kinds = tuple(KindCount(k.kind, k.total, k.accepted, k.rejected, k.failed, k.exposure_s)
                  for k in catalog.kind_summary(orm, session_id=session.id))
    masters, note = _masters(orm, session, lights)
    return SessionSection(id=session.id, name=session.name,
                          target=session.target.name if session.target else None,
                          night=session.night, kinds=kinds,
                          frames=tuple(_frame_row(f) for f in lights), masters=tuple(masters),
                          masters_note=note, notes=session.notes)


# ---------------------------------------------------------------- stacks and previews

def downsample(image: np.ndarray, width: int = PREVIEW_WIDTH) -> np.ndarray:
    """``image`` shrunk to ``width`` columns by area averaging; NaN pixels do not bleed."""
    import cv2

    h, w = image.shape[:2]
    if w <= width:
        return image
    size = (width, max(1, round(h * width / w)))
    image = np.ascontiguousarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    if finite.all():
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    total = cv2.resize(np.where(finite, image, 0).astype(np.float32), size,
                       interpolation=cv2.INTER_AREA)
    weight = cv2.resize(finite.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan).astype(np.float32)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def stack_preview(path: str | None, width: int = PREVIEW_WIDTH) -> tuple[bytes | None, str | None]:
    """(PNG of the auto-stretched stack, None) or (None, why there is no preview)."""
    import cv2

    from oscdeep.io.export import encode_png
    from oscdeep.io.fits import read_fits_image
    from oscdeep.stretch import auto_stretch

    if not path:
        return None, "the stack has no output file"
    file = Path(path)
    if not file.is_file():
        return None, f"file not found: {file}"
    try:
        image, _ = read_fits_image(file)
        shown = np.asarray(auto_stretch(_as_rgb(downsample(image, width))), dtype=np.float32)
        return encode_png(np.nan_to_num(shown, nan=0.0), bits=8), None
    except (OscdeepError, OSError, ValueError, MemoryError, cv2.error) as exc:
        return None, f"cannot make a preview of {file.name}: {exc}"


def picture_preview(path: str, width: int = PREVIEW_WIDTH) -> tuple[bytes | None, str | None]:
    """(PNG of a finished picture shrunk to ``width``, None) or (None, why not)."""
    import cv2

    from oscdeep.io.export import encode_png

    file = Path(path)
    if not file.is_file():
        return None, f"file not found: {file}"
    try:
        image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if image is None:
            return None, f"cannot read {file.name} as an image"
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
        rgb = image[..., 2::-1] if image.ndim == 3 else image  # BGR(A) -> RGB
        rgb = _as_rgb(np.asarray(rgb, dtype=np.float32) / np.float32(scale))
        small = np.clip(np.nan_to_num(downsample(rgb, width), nan=0.0), 0.0, 1.0)
        return encode_png(small.astype(np.float32), bits=8), None
    except (OscdeepError, OSError, ValueError, MemoryError, cv2.error) as exc:
        return None, f"cannot make a preview of {file.name}: {exc}"


def _stack_section(stack: Stack, width: int) -> StackSection:
    preview, note = stack_preview(stack.output_path, width)
    products = []
    for p in stack.products:
        image, why = picture_preview(p.path, width)
        products.append(ProductSection(id=p.id, file_name=Path(p.path).name, path=p.path,
                                       format=p.format, params=dict(p.params or {}),
                                       stats=dict(p.stats or {}), created=p.created_at,
                                       preview=image, note=why))
    return StackSection(id=stack.id, name=stack.name,
                        target=stack.target.name if stack.target else None,
                        n_frames=stack.n_frames, integration_s=stack.total_exposure,
                        stats=dict(stack.stats or {}), options=dict(stack.options or {}),
                        selection=stack.selection, output_path=stack.output_path,
                        created=stack.finished_at or stack.created_at,
                        wall_time_s=stack.wall_time, preview=preview, note=note,
                        products=tuple(products))


# ---------------------------------------------------------------- the report

def _scope_rows(orm: OrmSession, scope: str, row: Any
                ) -> tuple[list[DbSession], list[Stack], int | None]:
    """Sessions and stacks a report on ``row`` covers, and the target to filter lights by."""
    if scope == "library":
        sessions = list(orm.scalars(select(DbSession).order_by(DbSession.night, DbSession.name)))
        return sessions, list(orm.scalars(select(Stack).order_by(Stack.id))), None
    if scope == "session":
        stacks = orm.scalars(select(Stack).join(StackFrame).join(Frame)
                             .where(Frame.session_id == row.id).distinct().order_by(Stack.id))
        return [row], list(stacks), None
    if scope == "target":
        with_lights = select(Frame.session_id).where(Frame.target_id == row.id)
        sessions = orm.scalars(select(DbSession).where(or_(DbSession.target_id == row.id,
                                                           DbSession.id.in_(with_lights)))
                               .order_by(DbSession.night, DbSession.name))
        stacks = orm.scalars(select(Stack).where(Stack.target_id == row.id).order_by(Stack.id))
        return list(sessions), list(stacks), row.id
    members = select(Frame.session_id).join(StackFrame, StackFrame.frame_id == Frame.id).where(
        StackFrame.stack_id == row.id)
    sessions = orm.scalars(select(DbSession).where(DbSession.id.in_(members))
                           .order_by(DbSession.night, DbSession.name))
    return list(sessions), [row], None


def _title(scope: str, row: Any, n_sessions: int, n_stacks: int) -> tuple[str, str | None]:
    if scope == "library":
        return "oscdeep library report", (f"{n_sessions} session{'s' * (n_sessions != 1)}, "
                                          f"{n_stacks} stack{'s' * (n_stacks != 1)}")
    if scope == "session":
        bits = [f"target {row.target.name}" if row.target else None,
                f"night of {row.night.isoformat()}" if row.night else None]
        return f"Session {row.name}", " · ".join(b for b in bits if b) or None
    if scope == "target":
        return f"Target {row.name}", f"{n_sessions} session{'s' * (n_sessions != 1)}"
    return f"Stack {row.name}", f"target {row.target.name}" if row.target else None


def gather(library: Library, ref: str | None = None, *, preview_width: int = PREVIEW_WIDTH,
           now: dt.datetime | None = None) -> ReportData:
    """What the report on ``ref`` (a session, target or stack; None: everything) shows."""
    with library.session() as orm:
        scope, row = ("library", None) if ref is None else resolve(orm, ref)
        sessions, stacks, target_id = _scope_rows(orm, scope, row)
        session_sections = tuple(_session_section(orm, s, target_id) for s in sessions)
        stack_sections = tuple(_stack_section(s, preview_width) for s in stacks)
        integration = ()
        if scope in ("library", "target"):
            integration = tuple(
                IntegrationLine(i.target, i.filter, i.frames, i.exposure_s, i.sessions)
                for i in catalog.integration_by_target(orm)
                if scope == "library" or i.target == row.name)
        title, subtitle = _title(scope, row, len(sessions), len(stacks))
    return ReportData(title=title, scope=scope, generated=now or utcnow(),
                      software_version=__version__, sessions=session_sections,
                      stacks=stack_sections, integration=integration, subtitle=subtitle,
                      location=library.display_location())


def write_report(library: Library, ref: str | None, path: str | Path) -> int:
    """Gather the report on ``ref`` and write it atomically as one HTML page; its size."""
    from oscdeep.io.atomic import atomic_path
    from oscdeep.report import render

    page = render(gather(library, ref))
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return len(page.encode("utf-8"))


__all__ = ["downsample", "gather", "picture_preview", "resolve", "stack_preview", "write_report"]
