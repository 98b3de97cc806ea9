"""Speed and accuracy of oscdeep.register.find_transform on synthetic star lists.

Star lists come from the same generator as tests/test_register.py (true sky -> transform ->
centroid noise growing for faint stars -> missed and spurious detections). Reports:

1. time per frame pair and corner error vs the number of stars (about 100, 1000, 5000);
2. a 24-frame night (seeing 2.5-8 px, a meridian flip, an 8 % rescaled frame): total time
   and corner errors for every model;
3. a pair with differential refraction (30 deg vs 60 deg altitude), the reason the default
   model is affine;
4. a rendered night whose star lists come from oscdeep.stars (with and without darks);
5. the same lists through astroalign, if it can be imported from ``--astroalign-path``
   (install it outside the project: ``pip install --target /tmp/aa astroalign``).

    python benchmarks/bench_register.py [--pairs 10] [--astroalign-path /tmp/aa]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oscdeep.register import RegistrationError, StarField, find_transform  # noqa: E402
from oscdeep.synth import NightConfig, make_night, make_transform  # noqa: E402
from oscdeep.transform import Transform, TransformModel, corner_errors  # noqa: E402
from tests.test_register import CENTER, H, W, observe, sky_stars  # noqa: E402

# sky stars giving about 100 / 1000 / 5000 detections per 1200x800 frame
SIZES = {100: (700, 12.0), 1000: (5000, 5.0), 5000: (17000, 3.0)}


def frame_pairs(n_detected: int, count: int, seed: int
                ) -> list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray], tuple]]:
    """``count`` frames of one sky (dither, small rotation, every 4th flipped) + a reference."""
    n_sky, snr_min = SIZES[n_detected]
    rng = np.random.default_rng(seed)
    sky_xy, sky_flux = sky_stars(n_sky, rng)
    ref = observe(sky_xy, sky_flux, np.eye(3), rng=rng, snr_min=snr_min)
    out = []
    for i in range(count):
        rot = rng.uniform(-1, 1) + (180.0 if i % 4 == 3 else 0.0)
        truth = make_transform(tuple(rng.uniform(-30, 30, 2)), rot, 1.0, CENTER)
        fwhm = rng.uniform(2.5, 5.0)
        out.append((truth, observe(sky_xy, sky_flux, truth, rng=rng, snr_min=snr_min,
                                   fwhm=fwhm), ref))
    return out


def by_brightness(xy: np.ndarray, flux: np.ndarray) -> np.ndarray:
    return xy[np.argsort(-flux, kind="stable")]


def run_oscdeep(pairs: list, model: TransformModel | None = None, *,
                prepared: bool = True) -> dict:
    """``prepared``: the reference's StarField is built once, not once per frame."""
    ref_xy, ref_flux = pairs[0][2]
    start = time.perf_counter()
    ref = StarField(ref_xy, ref_flux)
    errors, times, failed = [], [], 0
    for truth, (xy, flux), _ in pairs:
        t0 = time.perf_counter()
        try:
            if prepared:
                result = find_transform(xy, ref, frame_flux=flux, model=model)
            else:
                result = find_transform(xy, ref_xy, frame_flux=flux, ref_flux=ref_flux,
                                        model=model)
        except RegistrationError:
            failed += 1
            continue
        times.append(time.perf_counter() - t0)
        errors.append(corner_errors(result.transform, np.linalg.inv(truth), W, H))
    return summary(errors, times, failed, time.perf_counter() - start)


def run_astroalign(aa, pairs: list) -> dict:  # noqa: ANN001
    ref = by_brightness(*pairs[0][2])
    errors, times, failed = [], [], 0
    start = time.perf_counter()
    for truth, (xy, flux), _ in pairs:
        t0 = time.perf_counter()
        try:
            transf, _ = aa.find_transform(by_brightness(xy, flux), ref)
        except Exception:  # noqa: BLE001  (astroalign raises MaxIterError, ValueError, ...)
            failed += 1
            continue
        times.append(time.perf_counter() - t0)
        errors.append(corner_errors(Transform(transf.params), np.linalg.inv(truth), W, H))
    return summary(errors, times, failed, time.perf_counter() - start)


def summary(errors: list, times: list, failed: int, total: float) -> dict:
    err = np.concatenate(errors) if errors else np.array([np.nan])
    return {"ms": 1000 * statistics.median(times) if times else math.nan,
            "total_s": total, "median_px": float(np.median(err)), "max_px": float(err.max()),
            "failed": failed, "n": len(times) + failed}


def show(label: str, r: dict) -> None:
    print(f"  {label:<36} {r['ms']:7.1f} ms/pair  corner error median {r['median_px']:.4f} px"
          f"  max {r['max_px']:.4f} px  failed {r['failed']}/{r['n']}  "
          f"(total {r['total_s']:.2f} s)")


def night_lists(n_lights: int, seed: int) -> tuple[list, list]:
    cfg = NightConfig(n_lights=n_lights, include_flip=True, include_scale=True, seed=seed)
    night = make_night(cfg)
    sky_xy = np.column_stack([night.sky.x, night.sky.y])
    rng = np.random.default_rng(seed)
    lists = [observe(sky_xy, night.sky.flux[:, 1], f.transform, rng=rng, fwhm=f.fwhm,
                     transmission=f.transmission) for f in night.lights]
    pairs = [(f.transform, lists[i], lists[0]) for i, f in enumerate(night.lights) if i > 0]
    return pairs, list(night.lights)


def refraction_pair(seed: int) -> list:
    """Frame at 30 deg altitude vs reference at 60 deg: the altitude axis (40 deg from the
    sensor's x axis) is compressed by 58.3" x (1/sin^2 30 - 1/sin^2 60) = 7.5e-4 more."""
    k = math.radians(58.3 / 3600)
    squeeze = 1 - k * (1 / math.sin(math.radians(30)) ** 2 - 1 / math.sin(math.radians(60)) ** 2)
    a = math.radians(40)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lin = rot @ np.diag([1.0, squeeze]) @ rot.T
    c = np.array(CENTER)
    truth = np.eye(3)
    truth[:2, :2] = lin
    truth[:2, 2] = c - lin @ c + (12.0, -7.0)
    rng = np.random.default_rng(seed)
    sky_xy, sky_flux = sky_stars(1500, rng)
    ref = observe(sky_xy, sky_flux, np.eye(3), rng=rng)
    return [(truth, observe(sky_xy, sky_flux, truth, rng=rng), ref) for _ in range(5)]


def detector_night(n_lights: int, seed: int, calibrated: bool) -> list | None:
    """Rendered frames of a synthetic night through oscdeep.stars (None if unavailable).

    ``calibrated`` subtracts the true dark (bias + dark current + hot pixels); otherwise only
    the bias level, as for a user without darks.
    """
    try:
        from oscdeep.debayer import cfa_luminance
        from oscdeep.stars import detect_stars
        from oscdeep.synth import render_frame
    except ImportError as exc:
        print(f"  (skipped: {exc})")
        return None
    cfg = NightConfig(n_lights=n_lights, include_flip=True, include_scale=True, seed=seed)
    night = make_night(cfg)
    det = night.detector
    lists = []
    for f in night.lights:
        raw = render_frame(night, f).astype(np.float32)
        if calibrated:
            dark = det.bias + det.dark_rate * det.dark_scale(f.temperature) * f.exposure \
                / cfg.e_per_adu
        else:
            dark = np.float32(cfg.bias_level)
        cat = detect_stars(cfa_luminance(raw - dark, cfg.pattern))
        lists.append((cat.xy, np.asarray(cat["flux"], dtype=np.float64)))
    return [(f.transform, lists[i], lists[0]) for i, f in enumerate(night.lights) if i > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10, help="frame pairs per size")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--astroalign-path", default="/tmp/aa",
                        help="folder where astroalign was pip-installed (--target)")
    args = parser.parse_args()
    aa = None
    if Path(args.astroalign_path).exists():
        sys.path.append(args.astroalign_path)
        try:
            import astroalign as aa  # type: ignore[import-not-found, no-redef]
        except ImportError as exc:
            print(f"astroalign not importable from {args.astroalign_path}: {exc}")
    run_oscdeep(frame_pairs(100, 1, 0))  # warm-up (imports, first calls)

    print("1. frame pairs vs stars per frame (reference prepared once):")
    for n in SIZES:
        pairs = frame_pairs(n, args.pairs, args.seed)
        stars = statistics.median(len(p[1][0]) for p in pairs)
        print(f" ~{n} stars (median {stars:.0f} detections incl. spurious)")
        show("oscdeep (auto: affine)", run_oscdeep(pairs))
        show("oscdeep, reference unprepared", run_oscdeep(pairs, prepared=False))
        if aa is not None:
            show(f"astroalign {aa.__version__}", run_astroalign(aa, pairs))

    print("2. a 24-frame night (seeing 2.5-8 px, flip, 8 % scale), 23 pairs:")
    pairs, _ = night_lists(24, args.seed)
    for model in TransformModel:
        show(f"oscdeep {model.value}", run_oscdeep(pairs, model))
    if aa is not None:
        show(f"astroalign {aa.__version__}", run_astroalign(aa, pairs))

    print("3. differential refraction (altitude 30 deg vs 60 deg), 5 pairs:")
    pairs = refraction_pair(args.seed)
    for model in (TransformModel.SIMILARITY, TransformModel.AFFINE):
        show(f"oscdeep {model.value}", run_oscdeep(pairs, model))

    print("4. rendered 20-frame night, stars from oscdeep.stars.detect_stars, 19 pairs:")
    for calibrated in (True, False):
        pairs = detector_night(20, 2, calibrated)
        if pairs is None:
            break
        label = "dark-subtracted" if calibrated else "bias only (hot pixels)"
        show(f"oscdeep, {label}", run_oscdeep(pairs))
        if aa is not None:
            show(f"astroalign, {label}", run_astroalign(aa, pairs))


if __name__ == "__main__":
    main()
