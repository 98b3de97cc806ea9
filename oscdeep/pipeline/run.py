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

from oscdeep.db import catalog
from oscdeep.db.engine import Library
from oscdeep.db.models import Frame, Target
from oscdeep.pipeline.forked import step_in_child
from oscdeep.pipeline.stack_options import StackOptions
from oscdeep.progress import NullProgress, Progress
from oscdeep.types import FrameStatus

# The processing modules are imported inside run_pipeline, while its first step runs.
if TYPE_CHECKING:
    from oscdeep.finish import FinishOptions
    from oscdeep.pipeline.align import RegisterReport
    from oscdeep.pipeline.build import StackReport
    from oscdeep.pipeline.ingest import IngestReport
    from oscdeep.pipeline.masters import MasterBuildReport
    from oscdeep.pipeline.measure import AnalysisReport
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
        return list(orm.scalars(catalog.target_lights(target_ids, accepted_only=accepted_only)))


def _ingest_and_masters(library: Library, *, progress: Progress,
                        paths: Sequence[str | os.PathLike[str]], target: str | None
                        ) -> tuple[IngestReport, MasterBuildReport]:
    """The first step of a run: add the files, build the masters they allow. It needs
    little of the processing code, so it runs in a forked child while the rest loads."""
    from oscdeep.pipeline.ingest import IngestOptions, ingest
    from oscdeep.pipeline.masters import build_masters

    options = IngestOptions(target=target, fallback_target=_folder_name(paths))
    added = ingest(library, paths, options, progress=progress)
    return added, build_masters(library, progress=progress)


def _folder_name(paths: Sequence[str | os.PathLike[str]]) -> str | None:
    """The name of the first folder given (a file's own folder): the target of lights that
    name none, so that a night of camera raw files is stacked too."""
    if not paths:
        return None
    first = Path(paths[0]).resolve()
    return (first if first.is_dir() else first.parent).name or None


def _load_processing(options: StackOptions) -> None:
    """Import analysis, registration and stacking (their worker processes are forked from
    this one and inherit them) and load the integration kernel."""
    import oscdeep.pipeline.align  # noqa: F401
    import oscdeep.pipeline.autoreject  # noqa: F401
    import oscdeep.pipeline.build  # noqa: F401
    import oscdeep.pipeline.measure  # noqa: F401
    from oscdeep.debayer import warm_up as warm_up_debayer
    from oscdeep.rejection import warm_up
    from oscdeep.stars import warm_up as warm_up_stars

    warm_up(options.rejection)
    warm_up_debayer(options.debayer)
    warm_up_stars()


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
    with step_in_child(_ingest_and_masters, library, progress=progress, paths=list(paths),
                       target=target) as first_step:
        _load_processing(stack_options)
    report.ingest, report.masters = first_step.result()
    from oscdeep.pipeline.align import register_frames
    from oscdeep.pipeline.autoreject import find_outliers
    from oscdeep.pipeline.build import build_stack, unique_stack_name
    from oscdeep.pipeline.measure import analyze_frames

    with library.session() as orm:
        session_ids = [sid for sid, _, _ in report.ingest.sessions]
        if report.ingest.session_id is not None and not session_ids:
            session_ids = [report.ingest.session_id]
        target_ids = set(orm.scalars(select(Frame.target_id).where(
            Frame.session_id.in_(session_ids), Frame.kind == "light",
            Frame.target_id.is_not(None))))
        names = {t.id: t.name for t in orm.scalars(select(Target).where(
            Target.id.in_(target_ids)))}
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
