"""Queries and small writes on the library that more than one command needs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session as OrmSession

from oscdeep.db.models import Frame, Session, Stack, Target
from oscdeep.errors import NotFoundError
from oscdeep.types import FrameKind, FrameStatus


def target_lights(target_ids: Iterable[int], *, accepted_only: bool = True) -> Select[tuple[int]]:
    """``SELECT`` of the ids of the lights of ``target_ids``, in time order: the accepted
    ones, or (``accepted_only=False``) all but those the user or the auto-reject rejected."""
    stmt = select(Frame.id).where(Frame.kind == FrameKind.LIGHT,
                                  Frame.target_id.in_(list(target_ids)))
    if accepted_only:
        stmt = stmt.where(Frame.status == FrameStatus.ACCEPTED)
    else:
        stmt = stmt.where(Frame.status != FrameStatus.REJECTED)
    return stmt.order_by(Frame.date_obs, Frame.id)


def get_or_create_target(orm: OrmSession, name: str) -> Target:
    """The target called ``name`` (case-insensitive), created if new."""
    clean = " ".join(name.split())
    found = orm.scalars(select(Target).where(func.lower(Target.name) == clean.lower())).first()
    if found is not None:
        return found
    target = Target(name=clean)
    orm.add(target)
    orm.flush()
    return target


def get_or_create_session(
    orm: OrmSession, name: str, *, target: Target | None, night: dt.date | None, source: str | None
) -> tuple[Session, bool]:
    """The session called ``name``, created if new; returns (session, created)."""
    found = orm.scalars(select(Session).where(Session.name == name)).first()
    if found is not None:
        if found.target is None and target is not None:
            found.target = target
        return found, False
    session = Session(name=name, target=target, night=night, source_path=source)
    orm.add(session)
    orm.flush()
    return session, True


def find_session(orm: OrmSession, ref: str) -> Session:
    """A session by id or exact name (then case-insensitive prefix), or NotFoundError."""
    if ref.isdigit():
        found = orm.get(Session, int(ref))
        if found is not None:
            return found
    found = orm.scalars(select(Session).where(Session.name == ref)).first()
    if found is not None:
        return found
    like = orm.scalars(select(Session).where(func.lower(Session.name).startswith(ref.lower()))).all()
    if len(like) == 1:
        return like[0]
    names = orm.scalars(select(Session.name).order_by(Session.name)).all()
    if len(like) > 1:
        raise NotFoundError(f"session {ref!r} is ambiguous: " + ", ".join(s.name for s in like))
    known = ", ".join(names) if names else "none yet (add one with `oscdeep session add PATH`)"
    raise NotFoundError(f"no session {ref!r}; sessions: {known}")


def find_stack(orm: OrmSession, ref: str) -> Stack:
    """A stack by id or exact name, or NotFoundError."""
    found = orm.get(Stack, int(ref)) if ref.isdigit() else orm.scalars(
        select(Stack).where(Stack.name == ref)).first()
    if found is None:
        raise NotFoundError(f"no stack {ref!r}; `oscdeep stack list` shows them")
    return found


def frames_by(orm: OrmSession, attribute: str, values: list[str]) -> dict[str, Frame]:
    """Frames whose ``attribute`` (``content_hash`` or ``path``) is one of ``values``, by value."""
    column = getattr(Frame, attribute)
    out: dict[str, Frame] = {}
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        for frame in orm.scalars(select(Frame).where(column.in_(chunk))):
            out[getattr(frame, attribute)] = frame
    return out


@dataclass(frozen=True)
class KindSummary:
    """Frames of one kind in a group: counts by status and integration time."""

    kind: str
    total: int
    accepted: int
    rejected: int
    failed: int
    exposure_s: float


def kind_summary(orm: OrmSession, *, session_id: int | None = None) -> list[KindSummary]:
    """Counts and integration time per frame kind, for one session or the whole library."""
    stmt = select(
        Frame.kind,
        func.count(),
        func.sum(case((Frame.status == FrameStatus.ACCEPTED, 1), else_=0)),
        func.sum(case((Frame.status == FrameStatus.REJECTED, 1), else_=0)),
        func.sum(case((Frame.status == FrameStatus.FAILED, 1), else_=0)),
        func.coalesce(func.sum(Frame.exposure), 0.0),
    ).group_by(Frame.kind)
    if session_id is not None:
        stmt = stmt.where(Frame.session_id == session_id)
    order = {k.value: i for i, k in enumerate(FrameKind)}
    rows = [KindSummary(k, n, a or 0, r or 0, f or 0, float(e or 0.0)) for k, n, a, r, f, e in orm.execute(stmt)]
    return sorted(rows, key=lambda s: order.get(s.kind, 99))


@dataclass(frozen=True)
class IntegrationRow:
    """Accepted light integration for one target and filter."""

    target: str
    filter: str
    frames: int
    exposure_s: float
    sessions: int


def integration_by_target(orm: OrmSession) -> list[IntegrationRow]:
    """Accepted lights and total integration time per target and filter."""
    stmt = (
        select(
            func.coalesce(Target.name, "(no target)"),
            func.coalesce(Frame.filter, ""),
            func.count(),
            func.coalesce(func.sum(Frame.exposure), 0.0),
            func.count(func.distinct(Frame.session_id)),
        )
        .select_from(Frame)
        .outerjoin(Target, Frame.target_id == Target.id)
        .where(Frame.kind == FrameKind.LIGHT, Frame.status == FrameStatus.ACCEPTED)
        .group_by(Target.name, Frame.filter)
        .order_by(Target.name, Frame.filter)
    )
    return [IntegrationRow(t, f, n, float(e), s) for t, f, n, e, s in orm.execute(stmt)]


@dataclass(frozen=True)
class MetricSummary:
    """Median, minimum and maximum of one quality metric over measured lights."""

    name: str
    unit: str
    n: int
    median: float | None
    minimum: float | None
    maximum: float | None


def quality_summary(orm: OrmSession, *, session_id: int | None = None
                    ) -> tuple[list[MetricSummary], list[tuple[str, str, int]]]:
    """Per-metric statistics of the measured lights, and (status, reason, count) rows."""
    import statistics

    stmt = select(Frame).where(Frame.kind == FrameKind.LIGHT)
    if session_id is not None:
        stmt = stmt.where(Frame.session_id == session_id)
    lights = list(orm.scalars(stmt))
    metrics = []
    for name, attr, unit in (("FWHM", "fwhm", "px"), ("roundness", "roundness", ""),
                             ("background", "background", "ADU"), ("noise", "noise", "ADU"),
                             ("stars", "star_count", ""), ("weight", "weight", "")):
        values = [getattr(f, attr) for f in lights if getattr(f, attr) is not None]
        metrics.append(MetricSummary(name, unit, len(values),
                                     statistics.median(values) if values else None,
                                     min(values) if values else None,
                                     max(values) if values else None))
    reasons: dict[tuple[str, str], int] = {}
    for f in lights:
        key = (f.status, f.reason or "")
        reasons[key] = reasons.get(key, 0) + 1
    rows = sorted(((st, why, n) for (st, why), n in reasons.items()),
                  key=lambda r: (r[0] != "accepted", -r[2]))
    return metrics, rows
