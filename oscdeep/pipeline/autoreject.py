"""``frames reject --auto``: find the statistical outliers of each night.

Within each session (and exposure), a measured light is an outlier when
* its FWHM is above the median by more than ``k`` robust sigmas (1.4826 × MAD) and by at
  least ``fwhm_min_excess`` (default 15 %) — bad seeing, wind, lost focus;
* its roundness is below the median by more than ``k`` sigmas and by at least
  ``roundness_min_drop`` (default 0.1) — trailing, guiding errors;
* its background is above the median by more than ``k`` sigmas and by at least
  ``background_min_excess`` (default 25 %) — clouds lit by the town, the Moon, dawn;
* its star count is below ``stars_min_fraction`` (default 50 %) of the median — clouds, dew.
The minimum excesses keep a very steady night (tiny MAD) from losing good frames over noise.
Nights with fewer than ``min_frames`` measured lights are left alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from oscdeep.robust import MAD_TO_SIGMA


@dataclass(frozen=True)
class AutoRejectRules:
    """Thresholds of the automatic rejection (see the module text)."""

    k: float = 3.0
    fwhm_min_excess: float = 0.15
    roundness_min_drop: float = 0.10
    background_min_excess: float = 0.25
    stars_min_fraction: float = 0.5
    min_frames: int = 5


def _robust(values: Sequence[float]) -> tuple[float, float]:
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return median, MAD_TO_SIGMA * mad


def find_outliers(frames: Iterable[Any], rules: AutoRejectRules = AutoRejectRules()
                  ) -> list[tuple[Any, str]]:
    """(frame, reason) for every outlier among measured lights, grouped by session and exposure.

    ``frames`` need ``session_id``, ``exposure``, ``fwhm``, ``roundness``, ``background`` and
    ``star_count`` attributes (``Frame`` rows do); unmeasured frames are ignored.
    """
    groups: dict[tuple[Any, Any], list[Any]] = {}
    for f in frames:
        if f.star_count is None:
            continue
        groups.setdefault((f.session_id, f.exposure), []).append(f)
    out: list[tuple[Any, str]] = []
    for members in groups.values():
        if len(members) < rules.min_frames:
            continue
        out.extend(_group_outliers(members, rules))
    return out


def _group_outliers(members: list[Any], rules: AutoRejectRules) -> list[tuple[Any, str]]:
    reasons: dict[int, list[str]] = {}

    def flag(f: Any, text: str) -> None:
        reasons.setdefault(id(f), []).append(text)

    fwhm = [f.fwhm for f in members if f.fwhm is not None]
    if len(fwhm) >= rules.min_frames:
        med, sig = _robust(fwhm)
        limit = med + max(rules.k * sig, rules.fwhm_min_excess * med)
        for f in members:
            if f.fwhm is not None and f.fwhm > limit:
                flag(f, f"fwhm {f.fwhm:.2f} px > {limit:.2f} (night median {med:.2f})")
    rnd = [f.roundness for f in members if f.roundness is not None]
    if len(rnd) >= rules.min_frames:
        med, sig = _robust(rnd)
        limit = med - max(rules.k * sig, rules.roundness_min_drop)
        for f in members:
            if f.roundness is not None and f.roundness < limit:
                flag(f, f"roundness {f.roundness:.2f} < {limit:.2f} (night median {med:.2f})")
    bkg = [f.background for f in members if f.background is not None]
    if len(bkg) >= rules.min_frames:
        med, sig = _robust(bkg)
        limit = med + max(rules.k * sig, rules.background_min_excess * abs(med))
        for f in members:
            if f.background is not None and f.background > limit:
                flag(f, f"background {f.background:.1f} > {limit:.1f} (night median {med:.1f})")
    stars = [f.star_count for f in members]
    med_stars = statistics.median(stars)
    limit_stars = rules.stars_min_fraction * med_stars
    for f in members:
        if f.star_count < limit_stars:
            flag(f, f"{f.star_count} stars < {limit_stars:.0f} (half the night median "
                    f"{med_stars:.0f})")
    return [(f, "auto: " + "; ".join(reasons[id(f)])) for f in members if id(f) in reasons]
