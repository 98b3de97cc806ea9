"""Build master bias, dark-flat, dark and flat frames into the library, once per set of inputs.

A master is identified by the content hashes of its source frames and the options it was
built with: building again with the same inputs does nothing, new frames in a group make a
new version beside the old one. Files are written atomically as float32 FITS with provenance
in the header, then recorded with the frames they came from in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from oscdeep import __version__
from oscdeep.config import MASTER_KINDS, MasterOptions
from oscdeep.db.engine import Library
from oscdeep.db.models import Frame, MasterCalibration, MasterSource, utcnow
from oscdeep.errors import OscdeepError
from oscdeep.pipeline.calib_groups import FrameGroup, group_frames
from oscdeep.progress import NullProgress, Progress
from oscdeep.types import FrameStatus

IMAGETYP = {"bias": "Master Bias", "dark": "Master Dark", "flat": "Master Flat",
            "darkflat": "Master Dark Flat"}


@dataclass
class GroupOutcome:
    """What happened to one group of calibration frames."""

    kind: str
    description: str
    n_frames: int
    status: str  # built | up-to-date | failed
    master_id: int | None = None
    version: int | None = None
    path: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class MasterBuildReport:
    """Every group considered by a build, and the frames left out with the reason."""

    groups: list[GroupOutcome] = field(default_factory=list)
    excluded: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def built(self) -> list[GroupOutcome]:
        return [g for g in self.groups if g.status == "built"]


def _inputs_hash(kind: str, frames: Sequence[Frame], options: dict[str, Any],
                 base_ids: Sequence[int | None]) -> str:
    digest = hashlib.sha256(kind.encode())
    for h in sorted(f.content_hash for f in frames):
        digest.update(h.encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    digest.update(json.dumps(list(base_ids)).encode())
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")[:80] or "camera"


def _master_name(group: FrameGroup, version: int) -> str:
    first = group.frames[0]
    parts = [group.kind, first.camera or "camera", group.key.get("size", "")]
    if first.gain is not None:
        parts.append(f"g{first.gain:g}")
    if first.iso is not None:
        parts.append(f"iso{first.iso}")
    if group.kind in ("dark", "darkflat") and group.exposure is not None:
        parts.append(f"{group.exposure:g}s")
    if group.kind in ("dark", "darkflat") and group.temperature is not None:
        parts.append(f"{group.temperature:+.0f}C")
    if group.kind == "flat":
        parts.append(f"s{first.session_id}")
        if first.filter:
            parts.append(first.filter)
    return _slug("_".join(str(p) for p in parts)) + f"_v{version}.fits"


class _SourceCache:
    """Frame sources for the engine; camera raw files are decoded once into a temp .npy."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def source(self, frame: Frame):  # noqa: ANN201 (-> FrameSource)
        from oscdeep.integrate import ArraySource, FitsSource

        if frame.file_format == "fits":
            return FitsSource(frame.path)
        from oscdeep.io.npy import write_npy
        from oscdeep.io.raw import read_raw_mosaic

        mosaic, _ = read_raw_mosaic(frame.path)
        path = self.tmp / f"{frame.id}.npy"
        write_npy(path, mosaic.astype(np.float32, copy=False))
        return ArraySource(np.load(path, mmap_mode="r"))


def _pedestal(frames: Sequence[Frame]) -> float:
    """Camera black level to remove when no bias is available (raw files know theirs)."""
    levels = [f.black_level for f in frames if f.black_level]
    return float(np.median(levels)) if levels else 0.0


def _masters_like(orm: OrmSession, kind: str, **match: Any) -> list[MasterCalibration]:
    """Masters of ``kind`` whose columns equal ``match`` (None matches NULL), newest first."""
    stmt = select(MasterCalibration).where(MasterCalibration.kind == kind)
    for column, value in match.items():
        col = getattr(MasterCalibration, column)
        stmt = stmt.where(col.is_(None) if value is None else col == value)
    return list(orm.scalars(stmt.order_by(MasterCalibration.created_at.desc(),
                                          MasterCalibration.id.desc())))


def _flat_base(orm: OrmSession, group: FrameGroup, options: MasterOptions
               ) -> tuple[MasterCalibration | None, str | None]:
    """Dark-flat (same exposure) or else bias to subtract from a group of flats."""
    first = group.frames[0]
    settings = dict(camera=first.camera, width=first.width, height=first.height,
                    bayer_pattern=first.bayer_pattern, xbinning=first.xbinning,
                    ybinning=first.ybinning, gain=first.gain, iso=first.iso, offset=first.offset)
    for df in _masters_like(orm, "darkflat", **settings):
        if options.tolerances.same_exposure(df.exposure, group.exposure):
            return df, None
    biases = _masters_like(orm, "bias", **settings)
    if biases:
        return biases[0], None
    return None, ("no master bias or dark-flat for these flats: built without bias subtraction, "
                  "so vignetting is corrected a little too weakly")


def _header(group: FrameGroup, result_stats: dict[str, Any], version: int,
            base: MasterCalibration | None, options: MasterOptions) -> dict[str, Any]:
    first = group.frames[0]
    temps = [f.temperature for f in group.frames if f.temperature is not None]
    cards: dict[str, Any] = {
        "IMAGETYP": IMAGETYP[group.kind],
        "INSTRUME": first.camera or "",
        "NCOMBINE": len(group.frames),
        "XBINNING": first.xbinning,
        "YBINNING": first.ybinning,
        "OSCVERS": (version, "oscdeep master version in its group"),
        "OSCREJ": (options.rejection, "rejection method"),
        "OSCSOFT": (f"oscdeep {__version__}", "software that built this master"),
    }
    if first.bayer_pattern:
        cards["BAYERPAT"] = first.bayer_pattern
    if group.exposure is not None:
        cards["EXPTIME"] = group.exposure
    if temps:
        cards["CCD-TEMP"] = round(float(np.median(temps)), 3)
    for key, value in (("GAIN", first.gain), ("OFFSET", first.offset), ("ISOSPEED", first.iso),
                       ("FILTER", first.filter)):
        if value is not None:
            cards[key] = value
    if base is not None:
        cards["OSCBASE"] = (f"{base.kind} #{base.id} v{base.version}", "subtracted before combining")
    for key, value in result_stats.items():
        if value is not None:
            cards[key] = value
    return cards


def _build_one(library: Library, group: FrameGroup, options: MasterOptions,
               base: MasterCalibration | None, version: int, tmp: Path,
               progress: Progress) -> tuple[Path, dict[str, Any], list[str]]:
    """Integrate one group; returns (written path, statistics, warnings)."""
    from oscdeep import calibrate
    from oscdeep.integrate import CombineOptions, TransformSource, combine
    from oscdeep.io.fits import read_fits_image, write_fits_image

    warnings: list[str] = []
    pattern = group.frames[0].bayer_pattern
    cache = _SourceCache(tmp)
    sources = [cache.source(f) for f in group.frames]
    is_flat = group.kind == "flat"
    if is_flat:
        if base is not None:
            base_image, _ = read_fits_image(base.path)
            sources = [TransformSource(s, lambda band, y0, b=base_image: band - b[y0:y0 + len(band)])
                       for s in sources]
        else:
            pedestal = _pedestal(group.frames)
            if pedestal:
                sources = [TransformSource(s, lambda band, y0, p=pedestal: band - p)
                           for s in sources]
    combine_options = CombineOptions(
        rejection=options.rejection, sigma_low=options.sigma_low, sigma_high=options.sigma_high,
        normalization="multiplicative" if is_flat else "none", memory_bytes=options.memory_bytes)
    result = combine(sources, options=combine_options, progress=progress)
    image = result.image
    stats: dict[str, Any] = {}
    if is_flat:
        image = calibrate.prepare_flat(image, pattern=pattern)
        cold = calibrate.find_cold_pixels(image, pattern=pattern, sigma=options.cold_sigma)
        stats["OSCCOLD"] = int(np.count_nonzero(cold))
    median, noise = calibrate.robust_stats(image)
    stats["OSCMED"] = (round(float(median), 6), "median of the master")
    stats["OSCNOISE"] = (round(float(noise), 6), "robust sigma (MAD) of the master")
    if group.kind in ("dark", "darkflat"):
        hot = calibrate.find_hot_pixels(image, pattern=pattern, sigma=options.hot_sigma)
        stats["OSCHOT"] = (int(np.count_nonzero(hot)), "hot pixels above the threshold")
    if len(group.frames) < options.min_frames:
        warnings.append(f"only {len(group.frames)} frame(s): a master of fewer than "
                        f"{options.min_frames} is noisy and cannot reject outliers")
    name = _master_name(group, version)
    path = library.files_dir / "masters" / group.kind / name
    history = [f"{group.kind} master from {len(group.frames)} frames:"]
    history += [Path(f.path).name for f in group.frames]
    write_fits_image(path, image, _header(group, stats, version, base, options), history=history)
    return path, stats, warnings


def _value(card: Any) -> Any:
    return card[0] if isinstance(card, tuple) else card


def build_masters(
    library: Library,
    frames_query: Any = None,
    *,
    kinds: Sequence[str] | None = None,
    options: MasterOptions = MasterOptions(),
    progress: Progress | None = None,
) -> MasterBuildReport:
    """Build every master the library's calibration frames allow (or those ``kinds`` only).

    ``frames_query`` (an ``oscdeep.query`` Query) narrows the calibration frames considered.
    Bias and dark-flats are built before flats, which are calibrated by them.
    """
    from oscdeep.query import select_frames

    progress = progress or NullProgress()
    wanted = [k for k in MASTER_KINDS if kinds is None or k in kinds]
    report = MasterBuildReport()
    options_doc = {k: v for k, v in asdict(options).items() if k != "memory_bytes"}
    with library.session() as orm:
        stmt = select_frames(frames_query).where(
            Frame.kind.in_(wanted), Frame.status == FrameStatus.ACCEPTED)
        frames = list(orm.scalars(stmt).unique())
        orm.expunge_all()
    groups, excluded = group_frames(frames, options.tolerances)
    report.excluded = [(f.id, f.path, why) for f, why in excluded]
    tmp_root = library.files_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    for kind in wanted:
        for group in (g for g in groups if g.kind == kind):
            report.groups.append(_build_group(library, group, options, options_doc,
                                              tmp_root, progress))
    return report


def _build_group(library: Library, group: FrameGroup, options: MasterOptions,
                 options_doc: dict[str, Any], tmp_root: Path,
                 progress: Progress) -> GroupOutcome:
    outcome = GroupOutcome(group.kind, group.describe(), len(group.frames), "failed")
    start = time.perf_counter()
    with library.session() as orm:
        base, warning = (_flat_base(orm, group, options) if group.kind == "flat"
                         else (None, None))
        if warning:
            outcome.warnings.append(warning)
        inputs = _inputs_hash(group.kind, group.frames, options_doc, [base.id if base else None])
        existing = orm.scalars(select(MasterCalibration).where(
            MasterCalibration.kind == group.kind, MasterCalibration.inputs_hash == inputs)).first()
        if existing is not None and Path(existing.path).exists():
            outcome.status, outcome.master_id = "up-to-date", existing.id
            outcome.version, outcome.path = existing.version, existing.path
            return outcome
        version = 1 + (orm.scalar(select(func.max(MasterCalibration.version)).where(
            MasterCalibration.group_key == group.key_text())) or 0)
        if base is not None:
            orm.expunge(base)
    tmp = Path(tempfile.mkdtemp(dir=tmp_root))
    try:
        progress.begin(f"Master {group.kind}: {group.describe()}", None)
        path, stats, warnings = _build_one(library, group, options, base, version, tmp, progress)
    except (OscdeepError, OSError, ValueError) as exc:
        outcome.error = str(exc)
        return outcome
    finally:
        progress.end()
        shutil.rmtree(tmp, ignore_errors=True)
    outcome.warnings.extend(warnings)
    try:
        outcome.master_id = _record(library, group, path, inputs, version, options_doc, stats,
                                    base)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    outcome.status, outcome.version, outcome.path = "built", version, str(path)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _record(library: Library, group: FrameGroup, path: Path, inputs: str, version: int,
            options_doc: dict[str, Any], stats: dict[str, Any],
            base: MasterCalibration | None) -> int:
    first = group.frames[0]
    temps = [f.temperature for f in group.frames if f.temperature is not None]
    dates = [f.date_obs for f in group.frames if f.date_obs is not None]
    with library.session() as orm:
        master = MasterCalibration(
            kind=group.kind, group_key=group.key_text(), version=version, path=str(path),
            inputs_hash=inputs,
            session_id=first.session_id if group.kind == "flat" else None,
            camera=first.camera, width=first.width, height=first.height,
            bayer_pattern=first.bayer_pattern, xbinning=first.xbinning,
            ybinning=first.ybinning, gain=first.gain, iso=first.iso, offset=first.offset,
            exposure=group.exposure if group.kind != "bias" else 0.0,
            temperature=group.temperature,
            temperature_min=min(temps) if temps else None,
            temperature_max=max(temps) if temps else None,
            date_start=min(dates) if dates else None, date_end=max(dates) if dates else None,
            filter=first.filter if group.kind == "flat" else None,
            n_frames=len(group.frames),
            options={**options_doc, "base_id": base.id if base else None,
                     "dark_includes_bias": group.kind in ("dark", "darkflat")},
            median=_value(stats.get("OSCMED")), noise=_value(stats.get("OSCNOISE")),
            hot_pixels=_value(stats.get("OSCHOT", stats.get("OSCCOLD"))),
            software_version=__version__, created_at=utcnow(),
        )
        master.sources = [MasterSource(frame_id=f.id) for f in group.frames]
        orm.add(master)
        orm.flush()
        return master.id
