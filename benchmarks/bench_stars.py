"""Speed and accuracy of oscdeep.stars on synthetic fields with a known star list.

Reports, on one core:
  * time per 3000x2000 frame (~2000 stars) for background, detection + measurement, and the
    whole ``frame_quality``; ``sep.extract`` on the same frame for comparison;
  * FWHM accuracy of the estimators that were tried, on Gaussian and Moffat (beta 2.5, 4.5)
    stars of 2-6 px: the pipeline (Moffat fit, beta free, pixel area modelled), the same fit
    point-sampled, a Gaussian fit, Gaussian-windowed moments, sep's isophotal moments and
    twice sep's half-flux radius;
  * completeness (stars >= 10 sigma) and false detections (no true star within 1 px) of our
    matched-filter peaks against ``sep.extract``;
  * background and noise errors, and the median centroid error of stars with SNR >= 50.

    python benchmarks/bench_stars.py            # everything (~1 min)
    python benchmarks/bench_stars.py --quick    # smaller fields, fewer repeats
    python benchmarks/bench_stars.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import sep  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from oscdeep.psf import FWHM_PER_SIGMA, fit_psf, windowed_measure  # noqa: E402
from oscdeep.stars import detect_stars, estimate_background, frame_quality  # noqa: E402
from oscdeep.synth import render_stars  # noqa: E402

cv2.setNumThreads(1)
SNR_PER_FLUX = math.sqrt(math.pi / (2 * math.log(2)))
PROFILES = (("gaussian", 0.0), ("moffat", 2.5), ("moffat", 4.5))


def field(shape, n, fwhm, *, psf="gaussian", beta=4.0, snr=(3.0, 3000.0), noise=10.0,
          sky=1000.0, gradient=0.25, seed=0):
    """Random stars (log-uniform SNR) on a sloped sky with Gaussian noise; returns truth too."""
    rng = np.random.default_rng(seed)
    h, w = shape
    x = rng.uniform(-5, w + 5, n)
    y = rng.uniform(-5, h + 5, n)
    s = np.exp(rng.uniform(math.log(snr[0]), math.log(snr[1]), n))
    flux = s * noise * fwhm * SNR_PER_FLUX
    img = render_stars(shape, x, y, flux, fwhm, psf=psf, beta=beta or 4.0, cutoff=1e-3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = (sky * (1 + gradient * (xx / w - 0.5) + 0.5 * gradient * (yy / h - 0.5))
          ).astype(np.float32)
    img += bg + rng.normal(0, noise, shape).astype(np.float32)
    return img, dict(x=x, y=y, flux=flux, snr=s, background=bg, noise=noise)


def grid(fwhm, psf, beta, *, n=144, snr=200.0, noise=10.0, seed=0):
    """Isolated stars on a grid (random sub-pixel phase), no background."""
    rng = np.random.default_rng(seed)
    step = int(6 * fwhm) + 10
    side = int(math.ceil(math.sqrt(n)))
    size = side * step + 10
    g = np.arange(side) * step + step // 2 + 5
    gx, gy = np.meshgrid(g, g)
    x = gx.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    y = gy.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    flux = np.full(n, snr * noise * fwhm * SNR_PER_FLUX)
    img = render_stars((size, size), x, y, flux, fwhm, psf=psf, beta=beta or 4.0, cutoff=1e-4)
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    return img, x, y


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def match(xy, tx, ty, radius=1.0):
    tree = cKDTree(np.stack([tx, ty], 1))
    d, i = tree.query(xy)
    found = np.zeros(len(tx), bool)
    found[i[d <= radius]] = True
    return found, d > radius, d, i


def bench_speed(quick):
    shape = (1000, 1500) if quick else (2000, 3000)
    n = 500 if quick else 2000
    rows = []
    for fwhm, psf, beta in ((3.0, "gaussian", 0.0), (4.0, "moffat", 3.0)):
        img, _ = field(shape, n, fwhm, psf=psf, beta=beta, seed=1)
        frame_quality(img)  # warm up
        repeats = 2 if quick else 5
        bkg = estimate_background(img)
        t_bkg = best_time(lambda: estimate_background(img), repeats)
        t_det = best_time(lambda: detect_stars(img, background=bkg), repeats)
        t_all = best_time(lambda: frame_quality(img), repeats)
        sub = img - bkg.level

        def sep_extract():
            sep.set_extract_pixstack(5_000_000)
            return sep.extract(sub, 5.0, err=bkg.rms, minarea=5, clean=False)

        t_sep = best_time(sep_extract, repeats)
        q = frame_quality(img)
        rows.append(dict(shape=list(shape), profile=f"{psf} {beta or ''}".strip(), fwhm=fwhm,
                         stars=q.star_count, background_s=t_bkg[0], detect_measure_s=t_det[0],
                         frame_quality_s=t_all[0], frame_quality_median_s=t_all[1],
                         sep_extract_s=t_sep[0]))
    print(f"\nTime per frame (best of runs, one core), {shape[1]}x{shape[0]}:")
    print(f"{'profile':>12} {'FWHM':>5} {'stars':>6} {'backgr.':>8} {'detect':>8} "
          f"{'total':>8} {'(median)':>9} {'sep.extract':>12}")
    for r in rows:
        print(f"{r['profile']:>12} {r['fwhm']:5.1f} {r['stars']:6d} {r['background_s']:8.3f} "
              f"{r['detect_measure_s']:8.3f} {r['frame_quality_s']:8.3f} "
              f"{r['frame_quality_median_s']:9.3f} {r['sep_extract_s']:12.3f}")
    return rows


def _sep_sizes(img, x, y, fwhm):
    """FWHM from sep: isophotal second moments and twice the half-flux radius."""
    objs = sep.extract(img, 5.0, err=10.0, minarea=5)
    tree = cKDTree(np.stack([objs["x"], objs["y"]], 1))
    d, i = tree.query(np.stack([x, y], 1))
    o = objs[i[d < 1.5]]
    iso = FWHM_PER_SIGMA * np.sqrt(o["a"] * o["b"])
    r50, _ = sep.flux_radius(img, o["x"], o["y"], np.full(len(o), 4.0 * fwhm), 0.5,
                             subpix=5)
    return np.median(iso), np.median(2.0 * r50)


def bench_fwhm(quick):
    fwhms = (2.0, 3.0, 6.0) if quick else (2.0, 3.0, 4.0, 6.0)
    methods = ("pipeline", "moffat fit", "point-sampled", "gaussian fit", "win. moments",
               "sep isophote", "2 x sep r50")
    rows = []
    for psf, beta in PROFILES:
        for fwhm in fwhms:
            img, x, y = grid(fwhm, psf, beta, n=64 if quick else 144, seed=int(10 * fwhm))
            q = frame_quality(img + 500.0)
            fit = fit_psf(img, x, y, fwhm_guess=fwhm)
            point = fit_psf(img, x, y, fwhm_guess=fwhm, integrate=False)
            gauss = fit_psf(img, x, y, fwhm_guess=fwhm, gaussian=True)
            win = windowed_measure(img, x, y, sigma=fwhm / FWHM_PER_SIGMA)
            iso, r50 = _sep_sizes(img, x, y, fwhm)
            values = (q.fwhm, np.median(fit.shape.fwhm), np.median(point.shape.fwhm),
                      np.median(gauss.shape.fwhm), np.nanmedian(win.shape.fwhm), iso, r50)
            rows.append(dict(profile=f"{psf} {beta or ''}".strip(), fwhm=fwhm,
                             **{m: float(v / fwhm - 1) for m, v in zip(methods, values)}))
    print("\nFWHM error (median over isolated SNR 200 stars, measured / true - 1):")
    print(f"{'profile':>12} {'FWHM':>5} " + " ".join(f"{m:>13}" for m in methods))
    for r in rows:
        print(f"{r['profile']:>12} {r['fwhm']:5.1f} "
              + " ".join(f"{100 * r[m]:+12.1f}%" for m in methods))
    return rows


def bench_detection(quick):
    shape = (1000, 1500) if quick else (2000, 3000)
    n = 500 if quick else 2000
    rows = []
    for fwhm, psf, beta in ((2.0, "gaussian", 0.0), (3.0, "moffat", 3.0), (6.0, "gaussian", 0.0)):
        img, t = field(shape, n, fwhm, psf=psf, beta=beta, seed=2)
        h, w = shape
        m = 2 * fwhm
        inside = (t["x"] > m) & (t["y"] > m) & (t["x"] < w - 1 - m) & (t["y"] < h - 1 - m)
        bright = inside & (t["snr"] >= 10)
        q = frame_quality(img)
        found, false, d, i = match(q.catalog.xy, t["x"], t["y"])
        cen = np.median(d[(d <= 1) & (t["snr"][i] >= 50)])
        bkg = estimate_background(img)
        sep.set_extract_pixstack(5_000_000)
        objs = sep.extract(img - bkg.level, 5.0, err=bkg.rms, minarea=5, clean=False)
        s_found, s_false, s_d, s_i = match(np.stack([objs["x"], objs["y"]], 1), t["x"], t["y"])
        xw, yw, _ = sep.winpos(img - bkg.level, objs["x"], objs["y"],
                               np.full(len(objs), fwhm / FWHM_PER_SIGMA))
        _, _, w_d, w_i = match(np.stack([xw, yw], 1), t["x"], t["y"])
        w_cen = np.median(w_d[(w_d <= 1) & (t["snr"][w_i] >= 50)])
        level_err = float(np.max(np.abs(bkg.level / t["background"] - 1)))
        rows.append(dict(profile=f"{psf} {beta or ''}".strip(), fwhm=fwhm,
                         complete=float(found[bright].mean()), false=float(false.mean()),
                         sep_complete=float(s_found[bright].mean()),
                         sep_false=float(s_false.mean()), centroid=float(cen),
                         sep_winpos_centroid=float(w_cen), fwhm_error=q.fwhm / fwhm - 1,
                         background_max_error=level_err,
                         noise_map_error=float(bkg.global_rms / t["noise"] - 1),
                         noise_error=float(q.noise / t["noise"] - 1)))
    print(f"\nDetection on {shape[1]}x{shape[0]} with {n} stars (>= 10 sigma complete, "
          "false = no true star within 1 px), centroid = median error of SNR >= 50 stars:")
    print(f"{'profile':>12} {'FWHM':>5} {'complete':>9} {'false':>7} {'sep compl.':>11} "
          f"{'sep false':>10} {'centroid':>9} {'sep.winpos':>11} {'FWHM err':>9} "
          f"{'bg max err':>11} {'sep rms err':>12} {'noise err':>10}")
    for r in rows:
        print(f"{r['profile']:>12} {r['fwhm']:5.1f} {100 * r['complete']:8.1f}% "
              f"{100 * r['false']:6.2f}% {100 * r['sep_complete']:10.1f}% "
              f"{100 * r['sep_false']:9.2f}% {r['centroid']:9.4f} "
              f"{r['sep_winpos_centroid']:11.4f} {100 * r['fwhm_error']:+8.2f}% "
              f"{100 * r['background_max_error']:10.2f}% {100 * r['noise_map_error']:+11.2f}% "
              f"{100 * r['noise_error']:+9.2f}%")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller fields, fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    results = {"speed": bench_speed(args.quick), "fwhm": bench_fwhm(args.quick),
               "detection": bench_detection(args.quick)}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
