"""Calibrate lights with the masters matched to them, and record which masters were used.

The same step serves frame analysis, stacking and ``calib apply`` (calibrated FITS for other
tools). Masters are loaded once per light group; the lights are read one at a time.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oscdeep.calibrate import CalibrationMasters, CalibratedFrame, calibrate_light
from oscdeep.config import MatchTolerances
from oscdeep.cosmetic import bad_pixel_map
from oscdeep.db.engine import Library
from oscdeep.db.models import Frame, utcnow
from oscdeep.errors import FrameReadError, OscdeepError
from oscdeep.io.fits import read_fits_image, write_fits_image
from oscdeep.io.frames import read_frame
from oscdeep.pipeline.matching import LightGroupMatch, match_lights
from oscdeep.progress import NullProgress, Progress


@dataclass(frozen=True)
class MasterSpec:
    """Where the masters of one light group are: plain data, cheap to send to a worker."""

    pattern: str | None
    paths: dict[str, str]
    ids: dict[str, int]
    dark_exposure: float | None
    dark_includes_bias: bool
    dark_scale: float | None

    @classmethod
    def of(cls, match: LightGroupMatch) -> MasterSpec:
        chosen = [c for c in (match.bias, match.dark, match.flat) if c.master is not None]
        dark = match.dark.master
        return cls(
            pattern=match.group.frames[0].bayer_pattern,
            paths={c.role: c.master.path for c in chosen},  # type: ignore[union-attr]
            ids={c.role: c.master.id for c in chosen},  # type: ignore[union-attr]
            dark_exposure=dark.exposure if dark else None,
            dark_includes_bias=bool(dark.options.get("dark_includes_bias", True)) if dark else True,
            dark_scale=match.dark.scale,
        )

    @property
    def key(self) -> str:
        """Identity of this calibration, to tell when a light's analysis has gone stale."""
        return ":".join(f"{r}{self.ids.get(r, '-')}" for r in ("bias", "dark", "flat"))

    @property
    def cache_key(self) -> str:
        """Identity of the loaded masters in a process: ids repeat across libraries, so the files
        themselves (path and modification time) name them."""
        parts = []
        for role in ("bias", "dark", "flat"):
            path = self.paths.get(role)
            stamp = os.stat(path).st_mtime_ns if path and os.path.exists(path) else 0
            parts.append(f"{role}={path or ''}@{stamp}")
        return "|".join(parts)


def load_masters(spec: MasterSpec, *, hot_sigma: float = 5.0,
                 cold_sigma: float = 5.0) -> CalibrationMasters:
    """Read the masters of ``spec`` from disk and find their bad pixels."""
    arrays: dict[str, np.ndarray | None] = {"bias": None, "dark": None, "flat": None}
    for role, path in spec.paths.items():
        try:
            arrays[role], _ = read_fits_image(path)
        except FrameReadError as exc:
            raise OscdeepError(f"master {role} #{spec.ids[role]} is unreadable ({exc.cause}): "
                               "rebuild it with `oscdeep calib build`") from exc
    dark, bias = arrays["dark"], arrays["bias"]
    bad = None
    if dark is not None or arrays["flat"] is not None:
        thermal = dark - bias if dark is not None and bias is not None and \
            spec.dark_includes_bias else dark
        bad = bad_pixel_map(thermal, arrays["flat"], pattern=spec.pattern, hot_sigma=hot_sigma,
                            cold_sigma=cold_sigma).mask
    return CalibrationMasters(
        bias=bias, dark=dark, dark_exposure=spec.dark_exposure,
        dark_includes_bias=spec.dark_includes_bias, flat=arrays["flat"], bad_pixels=bad,
        pattern=spec.pattern, ids=spec.ids)


@dataclass(frozen=True)
class LightJob:
    """One light for a worker process to calibrate: where it is and which masters apply."""

    frame_id: int
    path: str
    exposure: float | None
    black_level: float | None
    pedestal: float
    spec: MasterSpec


_LOADED: dict[str, CalibrationMasters] = {}


@contextmanager
def masters_for_workers(jobs: Sequence[LightJob], *, release: bool = True) -> Iterator[None]:
    """Around a pool of forked workers: the masters most of ``jobs`` use are loaded here
    first, so every worker inherits them (shared pages) instead of reading them and finding
    their bad pixels again. With ``release`` they are let go afterwards, else kept for the
    next pool (analysis, then warping, in one run). Unreadable masters are left for the
    workers to report."""
    counts = Counter(job.spec.cache_key for job in jobs)
    key = counts.most_common(1)[0][0] if counts else None
    if key is not None and key not in _LOADED:
        spec = next(job.spec for job in jobs if job.spec.cache_key == key)
        try:
            _LOADED[key] = load_masters(spec)
        except OscdeepError:
            pass
    try:
        yield
    finally:
        if release:
            _LOADED.clear()


def light_job(frame: Frame, spec: MasterSpec) -> LightJob:
    """The calibration job of one light row."""
    return LightJob(frame.id, frame.path, frame.exposure, frame.black_level, pedestal_of(frame),
                    spec)


def calibrate_job(job: LightJob, *, dark_scale: str | float | None = None,
                  cosmetic: bool = True) -> CalibratedFrame:
    """Read and calibrate one light; each process loads a set of masters only once.

    ``dark_scale`` overrides the matched scale (see :func:`oscdeep.calibrate.calibrate_light`).
    """
    masters = _LOADED.get(job.spec.cache_key)
    if masters is None:
        masters = _LOADED.setdefault(job.spec.cache_key, load_masters(job.spec))
    raw, _ = read_frame(job.path)
    return calibrate_light(raw, masters, exposure=job.exposure,
                           black_level=job.black_level or 0.0, pedestal=job.pedestal,
                           dark_scale=job.spec.dark_scale if dark_scale is None else dark_scale,
                           cosmetic=cosmetic)


def pedestal_of(frame: Frame) -> float:
    """FITS PEDESTAL as an amount to subtract (writers use either sign)."""
    try:
        return abs(float(frame.header.get("PEDESTAL", 0.0)))
    except (TypeError, ValueError):
        return 0.0


@dataclass
class CalibratedLight:
    """One calibrated light, or the reason it could not be calibrated."""

    frame_id: int
    path: str
    image: np.ndarray | None = None
    result: CalibratedFrame | None = None
    error: str | None = None


@dataclass
class CalibrationRun:
    """What ``calibrate_lights`` did: the matches and the per-frame outcome counts."""

    matches: list[LightGroupMatch] = field(default_factory=list)
    calibrated: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def iter_calibrated(
    library: Library,
    frame_ids: Sequence[int],
    *,
    tolerances: MatchTolerances = MatchTolerances(),
    dark_scale: str | float | None = None,
    cosmetic: bool = True,
    run: CalibrationRun | None = None,
) -> Iterator[CalibratedLight]:
    """Yield each light calibrated with its matched masters; records the masters on its row.

    A light whose group has no usable master of some kind is calibrated without it (the run
    gets a warning); an unreadable light is yielded with ``error`` set.
    """
    run = run if run is not None else CalibrationRun()
    with library.session() as orm:
        lights = [orm.get(Frame, i) for i in frame_ids]
        matches = match_lights(orm, [f for f in lights if f is not None], tolerances)
        run.matches = matches
        jobs = []
        for m in matches:
            spec = MasterSpec.of(m)
            jobs.extend(light_job(f, spec) for f in m.group.frames)
            run.warnings.extend(m.warnings())
    for job in jobs:
        try:
            result = calibrate_job(job, dark_scale=dark_scale, cosmetic=cosmetic)
        except (OscdeepError, OSError, ValueError) as exc:
            run.failed.append((job.frame_id, job.path, str(exc)))
            yield CalibratedLight(job.frame_id, job.path, error=str(exc))
            continue
        _record(library, job.frame_id, result)
        run.calibrated += 1
        yield CalibratedLight(job.frame_id, job.path, result.image, result)


def record_masters(frame: Frame, ids: dict[str, int]) -> None:
    """Note on a light the masters (by role: bias, dark, flat) it was calibrated with."""
    frame.bias_id = ids.get("bias")
    frame.dark_id = ids.get("dark")
    frame.flat_id = ids.get("flat")


def _record(library: Library, frame_id: int, result: CalibratedFrame) -> None:
    with library.session() as orm:
        frame = orm.get(Frame, frame_id)
        if frame is None:
            return
        record_masters(frame, result.record.master_ids)
        frame.dark_scale = result.record.dark_scale
        frame.calibrated_at = utcnow()


def calibrated_name(path: str) -> str:
    """File name of a calibrated light written by ``calib apply``."""
    stem = Path(path).name
    for suffix in (".fits.gz", ".fit.gz", ".fits", ".fit", ".fts"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{stem}_cal.fits"


def write_calibrated(
    library: Library,
    frame_ids: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    tolerances: MatchTolerances = MatchTolerances(),
    dark_scale: str | float | None = None,
    progress: Progress | None = None,
) -> CalibrationRun:
    """Calibrate lights and write each as a 32-bit float FITS into ``out_dir``."""
    progress = progress or NullProgress()
    out = Path(out_dir)
    run = CalibrationRun()
    headers: dict[int, dict[str, Any]] = {}
    with library.session() as orm:
        for i in frame_ids:
            frame = orm.get(Frame, i)
            if frame is not None:
                headers[i] = {k: v for k, v in frame.header.items()
                              if k not in ("PEDESTAL", "BZERO", "BSCALE", "ROWORDER")}
                if frame.bayer_pattern:
                    headers[i]["BAYERPAT"] = frame.bayer_pattern
                    headers[i].pop("XBAYROFF", None)
                    headers[i].pop("YBAYROFF", None)
    progress.begin("Calibrating lights", len(frame_ids))
    try:
        for item in iter_calibrated(library, frame_ids, tolerances=tolerances,
                                    dark_scale=dark_scale, run=run):
            if item.image is not None and item.result is not None:
                target = out / calibrated_name(item.path)
                write_fits_image(target, item.image, headers.get(item.frame_id),
                                 history=item.result.record.history())
                run.written.append(str(target))
            progress.advance()
    finally:
        progress.end()
    return run
