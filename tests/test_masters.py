"""Master calibrations built into the library from a synthetic night with a known truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from oscdeep.cfa import site_planes
from oscdeep.db.models import MasterCalibration, MasterSource
from oscdeep.io.fits import read_fits_header, read_fits_image
from oscdeep.pipeline.ingest import ingest
from oscdeep.pipeline.masters import build_masters
from oscdeep.pipeline.sample_night import read_sample_truth, write_sample_night
from oscdeep.synth import NightConfig

SMALL = NightConfig(width=240, height=160, n_lights=2, n_darks=9, n_flats=12, n_bias=16,
                    seed=5, pattern="GBRG", satellite=False, cloud=False, n_bad_seeing=0)


@pytest.fixture(scope="module")
def small_night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("night") / "2026-11-20"
    write_sample_night(root, SMALL)
    return root


@pytest.fixture
def built(library, small_night: Path):  # noqa: ANN001, ANN201
    ingest(library, [small_night])
    report = build_masters(library)
    return library, report


def _master(library, kind: str) -> MasterCalibration:  # noqa: ANN001
    with library.session() as orm:
        return orm.scalars(select(MasterCalibration).where(MasterCalibration.kind == kind)
                           .order_by(MasterCalibration.version.desc())).first()


def test_build_makes_one_master_per_kind_with_provenance(built) -> None:  # noqa: ANN001
    library, report = built
    assert [(g.kind, g.status, g.n_frames) for g in report.groups] == [
        ("bias", "built", 16), ("dark", "built", 9), ("flat", "built", 12)]
    with library.session() as orm:
        for m in orm.scalars(select(MasterCalibration)):
            assert Path(m.path).is_file() and str(library.files_dir) in m.path
            sources = orm.scalar(select(func.count()).select_from(MasterSource)
                                 .where(MasterSource.master_id == m.id))
            assert sources == m.n_frames
            header = read_fits_header(m.path)
            assert header["BITPIX"] == -32 and header["NCOMBINE"] == m.n_frames
            assert header["BAYERPAT"] == "GBRG" and "oscdeep" in header["OSCSOFT"]
            assert len(header["HISTORY"]) == m.n_frames + 1
    flat = _master(library, "flat")
    assert flat.options["base_id"] == _master(library, "bias").id


def test_master_bias_noise_falls_as_one_over_sqrt_n(built, small_night: Path) -> None:  # noqa: ANN001
    library, _ = built
    truth, arrays = read_sample_truth(small_night)
    image, _ = read_fits_image(_master(library, "bias").path)
    residual = image - arrays["bias"]
    expected = truth["read_noise_adu"] / np.sqrt(SMALL.n_bias)
    assert np.std(residual) == pytest.approx(expected, rel=0.15)


def test_master_flat_recovers_vignetting_and_dust(built, small_night: Path) -> None:  # noqa: ANN001
    library, _ = built
    _, arrays = read_sample_truth(small_night)
    flat, _ = read_fits_image(_master(library, "flat").path)
    truth = arrays["flat"]
    good = truth > 0.5  # dead pixels are handled as cosmetic defects, not by the flat
    ratios = []
    for measured, true, ok in zip(site_planes(flat, "GBRG"), site_planes(truth, "GBRG"),
                                  site_planes(good, "GBRG"), strict=True):
        ratio = measured[ok] / true[ok]
        ratios.append(ratio / np.median(ratio))
    spread = float(np.std(np.concatenate(ratios)))
    assert spread <= 0.005, f"flat differs from the truth by {spread:.2%} RMS"


def test_master_dark_finds_the_hot_pixels(built, small_night: Path) -> None:  # noqa: ANN001
    library, _ = built
    truth, arrays = read_sample_truth(small_night)
    dark = _master(library, "dark")
    hot = arrays["hot_pixels"] & (arrays["dark_rate"] * SMALL.exposure / truth["e_per_adu"] > 30)
    assert dark.hot_pixels is not None and dark.hot_pixels >= int(hot.sum())
    assert dark.hot_pixels <= int(arrays["hot_pixels"].sum()) + 3


def test_rebuilding_the_same_inputs_is_a_no_op(built) -> None:  # noqa: ANN001
    library, _ = built
    again = build_masters(library)
    assert {g.status for g in again.groups} == {"up-to-date"}
    with library.session() as orm:
        assert orm.scalar(select(func.count()).select_from(MasterCalibration)) == 3


def test_new_darks_make_a_new_version_and_keep_the_old(built, tmp_path: Path) -> None:  # noqa: ANN001
    library, _ = built
    more = dataclasses.replace(SMALL, n_lights=0, n_flats=0, n_bias=0, n_darks=3, seed=6)
    write_sample_night(tmp_path / "more-darks", more)
    ingest(library, [tmp_path / "more-darks"])
    report = build_masters(library, kinds=["dark"])
    (group,) = report.groups
    assert (group.status, group.version, group.n_frames) == ("built", 2, 12)
    with library.session() as orm:
        versions = orm.scalars(select(MasterCalibration.version)
                               .where(MasterCalibration.kind == "dark")).all()
        assert sorted(versions) == [1, 2]
        assert all(Path(p).exists() for p in orm.scalars(select(MasterCalibration.path)))


def test_odd_sized_frame_is_excluded_and_small_group_warns(library, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = dataclasses.replace(SMALL, n_lights=0, n_flats=0, n_darks=0, n_bias=2, seed=8)
    write_sample_night(tmp_path / "n", cfg)
    odd = dataclasses.replace(cfg, width=200, n_bias=1, seed=9)
    write_sample_night(tmp_path / "odd", odd)
    (tmp_path / "n" / "bias" / "odd.fits").write_bytes(
        next((tmp_path / "odd" / "bias").glob("*.fits")).read_bytes())
    first = ingest(library, [tmp_path / "n"])
    assert [s.path.name for s in first.skipped] == ["odd.fits"]  # refused at ingest already
    from oscdeep.pipeline.ingest import IngestOptions

    ingest(library, [tmp_path / "odd"], IngestOptions(session_name=first.session_name))
    report = build_masters(library)
    assert len(report.excluded) == 1 and "differs from its group's 240x160" in report.excluded[0][2]
    (group,) = report.groups
    assert group.status == "built" and any("only 2 frame(s)" in w for w in group.warnings)


def test_masters_from_camera_raw(library, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("pyexiv2")
    cfg = dataclasses.replace(SMALL, n_lights=1, n_darks=3, n_flats=3, n_bias=3,
                              file_format="dng", seed=10)
    write_sample_night(tmp_path / "dng", cfg)
    ingest(library, [tmp_path / "dng"])
    report = build_masters(library)
    assert [(g.kind, g.status) for g in report.groups] == [
        ("bias", "built"), ("dark", "built"), ("flat", "built")]
    bias, _ = read_fits_image(_master(library, "bias").path)
    assert abs(float(np.median(bias)) - SMALL.bias_level) < 3


def test_calibrated_light_equals_the_true_sky_within_noise(built, tmp_path: Path) -> None:  # noqa: ANN001
    from oscdeep.db.models import Frame
    from oscdeep.pipeline.calibration import write_calibrated
    from oscdeep.synth import expected_electrons, make_night

    library, _ = built
    with library.session() as orm:
        lights = orm.scalars(select(Frame).where(Frame.kind == "light").order_by(Frame.date_obs))
        ids = [f.id for f in lights]
    run = write_calibrated(library, ids, tmp_path / "cal")
    assert run.calibrated == 2 and run.failed == [] and len(run.written) == 2
    night = make_night(SMALL)
    light0 = night.frames(["light"])[0]
    truth_adu = expected_electrons(night, light0, flat=False, dark=False) / SMALL.e_per_adu
    image, header = read_fits_image(run.written[0])
    assert any("bias subtracted" in h for h in header["HISTORY"])
    # The master flat is normalised to 1 in the centre of each CFA site, so the calibrated
    # sky is the true sky times the true flat's central level of that site.
    true_flat = night.detector.flat
    h, w = true_flat.shape
    level = np.empty_like(true_flat)
    for dy in (0, 1):
        for dx in (0, 1):
            centre = true_flat[h // 4:3 * h // 4, w // 4:3 * w // 4][dy::2, dx::2]
            level[dy::2, dx::2] = np.median(centre)
    expected = truth_adu * level
    # expected noise per pixel: shot + read noise, amplified by the flat division
    gain = SMALL.e_per_adu
    sigma = np.sqrt(truth_adu * true_flat / gain + (SMALL.read_noise / gain) ** 2)
    sigma *= level / true_flat
    z = (image - expected) / sigma
    core = z[8:-8, 8:-8]
    assert abs(float(np.median(core))) < 0.1
    assert 0.9 < float(np.std(np.clip(core, -6, 6))) < 1.25
    with library.session() as orm:
        frame = orm.get(Frame, ids[0])
        assert (frame.bias_id, frame.dark_id, frame.flat_id) == (
            _master(library, "bias").id, _master(library, "dark").id, _master(library, "flat").id)
        assert frame.dark_scale == pytest.approx(1.0) and frame.calibrated_at is not None
