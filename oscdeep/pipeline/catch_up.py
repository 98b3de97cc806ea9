"""Bring a target's lights up to date before stacking.

Lights added since the last stack (a new night of the same target) have no measurements and
no registration yet. :func:`catch_up` builds the masters their calibration frames allow,
analyses those lights only and registers them to the target's reference, so that ``stack
build`` after ``session add`` takes them in, and redoes nothing for the others. A light whose
analysis or registration fails is marked failed and not tried again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, select

from oscdeep.db.engine import Library
from oscdeep.db.models import Frame, Registration, Target
from oscdeep.progress import NullProgress, Progress
from oscdeep.types import FrameStatus


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


def _accepted_lights(target_ids: Collection[int]) -> Any:
    return select(Frame.id).where(Frame.target_id.in_(list(target_ids)), Frame.kind == "light",
                                  Frame.status == FrameStatus.ACCEPTED)


def pending_lights(orm: Any, target_ids: Collection[int]) -> tuple[list[int], list[int]]:
    """``(never analysed, analysed but not registered to their target's reference)``: the
    accepted lights of ``target_ids`` that a stack cannot use yet."""
    unmeasured = orm.scalars(_accepted_lights(target_ids).where(Frame.analyzed_at.is_(None))
                             .order_by(Frame.id)).all()
    registered = exists().where(Registration.frame_id == Frame.id,
                                Registration.reference_id == Target.reference_frame_id)
    unregistered = orm.scalars(
        _accepted_lights(target_ids).join(Target, Frame.target_id == Target.id)
        .where(Frame.analyzed_at.is_not(None), ~registered).order_by(Frame.id)).all()
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
        lights = orm.scalars(_accepted_lights(target_ids).where(
            Frame.analyzed_at.is_not(None)).order_by(Frame.id)).all()
    registration = register_frames(library, list(lights), progress=progress)
    for group in registration.groups:
        report.registered += len(group.registered)
        report.failed += [(frame_id, f"registration: {why}")
                          for frame_id, _, why in group.failed]
    return report
