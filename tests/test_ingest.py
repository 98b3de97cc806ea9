"""Ingest of a night folder: classification, metadata, idempotence, moves, bad files, atomicity."""

from __future__ import annotations

import hashlib
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from oscdeep.db.models import Frame, Session, Target
from oscdeep.pipeline import ingest as ingest_mod
from oscdeep.pipeline.ingest import IngestOptions, ingest, night_of

from .conftest import H, W, write_test_frame as _frame

def _tree_digest(root: Path) -> dict[str, tuple[str, float]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_ingest_classifies_and_records_metadata(library, night: Path) -> None:
    before = _tree_digest(night)
    report = ingest(library, [night])
    assert report.added_by_kind() == {"light": 4, "dark": 3, "flat": 2, "bias": 2}
    skipped = {s.path.name: s.cause for s in report.skipped}
    assert set(skipped) == {"corrupt.fits", "empty.fit", "truncated.fits", "holiday.cr2"}
    assert "truncated" in skipped["truncated.fits"]
    assert "empty" in skipped["empty.fit"]
    assert report.session_name == "2026-11-20 M 42"
    assert _tree_digest(night) == before, "ingest must never modify user files"
    with library.session() as orm:
        lights = orm.scalars(select(Frame).where(Frame.kind == "light").order_by(Frame.path)).all()
        assert [f.kind_source for f in lights] == ["header"] * 4
        f = lights[0]
        assert (f.width, f.height, f.bayer_pattern, f.exposure, f.gain, f.offset) == (
            W, H, "RGGB", 120.0, 100.0, 30.0)
        assert (f.temperature, f.set_temperature, f.filter, f.object) == (
            -10.2, -10.0, "L-eXtreme", "M 42")
        assert f.instrument == "ZWO ASI2600MC Pro" and f.status == "accepted"
        assert f.date_obs.isoformat() == "2026-11-20T20:00:00"
        assert f.target.name == "M 42" and f.session.target.name == "M 42"
        darks = orm.scalars(select(Frame).where(Frame.kind == "dark")).all()
        assert {d.kind_source for d in darks} == {"path"} and all(d.target_id is None for d in darks)
        assert orm.scalar(select(func.count()).select_from(Frame)) == 11


def test_ingest_twice_adds_nothing(library, night: Path) -> None:
    first = ingest(library, [night])
    second = ingest(library, [night])
    assert len(first.added) == 11
    assert second.added == [] and second.unchanged == 11
    assert second.session_name == first.session_name
    with library.session() as orm:
        assert orm.scalar(select(func.count()).select_from(Frame)) == 11
        assert orm.scalar(select(func.count()).select_from(Session)) == 1
        assert orm.scalar(select(func.count()).select_from(Target)) == 1


def test_moved_folder_is_relinked_not_duplicated(library, night: Path, tmp_path: Path) -> None:
    ingest(library, [night])
    moved = tmp_path / "archive" / "night1"
    shutil.move(str(night), moved)
    report = ingest(library, [moved])
    assert report.added == [] and len(report.relinked) == 11
    with library.session() as orm:
        paths = orm.scalars(select(Frame.path)).all()
        assert len(paths) == 11 and all(p.startswith(str(moved)) for p in paths)


def test_copy_beside_original_is_reported_as_duplicate(library, night: Path, tmp_path: Path) -> None:
    ingest(library, [night])
    copy = tmp_path / "copy"
    shutil.copytree(night / "darks", copy)
    report = ingest(library, [copy], IngestOptions(kind=None))
    assert report.added == [] and len(report.duplicates) == 3
    assert all("same content as frame" in d.cause for d in report.duplicates)


def test_kind_option_is_the_last_resort(library, tmp_path: Path) -> None:
    folder = tmp_path / "misc"
    _frame(folder / "a.fits", {}, seed=1)
    _frame(folder / "b.fits", {}, seed=2)
    report = ingest(library, [folder])
    assert report.added == [] and len(report.skipped) == 2
    assert "--kind" in report.skipped[0].cause
    report = ingest(library, [folder], IngestOptions(kind="dark", session_name="dark library"))
    assert report.added_by_kind() == {"dark": 2} and report.session_name == "dark library"


def test_failed_write_leaves_nothing_half_written(library, night: Path, monkeypatch) -> None:
    real = ingest_mod._frame_row
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_mod, "_frame_row", flaky)
    with pytest.raises(RuntimeError):
        ingest(library, [night])
    with library.session() as orm:
        assert orm.scalar(select(func.count()).select_from(Frame)) == 0
        assert orm.scalar(select(func.count()).select_from(Session)) == 0
    monkeypatch.setattr(ingest_mod, "_frame_row", real)
    assert len(ingest(library, [night]).added) == 11


def test_ingest_reads_headers_only(library, tmp_path: Path) -> None:
    """Five 4000x3000 frames (24 MB each) are ingested without decoding their pixels."""
    big = tmp_path / "big" / "lights"
    data = np.full((3000, 4000), 1200, np.uint16)
    from astropy.io import fits

    for i in range(5):
        hdu = fits.PrimaryHDU(data)
        hdu.header["IMAGETYP"] = "LIGHT"
        hdu.header["DATE-OBS"] = f"2026-11-20T22:0{i}:00"
        big.mkdir(parents=True, exist_ok=True)
        hdu.writeto(big / f"l{i}.fits")
    del data
    tracemalloc.start()
    report = ingest(library, [big.parent], workers=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(report.added) == 5
    assert peak < 8 * 2**20, f"ingest allocated {peak / 2**20:.1f} MiB: it decoded images"


def test_night_of_uses_the_evening_date() -> None:
    import datetime as dt

    assert night_of(dt.datetime(2026, 11, 21, 3, 0)) == dt.date(2026, 11, 20)
    assert night_of(dt.datetime(2026, 11, 20, 23, 0)) == dt.date(2026, 11, 20)
    # 01:20 UTC at longitude -80 is 20:00 local: the evening of the previous calendar day
    assert night_of(dt.datetime(2025, 3, 27, 1, 20), -80.0) == dt.date(2025, 3, 26)


def test_real_seestar_folder_splits_nights_and_targets(library) -> None:
    """The six M 94 lights form one night; the NGC 7023 frame of another year its own session."""
    from .conftest import SEESTAR, require_real

    require_real(SEESTAR)
    report = ingest(library, [SEESTAR])
    assert report.added_by_kind() == {"light": 7} and report.skipped == []
    names = sorted(n for _, n, _ in report.sessions)
    assert names == ["2024-07-30 NGC 7023", "2025-03-26 M 94"]
    with library.session() as orm:
        frames = orm.scalars(select(Frame).order_by(Frame.date_obs)).all()
        m94 = [f for f in frames if f.object == "M 94"]
        assert len(m94) == 6
        assert {f.target.name for f in m94} == {"M 94"}
        assert {f.session.name for f in m94} == {"2025-03-26 M 94"}
        assert {(f.bayer_pattern, f.exposure, f.gain, f.width, f.height) for f in m94} == {
            ("GRBG", 10.0, 80.0, 1080, 1920)}
        assert [f.temperature for f in m94] == [25.125, 25.375, 25.5, 25.5625, 25.6875, 25.5]
        assert m94[0].date_obs.isoformat(timespec="milliseconds") == "2025-03-27T01:20:32.955"
        ngc = next(f for f in frames if f.object == "NGC 7023")
        assert ngc.target.name == "NGC 7023" and ngc.temperature == 32.5625
