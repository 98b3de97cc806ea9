"""``oscdeep register``: register every measured light of a target to one reference frame.

Works on the star catalogs stored by ``frames analyze``: no image is read. Each target keeps
its reference (``Target.reference_frame_id``), so a new night of the same target is registered
to the same frame and only its new lights are worked on. Transforms are stored frame pixel →
reference pixel (3x3, row-major, 0 at the first pixel centre).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from oscdeep.db.models import Frame, Registration, Target, utcnow
from oscdeep.db.engine import Library
from oscdeep.errors import NotFoundError, OscdeepError, RegistrationError
from oscdeep.progress import NullProgress, Progress
from oscdeep.types import FrameStatus

IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


@dataclass(frozen=True)
class RegisterOptions:
    """``reference``: 'auto' (keep the target's, else the best frame) or a frame id or path.

    ``model``: transform model ('shift', 'similarity', 'affine', 'homography'); None for the
    registration module's default. ``force`` registers again frames already registered.
    """

    reference: str = "auto"
    model: str | None = None
    force: bool = False


@dataclass
class GroupResult:
    """Registration of the lights of one target."""

    target: str
    reference_id: int
    reference_path: str
    registered: list[tuple[int, float | None, int | None]] = field(default_factory=list)
    up_to_date: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass
class RegisterReport:
    groups: list[GroupResult] = field(default_factory=list)
    not_measured: list[tuple[int, str]] = field(default_factory=list)


def _group_key(f: Frame) -> tuple[str, Any]:
    return ("target", f.target_id) if f.target_id is not None else ("session", f.session_id)


def _pick_reference(orm: OrmSession, frames: list[Frame], options: RegisterOptions,
                    target: Target | None) -> Frame:
    from oscdeep.register import choose_reference

    if options.reference != "auto":
        ref = options.reference
        found = orm.get(Frame, int(ref)) if ref.isdigit() else orm.scalars(
            select(Frame).where(Frame.path.endswith(ref))).first()
        if found is None:
            raise NotFoundError(f"reference frame {ref!r} is not in the library")
        if found.star_catalog is None:
            raise OscdeepError(f"reference frame {found.id} ({found.path}) is not measured: "
                               "run `oscdeep frames analyze` on it first")
        return found
    if target is not None and target.reference_frame_id is not None:
        kept = orm.get(Frame, target.reference_frame_id)
        if kept is not None and kept.status == FrameStatus.ACCEPTED and kept.star_catalog:
            return kept
    candidates = [f for f in frames if f.status == FrameStatus.ACCEPTED]
    if not candidates:
        raise OscdeepError("no accepted, measured light to use as the reference")
    index = choose_reference([{"star_count": f.star_count or 0, "fwhm": f.fwhm,
                               "weight": f.weight} for f in candidates])
    return candidates[index]


def register_frames(library: Library, frame_ids: Sequence[int],
                    options: RegisterOptions = RegisterOptions(), *,
                    progress: Progress | None = None) -> RegisterReport:
    """Register the given lights (grouped by target) and store the transforms."""
    from oscdeep.register import StarField, find_transform
    from oscdeep.stars import StarCatalog

    progress = progress or NullProgress()
    report = RegisterReport()
    with library.session() as orm:
        frames = [f for i in frame_ids if (f := orm.get(Frame, i)) is not None]
        groups: dict[tuple[str, Any], list[Frame]] = {}
        for f in frames:
            if f.star_catalog is None:
                report.not_measured.append((f.id, f.path))
                continue
            groups.setdefault(_group_key(f), []).append(f)
        total = sum(len(g) for g in groups.values())
        progress.begin("Registering lights", total)
        try:
            for key, members in groups.items():
                target = orm.get(Target, key[1]) if key[0] == "target" else None
                ref = _pick_reference(orm, members, options, target)
                if target is not None:
                    target.reference_frame_id = ref.id
                result = GroupResult(target.name if target else f"session {key[1]}",
                                     ref.id, ref.path)
                ref_cat = StarCatalog.from_bytes(ref.star_catalog)
                ref_field = StarField(ref_cat.xy, ref_cat["flux"])
                existing = {r.frame_id: r for r in orm.scalars(select(Registration).where(
                    Registration.reference_id == ref.id,
                    Registration.frame_id.in_([f.id for f in members])))}
                for f in members:
                    progress.advance()
                    if f.id in existing and not options.force:
                        result.up_to_date += 1
                        continue
                    try:
                        if f.id == ref.id:
                            matrix, model, rms, n_match, n_inl = IDENTITY, options.model or \
                                "affine", 0.0, len(ref_cat), len(ref_cat)
                        else:
                            cat = StarCatalog.from_bytes(f.star_catalog)
                            fit = find_transform(cat.xy, ref_field, model=options.model,
                                                 frame_flux=cat["flux"])
                            matrix, model = fit.transform.to_list(), str(fit.transform.model)
                            rms, n_match, n_inl = fit.rms, fit.n_matches, fit.n_inliers
                    except RegistrationError as exc:
                        f.status, f.reason = FrameStatus.FAILED, f"registration: {exc}"
                        result.failed.append((f.id, f.path, str(exc)))
                        continue
                    row = existing.get(f.id) or Registration(frame_id=f.id, reference_id=ref.id)
                    row.model, row.matrix, row.rms = model, list(map(float, matrix)), rms
                    row.n_matches, row.n_inliers = n_match, n_inl
                    row.options = {"model": options.model}
                    row.created_at = utcnow()
                    orm.add(row)
                    if f.status == FrameStatus.FAILED and (f.reason or "").startswith(
                            "registration:"):
                        f.status, f.reason = FrameStatus.ACCEPTED, None
                    result.registered.append((f.id, rms, n_inl))
                report.groups.append(result)
                orm.flush()
        finally:
            progress.end()
    return report


def current_registration(orm: OrmSession, frame: Frame) -> Registration | None:
    """The frame's registration to its target's reference, else its newest one."""
    regs = list(orm.scalars(select(Registration).where(Registration.frame_id == frame.id)
                            .order_by(Registration.created_at.desc())))
    if not regs:
        return None
    ref_id = frame.target.reference_frame_id if frame.target else None
    for r in regs:
        if r.reference_id == ref_id:
            return r
    return regs[0]
