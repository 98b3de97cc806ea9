"""Frame analysis and registration through the pipeline, on a synthetic night with known truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from oscdeep.db.models import Frame, MasterCalibration, Registration, Target
from oscdeep.pipeline.align import RegisterOptions, register_frames
from oscdeep.pipeline.ingest import ingest
from oscdeep.pipeline.measure import AnalysisOptions, analyze_frames
from oscdeep.pipeline.sample_night import write_sample_night
from oscdeep.synth import NightConfig, make_night

NIGHT = NightConfig(width=640, height=480, n_lights=10, n_darks=5, n_flats=5, n_bias=5,
                    seed=21, pattern="GRBG", n_bad_seeing=1, cloud=True, satellite=True,
                    include_flip=True, include_scale=True)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from .conftest import prepare_night

    library, ids, report = prepare_night(tmp_path_factory.mktemp("analysis"), NIGHT, workers=2)
    yield library, ids, report
    library.close()


def _corners(width: int, height: int) -> np.ndarray:
    return np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], float)


def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h = np.c_[xy, np.ones(len(xy))] @ m.T
    return h[:, :2] / h[:, 2:]


def test_every_light_is_measured_and_the_cloud_frame_stands_out(analysed) -> None:  # noqa: ANN001
    library, ids, report = analysed
    assert len(report.analyzed) == len(ids) and report.warnings == []
    truth = make_night(NIGHT).frames(["light"])
    with library.session() as orm:
        frames = [orm.get(Frame, i) for i in ids]
        masters = {m.kind: m.id for m in orm.scalars(select(MasterCalibration))}
        for f, t in zip(frames, truth, strict=True):
            assert f.analyzed_at is not None and f.star_catalog is not None
            # the masters the measurement was calibrated with are recorded on the light
            assert (f.bias_id, f.dark_id, f.flat_id) == (
                masters["bias"], masters["dark"], masters["flat"])
            if "cloud" in t.flags:
                assert f.star_count < 0.7 * np.median([g.star_count for g in frames])
            elif f.star_count:
                assert f.fwhm == pytest.approx(t.fwhm, rel=0.08), t.flags


def test_second_run_skips_and_force_measures_again(analysed) -> None:  # noqa: ANN001
    library, ids, _ = analysed
    again = analyze_frames(library, ids, AnalysisOptions(workers=1))
    assert again.analyzed == [] and again.skipped == len(ids)
    forced = analyze_frames(library, ids[:2], AnalysisOptions(workers=1, force=True))
    assert len(forced.analyzed) == 2


def test_registration_matches_the_true_transforms(analysed) -> None:  # noqa: ANN001
    library, ids, _ = analysed
    report = register_frames(library, ids)
    (group,) = report.groups
    truth = make_night(NIGHT).frames(["light"])
    by_id = dict(zip(ids, truth, strict=True))
    errors, degraded_errors = [], []
    with library.session() as orm:
        target = orm.scalars(select(Target)).one()
        assert target.reference_frame_id == group.reference_id
        t_ref = np.asarray(by_id[group.reference_id].transform)
        for reg in orm.scalars(select(Registration)):
            t_frame = np.asarray(by_id[reg.frame_id].transform)
            true = t_ref @ np.linalg.inv(t_frame)  # frame pixel -> reference pixel
            got = np.asarray(reg.matrix).reshape(3, 3)
            c = _corners(NIGHT.width, NIGHT.height)
            err = np.hypot(*(_apply(got, c) - _apply(true, c)).T)
            # The bound holds for seeing 2-5 px; a clouded frame (a few faint stars) or one of
            # 6-8 px seeing is registered only as well as its stars allow.
            t = by_id[reg.frame_id]
            degraded = "cloud" in t.flags or t.fwhm > 5.0
            (degraded_errors if degraded else errors).extend(err)
        registered = {r.frame_id for r in orm.scalars(select(Registration))}
    assert group.failed == [] and registered == set(ids)
    assert np.median(errors) <= 0.05 and max(errors) <= 0.15, (np.median(errors), max(errors))
    assert max(degraded_errors) <= 0.5


def test_new_night_is_registered_to_the_same_reference(analysed, tmp_path: Path) -> None:  # noqa: ANN001
    library, ids, _ = analysed
    register_frames(library, ids)
    import datetime as dt

    more = dataclasses.replace(NIGHT, n_lights=3, n_darks=0, n_flats=0, n_bias=0,
                               include_flip=False, include_scale=False, cloud=False,
                               satellite=False, n_bad_seeing=0,
                               start=dt.datetime(2026, 11, 21, 21, 0))
    write_sample_night(tmp_path / "n2", more)
    added = ingest(library, [tmp_path / "n2"])
    new_ids = [i for i, _, k in added.added if k == "light"]
    analyze_frames(library, new_ids, AnalysisOptions(workers=1))
    with library.session() as orm:
        ref_before = orm.scalars(select(Target)).one().reference_frame_id
    report = register_frames(library, ids + new_ids)
    (group,) = report.groups
    assert group.reference_id == ref_before
    assert group.up_to_date == len(ids) and len(group.registered) == 3


def test_pure_noise_frame_is_reported_unregistered(analysed) -> None:  # noqa: ANN001
    from oscdeep.stars import StarCatalog

    library, ids, _ = analysed
    rng = np.random.default_rng(0)
    with library.session() as orm:
        ref = orm.get(Frame, ids[0])
        noise = orm.get(Frame, ids[1])
        cat = StarCatalog.from_bytes(ref.star_catalog)
        xy = rng.uniform([0, 0], [NIGHT.width, NIGHT.height], size=(len(cat), 2))
        noise.star_catalog = cat.with_positions(xy).to_bytes()
        noise_id = noise.id
    report = register_frames(library, [ids[0], noise_id], RegisterOptions(force=True))
    (group,) = report.groups
    assert [i for i, _, _ in group.failed] == [noise_id]
    with library.session() as orm:
        assert orm.get(Frame, noise_id).status == "failed"
        assert orm.get(Frame, noise_id).reason.startswith("registration:")


def test_real_seestar_lights_register_to_each_other(tmp_path: Path) -> None:
    """Six alt-az Seestar S50 subs of M 94 (field rotation, no calibration frames)."""
    from oscdeep.db.engine import open_library

    from .conftest import SEESTAR, require_real

    require_real(SEESTAR)
    library = open_library(tmp_path / "lib.db")
    ingest(library, [SEESTAR])
    with library.session() as orm:
        m94 = list(orm.scalars(select(Frame.id).where(Frame.object == "M 94")))
    analysed = analyze_frames(library, m94, AnalysisOptions(workers=2))
    assert len(analysed.measured) == 6
    assert any("without a bias" in w for w in analysed.warnings)
    with library.session() as orm:
        for i in m94:
            f = orm.get(Frame, i)
            assert f.star_count >= 30 and 1.5 < f.fwhm < 8, (f.star_count, f.fwhm)
    report = register_frames(library, m94)
    (group,) = report.groups
    assert group.failed == [] and len(group.registered) == 6
    assert all(rms < 0.5 for _, rms, _ in group.registered), group.registered
    with library.session() as orm:
        from oscdeep.transform import Transform

        regs = orm.scalars(select(Registration).join(Frame, Registration.frame_id == Frame.id)
                           .order_by(Frame.date_obs))
        shifts = np.array([Transform.from_list(r.matrix, r.model).shift for r in regs])
    # one minute of tracking drift: the six offsets march steadily in one direction
    assert np.all(np.diff(shifts[:, 0]) < 0) and np.all(np.diff(shifts[:, 1]) < 0), shifts
    assert np.hypot(*(shifts[0] - shifts[-1])) > 3
    library.close()
