"""Calibration matching rules, table-tested on library rows (no files needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from oscdeep.config import MatchTolerances
from oscdeep.db.models import Frame, MasterCalibration, Session
from oscdeep.pipeline.matching import match_lights

CAM = "ZWO ASI2600MC Pro"
T0 = dt.datetime(2026, 11, 20, 22, 0)


def _session(orm, name: str, night: dt.date) -> Session:
    s = Session(name=name, night=night)
    orm.add(s)
    orm.flush()
    return s


def _light(orm, session: Session, i: int, **kw) -> Frame:
    values = dict(session_id=session.id, path=f"/n/{session.name}/l{i}.fits",
                  content_hash=f"{session.id:04d}{i:060d}", file_size=1, file_format="fits",
                  kind="light", width=6248, height=4176, bayer_pattern="RGGB", xbinning=1,
                  ybinning=1, gain=100.0, offset=50.0, exposure=300.0, temperature=-10.0,
                  instrument=CAM, filter="UV/IR", date_obs=T0 + dt.timedelta(minutes=5 * i))
    values.update(kw)
    frame = Frame(**values)
    orm.add(frame)
    orm.flush()
    return frame


def _master(orm, kind: str, key: str, **kw) -> MasterCalibration:
    values = dict(kind=kind, group_key=key, version=1, path=f"/m/{key}.fits", inputs_hash=key,
                  camera=CAM, width=6248, height=4176, bayer_pattern="RGGB", xbinning=1,
                  ybinning=1, gain=100.0, offset=50.0, n_frames=20, options={},
                  software_version="test", exposure=0.0 if kind == "bias" else 300.0,
                  temperature=-10.0, date_start=T0 - dt.timedelta(hours=2),
                  date_end=T0 - dt.timedelta(hours=1))
    values.update(kw)
    m = MasterCalibration(**values)
    orm.add(m)
    orm.flush()
    return m


@pytest.fixture
def night(library):  # noqa: ANN001, ANN201
    with library.session() as orm:
        s = _session(orm, "2026-11-20 M31", dt.date(2026, 11, 20))
        for i in range(3):
            _light(orm, s, i)
    return library


def _match(library, **tol):  # noqa: ANN001, ANN003, ANN202
    with library.session() as orm:
        lights = list(orm.query(Frame).filter(Frame.kind == "light"))
        return match_lights(orm, lights, MatchTolerances(**tol))


def test_same_exposure_dark_within_temperature_wins(night) -> None:  # noqa: ANN001
    with night.session() as orm:
        bias = _master(orm, "bias", "b")
        good = _master(orm, "dark", "d300", temperature=-9.2)
        _master(orm, "dark", "d300warm", temperature=-3.0)
        _master(orm, "dark", "d600", exposure=600.0)
        _master(orm, "dark", "d60", exposure=60.0)
        _master(orm, "dark", "dgain", gain=200.0)
        ids = (bias.id, good.id)
    (m,) = _match(night)
    assert (m.bias.master.id, m.dark.master.id, m.dark.scale) == (ids[0], ids[1], 1.0)
    reasons = {r.label.split(" (")[0].split(" v")[0]: r.reason for r in m.dark.rejected}
    assert any("temperature off by 7.0 °C" in r for r in reasons.values())
    assert any("shorter than the lights' 300 s" in r for r in reasons.values())
    assert any("gain 200.0 ≠ lights' 100.0" in r for r in reasons.values())
    assert any("same exposure exists" in r for r in reasons.values())


def test_longer_dark_is_scaled_through_the_bias(night) -> None:  # noqa: ANN001
    with night.session() as orm:
        _master(orm, "bias", "b")
        _master(orm, "dark", "d1200", exposure=1200.0)
        near = _master(orm, "dark", "d600", exposure=600.0).id
    (m,) = _match(night)
    assert m.dark.master.id == near and m.dark.scale == pytest.approx(0.5)
    assert "600 s → 300 s (×0.500) through bias" in m.dark.reason


def test_longer_dark_without_bias_cannot_be_scaled(night) -> None:  # noqa: ANN001
    with night.session() as orm:
        _master(orm, "dark", "d600", exposure=600.0)
    (m,) = _match(night)
    assert m.dark.master is None and "no bias" in m.dark.reason
    assert m.bias.master is None


def test_temperature_tolerance_is_an_option(night) -> None:  # noqa: ANN001
    with night.session() as orm:
        warm = _master(orm, "dark", "d", temperature=-6.5).id
    assert _match(night)[0].dark.master is None
    assert _match(night, temperature=4.0)[0].dark.master.id == warm


def test_newest_version_of_a_group_is_used(night) -> None:  # noqa: ANN001
    with night.session() as orm:
        _master(orm, "dark", "d", version=1, inputs_hash="v1")
        v2 = _master(orm, "dark", "d", version=2, inputs_hash="v2").id
    assert _match(night)[0].dark.master.id == v2


def test_flat_from_own_session_else_nearest_earlier(night) -> None:  # noqa: ANN001
    with night.session() as orm:
        older = _session(orm, "2026-11-02 M31", dt.date(2026, 11, 2))
        oldest = _session(orm, "2026-10-01 M33", dt.date(2026, 10, 1))
        later = _session(orm, "2026-12-01 M1", dt.date(2026, 12, 1))
        near = _master(orm, "flat", "f-old", session_id=older.id, filter="UV/IR",
                       date_start=dt.datetime(2026, 11, 2, 23), date_end=dt.datetime(2026, 11, 3))
        _master(orm, "flat", "f-oldest", session_id=oldest.id, filter="UV/IR",
                date_start=dt.datetime(2026, 10, 1, 23), date_end=dt.datetime(2026, 10, 2))
        _master(orm, "flat", "f-later", session_id=later.id, filter="UV/IR",
                date_start=dt.datetime(2026, 12, 1, 23), date_end=dt.datetime(2026, 12, 2))
        _master(orm, "flat", "f-filter", session_id=older.id, filter="L-eXtreme",
                date_start=dt.datetime(2026, 11, 2, 23), date_end=dt.datetime(2026, 11, 3))
        near_id = near.id
    (m,) = _match(night)
    assert m.flat.master.id == near_id
    assert m.flat.warnings and "2026-11-02 M31" in m.flat.warnings[0]
    assert "17 days earlier" in m.flat.warnings[0]
    why = [r.reason for r in m.flat.rejected]
    assert any("later session" in r for r in why) and any("filter L-eXtreme" in r for r in why)
    assert any("earlier flat is nearer" in r for r in why)
    with night.session() as orm:
        session = orm.query(Session).filter(Session.name == "2026-11-20 M31").one()
        own = _master(orm, "flat", "f-own", session_id=session.id, filter="UV/IR").id
    (m,) = _match(night)
    assert m.flat.master.id == own and not m.flat.warnings


def test_lights_are_grouped_by_exposure_and_temperature(night) -> None:  # noqa: ANN001
    with night.session() as orm:
        s = orm.query(Session).one()
        _light(orm, s, 10, exposure=60.0)
        _light(orm, s, 11, temperature=-2.0)
        _master(orm, "dark", "d60", exposure=60.0)
    groups = {(len(m.frame_ids), m.group.exposure, m.group.temperature): m for m in _match(night)}
    assert set(groups) == {(3, 300.0, -10.0), (1, 60.0, -10.0), (1, 300.0, -2.0)}
    assert groups[(1, 60.0, -10.0)].dark.master is not None
    assert groups[(3, 300.0, -10.0)].dark.master is None


def test_nothing_matches_says_what_exists(night) -> None:  # noqa: ANN001
    (m,) = _match(night)
    assert m.dark.master is None and "no master dark (`oscdeep calib build`)" in m.dark.reason
    with night.session() as orm:
        _master(orm, "dark", "warm", temperature=5.0)
    (m,) = _match(night)
    assert "the library has dark #" in m.dark.reason and "temperature off by 15.0" in m.dark.reason
