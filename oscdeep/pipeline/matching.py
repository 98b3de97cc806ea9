"""Pick the bias, dark and flat for each group of lights, by rule, and say why.

Rules:
* bias: same camera, sensor size, Bayer pattern, binning, gain/ISO and offset.
* dark: as bias, sensor temperature within the tolerance, and the same exposure; else the
  nearest *longer* dark, scaled by exposure through the bias (dark current grows with time).
  Darks from any night qualify, so a night without darks uses the library's.
* flat: same camera, size, pattern, binning and filter, from the lights' own session first,
  else from the nearest earlier session (with a warning: dust and focus may have moved).
Among equals, the newest version wins. Candidates that came close are kept with the reason
they lost, so ``calib match`` can explain itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from oscdeep.config import MatchTolerances
from oscdeep.db.models import Frame, MasterCalibration, Session
from oscdeep.pipeline.calib_groups import FrameGroup, group_frames


@dataclass
class Considered:
    """A master that was looked at, and why it was or was not taken."""

    master_id: int
    label: str
    reason: str


@dataclass
class Choice:
    """The master chosen for one role (bias, dark or flat), or None with the reason."""

    role: str
    master: MasterCalibration | None
    reason: str
    scale: float | None = None
    warnings: list[str] = field(default_factory=list)
    rejected: list[Considered] = field(default_factory=list)


@dataclass
class LightGroupMatch:
    """One group of lights and the calibration chosen for it."""

    group: FrameGroup
    session_name: str
    bias: Choice
    dark: Choice
    flat: Choice

    @property
    def frame_ids(self) -> list[int]:
        return [f.id for f in self.group.frames]

    def warnings(self) -> list[str]:
        """What this group will be calibrated without, and second-best choices, in words."""
        choices = (self.bias, self.dark, self.flat)
        head = f"{self.session_name}, {self.group.describe()}"
        missing = [f"{head}: calibrated without a {c.role}: {c.reason}"
                   for c in choices if c.master is None]
        return missing + [w for c in choices for w in c.warnings]


def master_label(m: MasterCalibration) -> str:
    """'dark #4 v2 (300 s, -10.0 °C, 20 frames)'."""
    bits = []
    if m.kind in ("dark", "darkflat") and m.exposure is not None:
        bits.append(f"{m.exposure:g} s")
    if m.temperature is not None and m.kind != "flat":
        bits.append(f"{m.temperature:.1f} °C")
    if m.kind == "flat" and m.filter:
        bits.append(m.filter)
    bits.append(f"{m.n_frames} frames")
    return f"{m.kind} #{m.id} v{m.version} ({', '.join(bits)})"


def _setting_mismatch(m: MasterCalibration, light: Frame, *, gain: bool) -> str | None:
    checks = [
        ("camera", m.camera, light.camera),
        ("size", f"{m.width}x{m.height}", f"{light.width}x{light.height}"),
        ("Bayer pattern", m.bayer_pattern, light.bayer_pattern),
        ("binning", f"{m.xbinning}x{m.ybinning}", f"{light.xbinning}x{light.ybinning}"),
    ]
    if gain:
        checks += [("gain", m.gain, light.gain), ("ISO", m.iso, light.iso),
                   ("offset", m.offset, light.offset)]
    for name, ours, theirs in checks:
        if ours != theirs:
            return f"{name} {ours if ours is not None else 'unknown'} ≠ lights' " \
                   f"{theirs if theirs is not None else 'unknown'}"
    return None


def _newest_per_group(masters: Sequence[MasterCalibration]) -> list[MasterCalibration]:
    best: dict[str, MasterCalibration] = {}
    for m in masters:
        if m.group_key not in best or m.version > best[m.group_key].version:
            best[m.group_key] = m
    return list(best.values())


def _when(frames: Sequence[Frame]) -> dt.datetime | None:
    dates = sorted(f.date_obs for f in frames if f.date_obs is not None)
    return dates[len(dates) // 2] if dates else None


def _by_time(masters: list[MasterCalibration], when: dt.datetime | None) -> list[MasterCalibration]:
    def distance(m: MasterCalibration) -> float:
        if when is None or m.date_start is None:
            return float("inf")
        return abs((m.date_start - when).total_seconds())

    return sorted(masters, key=lambda m: (distance(m), -m.id))


def choose_bias(group: FrameGroup, masters: Sequence[MasterCalibration]) -> Choice:
    light = group.frames[0]
    ok, rejected = [], []
    for m in _newest_per_group([m for m in masters if m.kind == "bias"]):
        why = _setting_mismatch(m, light, gain=True)
        (rejected.append(Considered(m.id, master_label(m), why)) if why else ok.append(m))
    if not ok:
        return Choice("bias", None, "no master bias with the lights' camera settings",
                      rejected=rejected)
    chosen = _by_time(ok, _when(group.frames))[0]
    rejected += [Considered(m.id, master_label(m), "another bias is nearer in time")
                 for m in ok if m is not chosen]
    return Choice("bias", chosen, "same camera, gain/ISO, offset and binning",
                  rejected=rejected)


def choose_dark(group: FrameGroup, masters: Sequence[MasterCalibration], bias: Choice,
                tol: MatchTolerances) -> Choice:
    light = group.frames[0]
    exposure, temperature = group.exposure, group.temperature
    equal, longer, rejected = [], [], []
    for m in _newest_per_group([m for m in masters if m.kind == "dark"]):
        label = master_label(m)
        why = _setting_mismatch(m, light, gain=True)
        if why is None and m.temperature is not None and temperature is not None \
                and abs(m.temperature - temperature) > tol.temperature:
            why = (f"temperature off by {abs(m.temperature - temperature):.1f} °C "
                   f"(tolerance ±{tol.temperature:g} °C)")
        if why is None:
            if tol.same_exposure(m.exposure, exposure):
                equal.append(m)
                continue
            if m.exposure is not None and exposure is not None and m.exposure > exposure:
                longer.append(m)
                continue
            why = (f"exposure {m.exposure:g} s is shorter than the lights' {exposure:g} s: "
                   "scaling up would amplify its noise" if m.exposure is not None
                   and exposure is not None else "exposure unknown")
        rejected.append(Considered(m.id, label, why))

    def temp_gap(m: MasterCalibration) -> float:
        if m.temperature is None or temperature is None:
            return 99.0
        return abs(m.temperature - temperature)

    if equal:
        chosen = sorted(equal, key=lambda m: (temp_gap(m), -m.id))[0]
        rejected += [Considered(m.id, master_label(m), "another dark is closer in temperature")
                     for m in equal if m is not chosen]
        rejected += [Considered(m.id, master_label(m), "a dark of the same exposure exists")
                     for m in longer]
        return Choice("dark", chosen, _dark_reason(chosen, temperature, scaled=False),
                      scale=1.0, rejected=rejected)
    if longer:
        if bias.master is None:
            rejected += [Considered(m.id, master_label(m),
                                    "longer dark needs a master bias to be scaled, and none "
                                    "matches") for m in longer]
            return Choice("dark", None, "no dark of the lights' exposure, and no bias to scale "
                                        "a longer one", rejected=rejected)
        chosen = sorted(longer, key=lambda m: (m.exposure, temp_gap(m), -m.id))[0]
        scale = float(exposure / chosen.exposure)  # type: ignore[operator]
        rejected += [Considered(m.id, master_label(m), "a nearer longer exposure exists")
                     for m in longer if m is not chosen]
        return Choice("dark", chosen, _dark_reason(chosen, temperature, scaled=True)
                      + f": {chosen.exposure:g} s → {exposure:g} s (×{scale:.3f}) through "
                      f"bias #{bias.master.id}", scale=scale, rejected=rejected)
    return Choice("dark", None, "no master dark within the temperature tolerance with the same "
                                "or a longer exposure", rejected=rejected)


def _dark_reason(m: MasterCalibration, temperature: float | None, *, scaled: bool) -> str:
    words = "longer exposure, scaled" if scaled else "same exposure"
    if m.temperature is not None and temperature is not None:
        words += f", {abs(m.temperature - temperature):.1f} °C from the lights"
    return words


def choose_flat(group: FrameGroup, masters: Sequence[MasterCalibration],
                sessions: dict[int, Session]) -> Choice:
    light = group.frames[0]
    session = sessions.get(light.session_id)
    when = _when(group.frames)
    same, earlier, rejected = [], [], []
    for m in _newest_per_group([m for m in masters if m.kind == "flat"]):
        label = master_label(m)
        why = _setting_mismatch(m, light, gain=False)
        if why is None and (m.filter or None) != ((light.filter or "").strip() or None):
            why = f"filter {m.filter or 'none'} ≠ lights' {light.filter or 'none'}"
        if why is None:
            if m.session_id == light.session_id:
                same.append(m)
                continue
            taken = m.date_end or m.date_start
            if taken is not None and when is not None and taken <= when:
                earlier.append(m)
                continue
            other = sessions.get(m.session_id) if m.session_id else None
            why = f"from a later session ({other.name if other else 'unknown'})"
        rejected.append(Considered(m.id, label, why))
    if same:
        chosen = max(same, key=lambda m: m.id)
        return Choice("flat", chosen, f"same session ({session.name if session else '?'})",
                      rejected=rejected)
    if earlier:
        chosen = max(earlier, key=lambda m: (m.date_end or m.date_start, m.id))
        other = sessions.get(chosen.session_id) if chosen.session_id else None
        days = ((when - (chosen.date_end or chosen.date_start)).days
                if when and (chosen.date_end or chosen.date_start) else None)
        rejected += [Considered(m.id, master_label(m), "an earlier flat is nearer in time")
                     for m in earlier if m is not chosen]
        warning = (f"no flat from this session: using the one of {other.name if other else '?'}"
                   + (f" ({days} days earlier)" if days is not None else "")
                   + "; dust and focus may have moved since")
        return Choice("flat", chosen, "nearest earlier session of the same camera",
                      warnings=[warning], rejected=rejected)
    return Choice("flat", None, "no master flat of this camera and filter from this or an "
                                "earlier session", rejected=rejected)


def _explain_none(choice: Choice) -> Choice:
    """Make an empty choice say what the library holds, in one line."""
    if choice.master is not None:
        return choice
    if not choice.rejected:
        choice.reason += f"; the library has no master {choice.role} (`oscdeep calib build`)"
    else:
        near = "; ".join(f"{r.label}: {r.reason}" for r in choice.rejected[:3])
        more = f" (+{len(choice.rejected) - 3} more)" if len(choice.rejected) > 3 else ""
        choice.reason += f"; the library has {near}{more}"
    return choice


def match_lights(orm: OrmSession, lights: Sequence[Frame],
                 tol: MatchTolerances = MatchTolerances()) -> list[LightGroupMatch]:
    """Group ``lights`` and choose masters for every group from the whole library."""
    masters = list(orm.scalars(select(MasterCalibration)))
    sessions = {s.id: s for s in orm.scalars(select(Session))}
    groups, _ = group_frames([f for f in lights if f.kind == "light"], tol)
    out = []
    for group in groups:
        bias = choose_bias(group, masters)
        dark = _explain_none(choose_dark(group, masters, bias, tol))
        flat = _explain_none(choose_flat(group, masters, sessions))
        bias = _explain_none(bias)
        session = sessions.get(group.frames[0].session_id)
        out.append(LightGroupMatch(group, session.name if session else "?", bias, dark, flat))
    return out
