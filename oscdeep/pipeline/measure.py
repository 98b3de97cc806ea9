"""``frames analyze``: calibrate each light, find and measure its stars, store the results.

Work is spread over processes; each worker loads the masters of a light group once. Results
are committed frame by frame, so an interrupted run keeps what it finished and the next run
skips it. A light's analysis is stale when the masters that would calibrate it change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from oscdeep.config import MatchTolerances
from oscdeep.db.engine import Library
# Imported here, not in the worker: pool processes are forked and inherit these modules.
from oscdeep.debayer import LUMINANCE_KERNEL, cfa_luminance
from oscdeep.errors import OscdeepError
from oscdeep.stars import frame_quality
from oscdeep.stars import warm_up as warm_up_stars
from oscdeep.db.models import Frame, utcnow
from oscdeep.pipeline.calibration import (
    LightJob, MasterSpec, calibrate_job, masters_for_workers, pedestal_of, record_masters)
from oscdeep.pipeline.matching import match_lights
from oscdeep.progress import NullProgress, Progress
from oscdeep.runtime import reuse_freed_memory, single_threaded_workers
from oscdeep.types import FrameStatus

ANALYSIS_VERSION = "2"
"""Bumped when measurements change meaning, so older analyses count as stale."""


def analysis_key(spec: MasterSpec, threshold: float) -> str:
    """What a light's measurements depend on: its masters, the detection threshold, the code."""
    return f"{spec.key}:v{ANALYSIS_VERSION}:t{threshold:g}"


@dataclass(frozen=True)
class AnalysisOptions:
    """How lights are measured."""

    threshold: float = 5.0
    workers: int | None = None
    force: bool = False
    tolerances: MatchTolerances = field(default_factory=MatchTolerances)


@dataclass(frozen=True)
class _Task(LightJob):
    threshold: float


@dataclass
class FrameOutcome:
    """Measurements of one light, or why it could not be measured."""

    frame_id: int
    path: str
    metrics: dict[str, Any] = field(default_factory=dict)
    catalog: bytes | None = None
    reason: str | None = None
    error: str | None = None
    masters: dict[str, int] = field(default_factory=dict)


@dataclass
class AnalysisReport:
    """What ``analyze_frames`` did."""

    analyzed: list[FrameOutcome] = field(default_factory=list)
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def measured(self) -> list[FrameOutcome]:
        return [o for o in self.analyzed if o.reason is None and o.error is None]

    @property
    def unmeasurable(self) -> list[FrameOutcome]:
        return [o for o in self.analyzed if o.reason is not None or o.error is not None]


def _analyse(task: _Task) -> FrameOutcome:
    """Worker: calibrate one light and measure it (masters cached per process)."""
    outcome = FrameOutcome(task.frame_id, task.path, masters=dict(task.spec.ids))
    try:
        calibrated = calibrate_job(task)
        if task.spec.pattern:
            lum = cfa_luminance(calibrated.image, task.spec.pattern)
            quality = frame_quality(lum, threshold=task.threshold, kernel=LUMINANCE_KERNEL)
        else:
            quality = frame_quality(calibrated.image, threshold=task.threshold)
    except (OscdeepError, OSError, ValueError, MemoryError) as exc:
        outcome.error = f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, OscdeepError) \
            else str(exc)
        return outcome
    outcome.metrics = {
        "fwhm": quality.fwhm, "roundness": quality.roundness,
        "eccentricity": quality.eccentricity, "star_count": quality.star_count,
        "background": quality.background, "noise": quality.noise, "snr": quality.snr,
        "weight": quality.weight,
    }
    outcome.reason = quality.reason
    outcome.catalog = quality.catalog.to_bytes() if quality.catalog is not None else None
    return outcome


def _tasks(library: Library, frame_ids: Sequence[int], options: AnalysisOptions,
           report: AnalysisReport) -> list[_Task]:
    tasks = []
    with library.session() as orm:
        lights = [f for i in frame_ids if (f := orm.get(Frame, i)) is not None]
        for match in match_lights(orm, lights, options.tolerances):
            report.warnings.extend(match.warnings())
            spec = MasterSpec.of(match)
            key = analysis_key(spec, options.threshold)
            for f in match.group.frames:
                if not options.force and f.analyzed_at is not None and f.analysis_key == key:
                    report.skipped += 1
                    continue
                tasks.append(_Task(f.id, f.path, f.exposure, f.black_level, pedestal_of(f), spec,
                                   options.threshold))
    return tasks


def _store(library: Library, outcome: FrameOutcome, key: str) -> None:
    with library.session() as orm:
        frame = orm.get(Frame, outcome.frame_id)
        if frame is None:
            return
        for name, value in outcome.metrics.items():
            setattr(frame, name, value)
        frame.star_catalog = outcome.catalog
        record_masters(frame, outcome.masters)
        frame.analyzed_at = utcnow()
        frame.analysis_key = key
        if outcome.reason or outcome.error:
            frame.status = FrameStatus.FAILED
            frame.reason = f"analysis: {outcome.reason or outcome.error}"
        elif frame.status == FrameStatus.FAILED and (frame.reason or "").startswith("analysis:"):
            frame.status, frame.reason = FrameStatus.ACCEPTED, None


def analyze_frames(library: Library, frame_ids: Sequence[int],
                   options: AnalysisOptions = AnalysisOptions(), *,
                   progress: Progress | None = None) -> AnalysisReport:
    """Measure the given lights (skipping those already measured with the same masters)."""
    progress = progress or NullProgress()
    report = AnalysisReport()
    tasks = _tasks(library, frame_ids, options, report)
    if not tasks:
        return report
    keys = {t.frame_id: analysis_key(t.spec, t.threshold) for t in tasks}
    workers = max(1, min(options.workers or os.cpu_count() or 1, len(tasks)))
    progress.begin("Analysing lights", len(tasks))
    try:
        if workers == 1:
            for task in tasks:
                _finish(library, report, _analyse(task), keys, progress)
        else:
            _run_pool(library, report, tasks, keys, workers, progress)
    finally:
        progress.end()
    return report


def _finish(library: Library, report: AnalysisReport, outcome: FrameOutcome,
            keys: dict[int, str], progress: Progress) -> None:
    _store(library, outcome, keys[outcome.frame_id])
    report.analyzed.append(outcome)
    progress.advance()


def _run_pool(library: Library, report: AnalysisReport, tasks: list[_Task],
              keys: dict[int, str], workers: int, progress: Progress) -> None:
    # Tasks are ordered by light group, so each worker mostly reuses the masters it loaded.
    pending: set[Future[FrameOutcome]] = set()
    queue = list(reversed(tasks))
    warm_up_stars()
    # The masters stay loaded: warping, next in a run, forks its workers with them too.
    with masters_for_workers(tasks, release=False), single_threaded_workers(), \
            ProcessPoolExecutor(max_workers=workers, initializer=reuse_freed_memory) as pool:
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    pending.add(pool.submit(_analyse, queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    _finish(library, report, future.result(), keys, progress)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
