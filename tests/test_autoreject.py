"""Automatic rejection of a night's statistical outliers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from oscdeep.pipeline.autoreject import AutoRejectRules, find_outliers


def _night(n: int = 20, seed: int = 0, session: int = 1, exposure: float = 120.0) -> list:
    rng = np.random.default_rng(seed)
    return [SimpleNamespace(id=session * 100 + i, session_id=session, exposure=exposure,
                            fwhm=float(3.0 + rng.normal(0, 0.1)),
                            roundness=float(0.9 + rng.normal(0, 0.01)),
                            background=float(1000 + rng.normal(0, 10)),
                            star_count=int(800 + rng.normal(0, 20))) for i in range(n)]


def test_outliers_of_each_kind_are_found_with_reasons() -> None:
    frames = _night()
    frames[3].fwhm = 5.5
    frames[5].roundness = 0.6
    frames[7].background = 1900.0
    frames[9].star_count = 120
    found = {f.id: why for f, why in find_outliers(frames)}
    assert set(found) == {103, 105, 107, 109}
    assert found[103].startswith("auto: fwhm 5.50 px >")
    assert "roundness 0.60 <" in found[105]
    assert "background 1900.0 >" in found[107]
    assert "120 stars <" in found[109]


def test_a_steady_night_loses_nothing() -> None:
    assert find_outliers(_night(40, seed=3)) == []


def test_small_excess_on_a_very_steady_night_is_kept() -> None:
    frames = _night()
    for f in frames:
        f.fwhm = 3.0
    frames[0].fwhm = 3.3  # 10 % worse: above 3 MAD sigmas (0) but under the 15 % minimum
    assert find_outliers(frames) == []


def test_sessions_and_exposures_are_judged_separately() -> None:
    night1 = _night(10, session=1)
    night2 = _night(10, session=2, seed=1)
    for f in night2:
        f.fwhm += 2.0  # a worse night is not an outlier of itself
    short = _night(6, session=1, seed=2, exposure=30.0)
    for f in short:
        f.background /= 4
    assert find_outliers(night1 + night2 + short) == []


def test_unmeasured_frames_and_small_nights_are_ignored() -> None:
    frames = _night(4)
    frames[0].fwhm = 9.0
    assert find_outliers(frames) == []
    frames = _night(8)
    frames[0].star_count = None
    frames[1].fwhm = 9.0
    assert [f.id for f, _ in find_outliers(frames, AutoRejectRules(min_frames=5))] == [101]
