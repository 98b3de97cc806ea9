"""Stacking a synthetic night end to end: output, records, cache reuse, satellite trail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import select

from oscdeep.db.models import Frame, Stack
from oscdeep.pipeline.align import register_frames
from oscdeep.pipeline.build import (
    StackOptions, background_noise, build_stack, cache_usage, result_stars)
from oscdeep.pipeline.ingest import ingest
from oscdeep.pipeline.measure import AnalysisOptions, analyze_frames
from oscdeep.synth import NightConfig, make_night

NIGHT = NightConfig(width=400, height=300, n_lights=8, n_darks=4, n_flats=4, n_bias=4, seed=41,
                    pattern="RGGB", n_bad_seeing=0, cloud=False, satellite=True)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from .conftest import prepare_night

    root = tmp_path_factory.mktemp("stack")
    library, ids, _ = prepare_night(root, NIGHT, register=True)
    yield library, ids, root
    library.close()


def test_stack_writes_rgb_fits_with_maps_and_a_record(registered) -> None:  # noqa: ANN001
    library, ids, root = registered
    out = root / "all.fits"
    report = build_stack(library, ids, name="all", output=out,
                         options=StackOptions(workers=1), selection="all")
    assert report.frames == 8 and report.warped == 8 and report.cached == 0
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == (3, NIGHT.height, NIGHT.width)
        assert hdul[0].header["NCOMBINE"] == 8
        coverage = hdul["COVERAGE"].data
        assert coverage.max() == 8 and coverage.min() >= 1
        assert len(hdul[0].header["HISTORY"]) >= 8 + 3
        written = np.moveaxis(hdul[0].data, 0, -1)
    # The statistics describe the image that was written (measured while it was written).
    assert report.stats["noise_per_channel"] == pytest.approx(background_noise(written),
                                                              rel=1e-6)
    assert report.stats["star_count"] == result_stars(written)["star_count"] > 10
    with library.session() as orm:
        stack = orm.scalars(select(Stack).where(Stack.name == "all")).one()
        assert stack.n_frames == 8 and len(stack.members) == 8
        assert stack.total_exposure == pytest.approx(8 * NIGHT.exposure)
        assert all(m.weight > 0 for m in stack.members)
    files, size = cache_usage(library)
    assert files == 8 and size > 0


def test_second_selection_reuses_warped_frames(registered) -> None:  # noqa: ANN001
    library, ids, root = registered
    build_stack(library, ids, name="first", output=root / "first.fits",
                options=StackOptions(workers=1))
    again = build_stack(library, ids[:5], name="subset", output=root / "subset.fits",
                        options=StackOptions(workers=1))
    assert again.frames == 5 and again.warped == 0 and again.cached == 5


def test_stack_is_cleaner_than_one_frame_and_removes_the_trail(registered) -> None:  # noqa: ANN001
    library, ids, root = registered
    out = root / "clean.fits"
    build_stack(library, ids, name="clean", output=out, options=StackOptions(workers=1))
    stacked = np.moveaxis(fits.getdata(out), 0, -1)
    truth = make_night(NIGHT)
    trail = next(i for i, f in enumerate(truth.frames(["light"])) if "trail" in f.flags)
    single = root / "single.fits"
    build_stack(library, [ids[trail]], name="single", output=single,
                options=StackOptions(workers=1, rejection="none"))
    one = np.moveaxis(fits.getdata(single), 0, -1)
    inner = (slice(40, -40), slice(40, -40))
    # background noise: high-pass residual spread, robust
    def noise(img: np.ndarray) -> float:
        g = img[inner][..., 1]
        hp = g[1:, 1:] - g[:-1, :-1]
        return float(1.4826 * np.median(np.abs(hp - np.median(hp))))
    assert noise(stacked) < 0.6 * noise(one)
    # The satellite trail of one frame leaves no streak: along its line (mapped to the
    # reference grid) the stack is at the level of the parallel bands beside it.
    reference = truth.frames(["light"])[_reference_index(library, ids)]
    frame = truth.frames(["light"])[trail]
    to_ref = np.asarray(reference.transform) @ np.linalg.inv(np.asarray(frame.transform))
    x0, y0, x1, y1 = frame.trail
    (ax, ay), (bx, by) = (to_ref @ [x0, y0, 1])[:2], (to_ref @ [x1, y1, 1])[:2]
    yy, xx = np.mgrid[0:NIGHT.height, 0:NIGHT.width]
    length = np.hypot(bx - ax, by - ay)
    dist = ((xx - ax) * (by - ay) - (yy - ay) * (bx - ax)) / length
    on, beside = np.abs(dist) < 1.0, (np.abs(dist) > 6) & (np.abs(dist) < 12)
    green_one, green_stack = one[..., 1], stacked[..., 1]
    ok = np.isfinite(green_one) & np.isfinite(green_stack)
    excess_one = np.median(green_one[on & ok]) - np.median(green_one[beside & ok])
    excess_stack = np.median(green_stack[on & ok]) - np.median(green_stack[beside & ok])
    assert excess_one > 20 * noise(one)
    assert abs(excess_stack) < noise(stacked)


def _reference_index(library, ids: list[int]) -> int:  # noqa: ANN001
    from oscdeep.db.models import Target

    with library.session() as orm:
        ref = orm.scalars(select(Target)).one().reference_frame_id
    return ids.index(ref)


def test_rebuild_and_diff(registered) -> None:  # noqa: ANN001
    from oscdeep.pipeline.build import diff_stacks, rebuild_stack

    library, ids, root = registered
    with library.session() as orm:
        fwhm = sorted(orm.get(Frame, i).fwhm for i in ids)
    cut = fwhm[len(fwhm) // 2]
    build_stack(library, ids, name="base", output=root / "base.fits",
                options=StackOptions(workers=1, rejection="sigma"), selection="kind:light")
    sharp = rebuild_stack(library, "base", selection=f"fwhm:..{cut}", new_name="sharp")
    assert sharp.warped == 0 and 0 < sharp.frames < 8
    with library.session() as orm:
        diff = diff_stacks(orm, "base", "sharp")
        assert diff["only_first"] and not diff["only_second"]
        assert diff["common"] == sharp.frames
        assert diff["differences"]["n_frames"] == (8, sharp.frames)
        assert orm.scalars(select(Stack).where(Stack.name == "sharp")).one().options[
            "rejection"] == "sigma"
    again = rebuild_stack(library, "base")
    assert again.name == "base" and again.frames == 8
    with library.session() as orm:
        assert len(orm.scalars(select(Stack).where(Stack.name == "base")).all()) == 1
        selection = orm.scalars(select(Stack.selection).where(Stack.name == "base")).one()
    moved = rebuild_stack(library, "base", output=root / "elsewhere.fits")
    assert moved.frames == 8 and Path(moved.output) == root / "elsewhere.fits"
    with fits.open(root / "elsewhere.fits") as hdul:
        assert hdul[0].data.shape[0] == 3
    with library.session() as orm:
        # rebuilding again and again keeps one selection, not a growing chain of clauses
        assert orm.scalars(select(Stack.selection).where(Stack.name == "base")).one() == \
            selection


def test_rebuild_takes_in_a_new_night(tmp_path: Path) -> None:
    """A stack rebuilt on its own selection after a second night was only ingested: the new
    lights are analysed and registered first, and only they are warped."""
    import dataclasses
    import datetime as dt

    from .conftest import prepare_night
    from oscdeep.pipeline.build import rebuild_stack
    from oscdeep.pipeline.catch_up import pending_lights
    from oscdeep.pipeline.sample_night import write_sample_night

    night = dataclasses.replace(NIGHT, n_lights=4, satellite=False)
    library, ids, _ = prepare_night(tmp_path / "one", night, register=True)
    try:
        build_stack(library, ids, name="all", output=tmp_path / "all.fits",
                    options=StackOptions(workers=1))
        write_sample_night(tmp_path / "two", dataclasses.replace(
            night, n_lights=2, n_darks=0, n_flats=0, n_bias=0,
            start=dt.datetime(2026, 11, 21, 21, 0)))
        ingest(library, [tmp_path / "two"])
        with library.session() as orm:
            target_ids = set(orm.scalars(select(Frame.target_id).where(Frame.kind == "light")))
            unmeasured, unregistered = pending_lights(orm, target_ids)
        assert len(unmeasured) == 2 and unregistered == []
        again = rebuild_stack(library, "all")
        assert again.frames == 6 and again.warped == 2 and again.cached == 4
        assert again.skipped == []
        with library.session() as orm:
            assert pending_lights(orm, target_ids) == ([], [])
    finally:
        library.close()


@pytest.mark.parametrize(("cfa", "scale", "pixfrac", "filled"),
                         [(False, 2, 0.7, 0.99), (True, 1, 1.0, 0.95)])
def test_drizzle_grids(registered, cfa: bool, scale: int, pixfrac: float,
                       filled: float) -> None:  # noqa: ANN001
    """2x drizzle of debayered frames; Bayer drizzle (each CFA pixel into its own colour).

    With 8 frames a Bayer drizzle leaves a few holes (each colour samples a quarter or half
    of the pixels): they are NaN, never zero.
    """
    library, ids, root = registered
    out = root / f"drizzle_{cfa}.fits"
    report = build_stack(library, ids, name=f"drizzle {cfa}", output=out,
                         options=StackOptions(workers=1, drizzle=scale, pixfrac=pixfrac,
                                              cfa_drizzle=cfa))
    assert report.frames == 8
    with fits.open(out) as hdul:
        data = hdul[0].data.astype(np.float32)
        assert data.shape == (3, scale * NIGHT.height, scale * NIGHT.width)
        m = 20 * scale
        inner = data[:, m:-m, m:-m]
        assert np.isfinite(inner).mean() > filled
        assert not np.any(inner == 0)  # holes are NaN, not zeros


def test_coverage_map_is_exact_at_dithered_edges(registered) -> None:  # noqa: ANN001
    from oscdeep.db.models import Registration
    from oscdeep.transform import Transform
    from oscdeep.warp import coverage

    library, ids, root = registered
    out = root / "coverage.fits"
    build_stack(library, ids, name="coverage", output=out, options=StackOptions(workers=1))
    expected = np.zeros((NIGHT.height, NIGHT.width), int)
    with library.session() as orm:
        for reg in orm.scalars(select(Registration).where(Registration.frame_id.in_(ids))):
            t = Transform.from_list(reg.matrix, reg.model)
            expected += coverage(t, (NIGHT.height, NIGHT.width), (NIGHT.height, NIGHT.width))
    got = fits.getdata(out, "COVERAGE")
    assert np.array_equal(got, expected)
    assert expected.min() < 8  # the dithers do leave partly covered edges


def test_true_and_measured_transforms_give_the_same_stack(registered) -> None:  # noqa: ANN001
    from oscdeep.db.models import Registration, Target

    library, ids, root = registered
    measured = root / "measured.fits"
    build_stack(library, ids, name="measured", output=measured, options=StackOptions(workers=1))
    truth = dict(zip(ids, make_night(NIGHT).frames(["light"]), strict=True))
    with library.session() as orm:
        ref_id = orm.scalars(select(Target)).one().reference_frame_id
        saved = {}
        for reg in orm.scalars(select(Registration).where(Registration.frame_id.in_(ids))):
            saved[reg.id] = list(reg.matrix)
            true = np.asarray(truth[ref_id].transform) @ np.linalg.inv(truth[reg.frame_id].transform)
            reg.matrix = (true / true[2, 2]).ravel().tolist()
    try:
        exact = root / "exact.fits"
        build_stack(library, ids, name="exact", output=exact, options=StackOptions(workers=1))
    finally:
        with library.session() as orm:
            for reg_id, matrix in saved.items():
                orm.get(Registration, reg_id).matrix = matrix
    a = fits.getdata(measured).astype(np.float64)[:, 30:-30, 30:-30]
    b = fits.getdata(exact).astype(np.float64)[:, 30:-30, 30:-30]
    diff = a - b
    # per-pixel noise of the stack from a high-pass of its green plane
    g = a[1]
    hp = g[1:, 1:] - g[:-1, :-1]
    sigma = 1.4826 * np.median(np.abs(hp - np.median(hp))) / np.sqrt(2)
    spread = 1.4826 * np.nanmedian(np.abs(diff - np.nanmedian(diff)))  # star cores aside
    assert spread < 0.25 * sigma, (spread, sigma)
    assert abs(np.nanmedian(diff)) < 0.05 * sigma


def test_real_frame_with_wcs_keeps_it_in_the_stack(tmp_path: Path) -> None:
    """The NGC 7023 Seestar light carries a plate solution: the stack on its grid keeps it."""
    from oscdeep.db.engine import open_library

    from .conftest import SEESTAR, require_real

    require_real(SEESTAR)
    library = open_library(tmp_path / "lib.db")
    ingest(library, [SEESTAR])
    with library.session() as orm:
        ids = list(orm.scalars(select(Frame.id).where(Frame.object == "NGC 7023")))
    analyze_frames(library, ids, AnalysisOptions(workers=1))
    register_frames(library, ids)
    out = tmp_path / "ngc7023.fits"
    build_stack(library, ids, name="ngc", output=out,
                options=StackOptions(workers=1, rejection="none"))
    header = fits.getheader(out)
    source = fits.getheader(next(SEESTAR.glob("*NGC7023*")))
    assert header["CTYPE1"].startswith("RA---TAN") and header["CRVAL1"] == source["CRVAL1"]
    assert header["CRPIX2"] == source["CRPIX2"] and header["OBJECT"] == "NGC 7023"
    library.close()


def test_cache_limit_evicts_the_least_recently_used(registered) -> None:  # noqa: ANN001
    library, ids, root = registered
    build_stack(library, ids, name="fill", output=root / "fill.fits",
                options=StackOptions(workers=1, interpolation="bilinear"))
    files, _ = cache_usage(library)
    assert files >= 8
    one = NIGHT.width * NIGHT.height * 3 * 2 + 128  # one warped RGB frame as uint16 codes
    report = build_stack(library, ids[:3], name="small", output=root / "small.fits",
                         options=StackOptions(workers=1, interpolation="bilinear",
                                              cache_limit=4 * one))
    assert report.cache_removed > 0 and report.cache_files <= 4
    assert report.cache_bytes <= 4 * one + one  # the frames just used are kept


@pytest.mark.parametrize(("method", "tolerance"), [("none", 0.10), ("winsorized", 0.15)])
def test_stack_noise_falls_as_one_over_sqrt_n(library, tmp_path: Path, method: str,
                                              tolerance: float) -> None:  # noqa: ANN001
    """Pure-noise lights (registered at the identity): noise of N stacked ≈ noise of one / √N."""
    from oscdeep.db.models import Registration, Target
    from oscdeep.io.fits import write_fits_image

    rng = np.random.default_rng(7)
    folder = tmp_path / "noise" / "lights"
    for i in range(16):
        data = 1000 + rng.normal(0, 20, (96, 128))
        write_fits_image(folder / f"n{i:02d}.fits", data,
                         {"IMAGETYP": "Light Frame", "OBJECT": "Noise", "EXPTIME": 60.0,
                          "BAYERPAT": "RGGB", "DATE-OBS": f"2026-11-20T22:{i:02d}:00"},
                         dtype="uint16")
    ingest(library, [folder])
    with library.session() as orm:
        frames = list(orm.scalars(select(Frame).order_by(Frame.date_obs)))
        target = orm.scalars(select(Target)).one()
        target.reference_frame_id = frames[0].id
        for f in frames:
            orm.add(Registration(frame_id=f.id, reference_id=frames[0].id, model="affine",
                                 matrix=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], options={}))
        ids = [f.id for f in frames]
    options = StackOptions(workers=1, rejection=method, normalization="none", weighting="none",
                           interpolation="bilinear")

    def noise(path: Path) -> np.ndarray:
        data = fits.getdata(path).astype(np.float64)[:, 8:-8, 8:-8]
        return data.reshape(3, -1).std(axis=1)

    build_stack(library, ids[:1], name="one", output=tmp_path / "one.fits", options=options)
    build_stack(library, ids, name="all16", output=tmp_path / "all.fits", options=options)
    ratio = noise(tmp_path / "all.fits") / noise(tmp_path / "one.fits")
    assert np.all(np.abs(ratio * np.sqrt(16) - 1) < tolerance), ratio * 4
