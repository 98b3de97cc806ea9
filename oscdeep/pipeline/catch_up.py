"""Bring a target's lights up to date before stacking, and select the lights to stack.

Lights added since the last stack (a new night of the same target) have no measurements and
no registration yet. :func:`catch_up` builds the masters their calibration frames allow,
analyses those lights only and registers them to the target's reference, so that ``stack
build`` after ``session add`` takes them in, and redoes nothing for the others. A light whose
analysis or registration fails is marked failed and not tried again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, select

from oscdeep.db import catalog
from oscdeep.db.engine import Library
from oscdeep.db.models import Frame, Registration, Target
from oscdeep.progress import NullProgress, Progress
from oscdeep.query import Query, select_frames
from oscdeep.types import FrameKind, FrameStatus


@dataclass
class CatchUpReport:
    """What :func:`catch_up` did (all zero when the lights were up to date)."""

    masters_built: int = 0
    analysed: int = 0
    registered: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    """(frame id, why) of the lights that could not be measured or registered."""
    warnings: list[str] = field(default_factory=list)

    @property
    def did_something(self) -> bool:
        return bool(self.masters_built or self.analysed or self.registered or self.failed)


@dataclass
class Selection:
    """The accepted lights a query selects, after :func:`catch_up` of their targets."""

    frame_ids: list[int]
    target_names: list[str]
    caught_up: CatchUpReport | None = None
    """None when the catch-up was not asked for."""


def pending_lights(orm: Any, target_ids: Collection[int]) -> tuple[list[int], list[int]]:
    """``(never analysed, analysed but not registered to their target's reference)``: the
    accepted lights of ``target_ids`` that a stack cannot use yet."""
    lights = catalog.target_lights(target_ids)
    unmeasured = orm.scalars(lights.where(Frame.analyzed_at.is_(None))).all()
    registered = exists().where(Registration.frame_id == Frame.id,
                                Registration.reference_id == Target.reference_frame_id)
    unregistered = orm.scalars(lights.join(Target, Frame.target_id == Target.id)
                               .where(Frame.analyzed_at.is_not(None), ~registered)).all()
    return list(unmeasured), list(unregistered)


def catch_up(library: Library, target_ids: Collection[int], *,
             progress: Progress | None = None) -> CatchUpReport:
    """Masters, measurements and registrations that the accepted lights of ``target_ids``
    still lack (nothing is loaded or redone when they lack none)."""
    progress = progress or NullProgress()
    report = CatchUpReport()
    with library.session() as orm:
        unmeasured, unregistered = pending_lights(orm, target_ids)
    if not unmeasured and not unregistered:
        return report
    if unmeasured:
        from oscdeep.pipeline.masters import build_masters
        from oscdeep.pipeline.measure import analyze_frames

        report.masters_built = len(build_masters(library, progress=progress).built)
        analysis = analyze_frames(library, unmeasured, progress=progress)
        report.warnings.extend(analysis.warnings)
        report.analysed = len(analysis.measured)
        report.failed += [(o.frame_id, o.reason or o.error or "not measurable")
                          for o in analysis.analyzed if o.reason or o.error]
    from oscdeep.pipeline.align import register_frames

    with library.session() as orm:
        lights = orm.scalars(catalog.target_lights(target_ids).where(
            Frame.analyzed_at.is_not(None))).all()
    registration = register_frames(library, list(lights), progress=progress)
    for group in registration.groups:
        report.registered += len(group.registered)
        report.failed += [(frame_id, f"registration: {why}")
                          for frame_id, _, why in group.failed]
    return report


def select_lights(library: Library, query: Query, *, targets: Sequence[str] = (),
                  catch_up_first: bool = True, progress: Progress | None = None) -> Selection:
    """The accepted lights ``query`` selects. With ``catch_up_first``, the targets of the
    lights it selects and the ``targets`` named (whose new lights may match only once they
    are measured) are caught up first, and the query is evaluated again if that did
    anything."""

    def evaluate() -> tuple[list[int], list[str], set[int]]:
        with library.session() as orm:
            stmt = select_frames(query).where(Frame.kind == FrameKind.LIGHT,
                                              Frame.status == FrameStatus.ACCEPTED)
            frames = list(orm.scalars(stmt).unique())
            named = set(orm.scalars(select(Target.id).where(Target.name.in_(list(targets))))
                        ) if targets else set()
            return ([f.id for f in frames], sorted({f.target.name for f in frames if f.target}),
                    {f.target_id for f in frames if f.target_id is not None} | named)

    ids, names, target_ids = evaluate()
    if not catch_up_first:
        return Selection(ids, names)
    caught = catch_up(library, target_ids, progress=progress) if target_ids else CatchUpReport()
    if caught.did_something:
        ids, names, _ = evaluate()
    return Selection(ids, names, caught)
