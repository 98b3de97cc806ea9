"""``oscdeep run``: ingest → masters → analysis → outlier rejection → registration → stack →
finished picture.

Every step is the same one the separate commands run, and each skips what is already done,
so running again after an interruption (or with a new night of the same target) does only
the missing work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from oscdeep.db.engine import Library
from oscdeep.db.models import Frame, Target
from oscdeep.pipeline.align import RegisterReport, register_frames
from oscdeep.pipeline.autoreject import find_outliers
from oscdeep.pipeline.build import StackOptions, StackReport, build_stack, unique_stack_name
from oscdeep.pipeline.ingest import IngestOptions, IngestReport, ingest
from oscdeep.pipeline.masters import MasterBuildReport, build_masters
from oscdeep.pipeline.measure import AnalysisReport, analyze_frames
from oscdeep.progress import NullProgress, Progress
from oscdeep.types import FrameStatus

if TYPE_CHECKING:  # the finishing modules are imported only when a picture is made
    from oscdeep.finish import FinishOptions
    from oscdeep.pipeline.post import PostReport


@dataclass
class RunReport:
    """What each step of a run did."""

    ingest: IngestReport | None = None
    masters: MasterBuildReport | None = None
    analysis: AnalysisReport | None = None
    rejected: list[tuple[int, str]] = field(default_factory=list)
    registration: RegisterReport | None = None
    stacks: list[StackReport] = field(default_factory=list)
    pictures: list[PostReport] = field(default_factory=list)


def _lights(library: Library, target_ids: set[int], *, accepted_only: bool) -> list[int]:
    with library.session() as orm:
        stmt = select(Frame.id).where(Frame.kind == "light", Frame.target_id.in_(target_ids))
        if accepted_only:
            stmt = stmt.where(Frame.status == FrameStatus.ACCEPTED)
        else:
            stmt = stmt.where(Frame.status != FrameStatus.REJECTED)
        return list(orm.scalars(stmt.order_by(Frame.date_obs)))


def run_pipeline(library: Library, paths: Sequence[str | os.PathLike[str]], *,
                 output: str | Path, target: str | None = None, name: str | None = None,
                 stack_options: StackOptions = StackOptions(),
                 finish: FinishOptions | None = None, picture: str | Path | None = None,
                 progress: Progress | None = None) -> RunReport:
    """Process the nights under ``paths`` into one stack per target (``output`` for the first;
    further targets get ``<output stem>_<target>.fits`` beside it), each finished into a
    picture with ``finish`` (``picture`` for the first, else ``<stack stem>.png``; no
    picture when ``finish`` is None)."""
    progress = progress or NullProgress()
    report = RunReport()
    report.ingest = ingest(library, paths, IngestOptions(target=target), progress=progress)
    with library.session() as orm:
        session_ids = [sid for sid, _, _ in report.ingest.sessions]
        if report.ingest.session_id is not None and not session_ids:
            session_ids = [report.ingest.session_id]
        target_ids = set(orm.scalars(select(Frame.target_id).where(
            Frame.session_id.in_(session_ids), Frame.kind == "light",
            Frame.target_id.is_not(None))))
        names = {t.id: t.name for t in orm.scalars(select(Target).where(
            Target.id.in_(target_ids)))}
    report.masters = build_masters(library, progress=progress)
    report.analysis = analyze_frames(library, _lights(library, target_ids, accepted_only=False),
                                     progress=progress)
    with library.session() as orm:
        lights = orm.scalars(select(Frame).where(
            Frame.id.in_(_lights(library, target_ids, accepted_only=True))))
        for frame, why in find_outliers(lights):
            frame.status, frame.reason = FrameStatus.REJECTED, why
            report.rejected.append((frame.id, why))
    report.registration = register_frames(
        library, _lights(library, target_ids, accepted_only=True), progress=progress)
    out = Path(output)
    for i, target_id in enumerate(sorted(target_ids)):
        ids = _lights(library, {target_id}, accepted_only=True)
        if not ids:
            continue
        path = out if i == 0 else out.with_name(f"{out.stem}_{names[target_id]}{out.suffix}")
        stack_name = unique_stack_name(library, name if i == 0 and name else None,
                                       names[target_id])
        built = build_stack(library, ids, name=stack_name, output=path, options=stack_options,
                            selection=f"target_id:{target_id}", progress=progress)
        report.stacks.append(built)
        if finish is not None and built.stack_id is not None:
            from oscdeep.pipeline.post import default_picture_path, post_stack

            where = Path(picture) if i == 0 and picture else default_picture_path(path)
            report.pictures.append(post_stack(library, str(built.stack_id), output=where,
                                              options=finish, progress=progress))
    return report
