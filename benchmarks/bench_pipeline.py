"""The whole pipeline, oscdeep against Siril (siril-cli 1.0.6), on the same FITS, alternating.

Nights (generated once, cached in the work dir; FITS uint16, RGGB, default clouds, bad seeing
and satellite): 24 lights of 1600x1200 and 40 lights of 3000x2000, each with 15 bias, 15 darks
and 15 flats. Per night, ``--runs`` rounds of, in this order:

  * oscdeep `run` (fresh library): `oscdeep --db DB run NIGHT -o OUT.fits --no-picture`, the
    whole thing up to the stack (ingest, masters, analysis, automatic outlier rejection,
    registration, winsorized stack), where Siril's script ends too.
  * Siril, one script on symbolic links to the same files (SIRIL_SCRIPT below): link, stack
    bias and darks (winsorized 3/3), preprocess the flats with the bias and stack them
    (multiplicative), preprocess the lights with dark and flat (-cfa -equalize_cfa -debayer,
    its standard OSC script: the master dark keeps the bias), register, stack (winsorized 3/3,
    additive with scaling, -output_norm). 32-bit, 2 threads. Siril stacks every light it
    registered: it has no outlier rejection.
  * oscdeep "all frames" (fresh library): the separate commands `session add`, `calib build`,
    `frames analyze`, `register`, `stack build --target T --weight none` without `frames
    reject --auto` (`run` has no switch to keep outliers), so oscdeep stacks the same frames
    as Siril with equal weights, as Siril's script does (`run` weights frames by their
    SNR^2: sharper stars for a few per cent more background noise); each command timed with
    its own memory.

Each command runs under bench_analysis' launcher: wall, CPU, peak RSS of its largest process
and peak PSS summed over its process tree (pool workers included; sampled every 0.1 s), and the
CPU the rest of the machine used meanwhile (contention). Files are read from a warm page cache;
an untimed oscdeep run first fills the numba cache.

Then: a re-stack of the last "all frames" library with another selection (`--select
'fwhm:..X'`, X = median FWHM: warped frames come from the cache) against its first `stack
build`; the results' background noise and star FWHM, scored the same way for both (see
`score`); the same frames stacked with `--debayer vng --interp bilinear`, timed and scored; and
optionally (--big-night N) the peak memory of `oscdeep run` on an N-light 1600x1200 night.

    python benchmarks/bench_pipeline.py [--workdir /tmp/bench-pipeline] [--runs 3]
        [--big-runs 2] [--big-night 200] [--nights small,big]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analysis import Measured, run_measured, siril_command_spans, siril_script  # noqa: E402
from bench_masters import (  # noqa: E402
    OSCDEEP, SIGMA_HIGH, SIGMA_LOW, SIRIL, cached_night, siril_script_text, siril_version,
    warm_page_cache)

TARGET = "M42"  # NightConfig's default target (OBJECT header)
KINDS = ("bias", "darks", "flats", "lights")

SIRIL_SCRIPT = siril_script_text(
    "preprocess light -dark=master_dark -flat=master_flat -cfa -equalize_cfa -debayer\n"
    "register pp_light\n"
    f"stack r_pp_light rej w {SIGMA_LOW:g} {SIGMA_HIGH:g} -norm=addscale -output_norm -out=result\n")


@dataclass
class Run:
    """One run of one variant: per-step wall s, CPU s, peaks (largest process, tree PSS)."""

    steps: dict[str, float] = field(default_factory=dict)
    step_mib: dict[str, float] = field(default_factory=dict)  # tree PSS per command
    cpu: float = 0.0
    peak_mib: float = 0.0
    tree_mib: float = 0.0
    other_cpu: float = 0.0
    output: Path | None = None
    frames: int | None = None
    stack_seconds: float = float("nan")  # `stack build`'s own time (its --json "seconds")

    def add(self, key: str, m: Measured) -> None:
        self.steps[key] = m.wall
        self.step_mib[key] = m.tree_mib
        self.cpu += m.cpu
        self.peak_mib = max(self.peak_mib, m.peak_mib)
        self.tree_mib = max(self.tree_mib, m.tree_mib)
        self.other_cpu += m.other_cpu

    @property
    def total(self) -> float:
        return self.steps["total"] if "total" in self.steps else sum(self.steps.values())


def make_night(workdir: Path, lights: int, width: int, height: int, seed: int) -> Path:
    """The night of this benchmark: ``lights`` lights and 15 bias, darks and flats each."""
    return cached_night(workdir, lights=lights, calib=15, width=width, height=height,
                        seed=seed)


def _env(numba_cache: Path) -> dict[str, str]:
    return dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache))


def _fresh(run_dir: Path) -> Path:
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    return run_dir


# ---------------------------------------------------------------- oscdeep

def oscdeep_run(night: Path, run_dir: Path, numba_cache: Path) -> Run:
    """`oscdeep run`: the whole pipeline in one command, fresh library; it stops at the stack
    (--no-picture) as Siril's script does."""
    _fresh(run_dir)
    out = run_dir / "run.fits"
    m = run_measured([*OSCDEEP, "--db", str(run_dir / "lib.db"), "run", str(night), "-o",
                      str(out), "--no-picture"], run_dir / "run.log", _env(numba_cache))
    r = Run(output=out)
    r.add("total", m)
    r.frames = _stacked_frames(run_dir)
    return r


def oscdeep_commands(night: Path, run_dir: Path, numba_cache: Path) -> Run:
    """The separate commands, fresh library: every frame (no automatic outlier rejection)
    with equal weights, the steps of the Siril script."""
    _fresh(run_dir)
    db = ["--db", str(run_dir / "lib.db")]
    env = _env(numba_cache)
    out = run_dir / "all.fits"
    r = Run(output=out)
    for key, args in [("ingest", ["session", "add", str(night)]),
                      ("masters", ["calib", "build"]),
                      ("analyze", ["frames", "analyze"]),
                      ("register", ["register"]),
                      ("stack", ["stack", "build", "--target", TARGET, "-o", str(out),
                                 "--weight", "none", "--json"])]:
        m = run_measured([*OSCDEEP, *db, *args], run_dir / f"{key}.log", env)
        r.add(key, m)
        if key == "stack":
            built = json.loads(m.text)
            r.frames = int(built["frames"])
            r.stack_seconds = float(built["seconds"])
    return r


def _stacked_frames(run_dir: Path) -> int | None:
    """Frames in the library's last stack (`stack list --json`)."""
    res = subprocess.run([*OSCDEEP, "--db", str(run_dir / "lib.db"), "stack", "list", "--json"],
                         capture_output=True, text=True)
    try:
        stacks = json.loads(res.stdout)
        return int(stacks[-1].get("frames") or stacks[-1].get("n_frames"))
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        return None


def restack(run_dir: Path, numba_cache: Path) -> tuple[float, Measured, dict]:
    """Stack again with `fwhm:..median`: warped frames come from the cache."""
    db = ["--db", str(run_dir / "lib.db")]
    res = subprocess.run([*OSCDEEP, *db, "frames", "list", "--kind", "light", "--json"],
                         capture_output=True, text=True, check=True)
    fwhm = [f["fwhm_px"] for f in json.loads(res.stdout) if f.get("fwhm_px")]
    x = round(float(statistics.median(fwhm)), 3)
    m = run_measured([*OSCDEEP, *db, "stack", "build", "--target", TARGET, "--select",
                      f"fwhm:..{x}", "--weight", "none", "-o", str(run_dir / "restack.fits"),
                      "--json"], run_dir / "restack.log", _env(numba_cache))
    return x, m, json.loads(m.text)


def linear_stack(run_dir: Path, numba_cache: Path, label: str, first: Run,
                 siril_result: Path | None) -> None:
    """The same frames stacked with `--debayer bilinear --interp bicubic` (equal weights), the
    linear pair that was the default before VNG became fast: its time against the default
    stack build of the same library, and its noise and sharpness scored against Siril's."""
    out = run_dir / "linear.fits"
    m = run_measured([*OSCDEEP, "--db", str(run_dir / "lib.db"), "stack", "build", "--target",
                      TARGET, "--debayer", "bilinear", "--interp", "bicubic", "--weight", "none",
                      "-o", str(out), "--json"], run_dir / "linear.log", _env(numba_cache))
    own = float(json.loads(m.text)["seconds"])
    print(f"\n--debayer bilinear --interp bicubic ({label}, all frames, equal weights): stack "
          f"build {m.wall:.2f} s against {first.steps['stack']:.2f} s with the defaults (inside "
          f"the command {own:.2f} s against {first.stack_seconds:.2f} s)", flush=True)
    if siril_result is not None:
        try:
            print_score(f"{label}, bilinear + bicubic warp vs Siril", score(out, siril_result))
        except Exception as exc:  # noqa: BLE001 - scoring must not lose the timings
            print(f"scoring the bilinear stack failed: {exc!r}")


# ---------------------------------------------------------------- Siril

def siril_run(night: Path, run_dir: Path) -> Run:
    _fresh(run_dir)
    for kind in KINDS:
        folder = run_dir / "in" / kind
        folder.mkdir(parents=True)
        for src in sorted((night / kind).glob("*.fits")):
            (folder / (src.stem + ".fit")).symlink_to(src)  # .fit: Siril's default extension
    (run_dir / "process").mkdir()
    (run_dir / "pipeline.ssf").write_text(SIRIL_SCRIPT)
    m = siril_script(run_dir, "pipeline")
    spans = siril_command_spans(m.lines, m.wall)
    stacks = [s for c, _, s in spans if c == "stack"]
    pre = [s for c, _, s in spans if c == "preprocess"]
    r = Run(output=run_dir / "process" / "result.fit")
    r.steps = {"start-up": spans[0][1] if spans else 0.0,
               "ingest": sum(s for c, _, s in spans if c in ("link", "cd")),
               "masters": stacks[0] + stacks[1] + pre[0] + stacks[2],
               "calibrate+debayer": pre[1],
               "register": sum(s for c, _, s in spans if c == "register"),
               "stack": stacks[3]}
    r.cpu, r.peak_mib, r.tree_mib, r.other_cpu = m.cpu, m.peak_mib, m.tree_mib, m.other_cpu
    r.steps["total"] = m.wall
    r.frames = _siril_stacked(m.text)
    return r


def _siril_stacked(text: str) -> int | None:
    """Number of images in Siril's last stack, from its log ('... N images ...')."""
    import re

    found = re.findall(r"(\d+) images have been stacked", text)
    return int(found[-1]) if found else None


# ---------------------------------------------------------------- scoring

def _load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) float32, top-down as the reader gives it (orientation decided by matching)."""
    from oscdeep.io.fits import read_fits_image

    img, _ = read_fits_image(path)
    if img.ndim != 3:
        raise SystemExit(f"{path}: not an RGB image ({img.shape})")
    return img.astype(np.float32)


def _stars(green: np.ndarray) -> np.ndarray:
    from oscdeep.stars import detect_stars

    cat = detect_stars(green, threshold=10.0, max_stars=800)
    return cat.xy


def _match(a: np.ndarray, b: np.ndarray, tol: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (ia, ib) of stars of a and b after the most common offset between them."""
    from scipy.spatial import cKDTree

    from oscdeep.transform import fit_transform

    na, nb = a[:80], b[:80]
    d = (nb[None, :, :] - na[:, None, :]).reshape(-1, 2)
    key = np.round(d / 2.0).astype(int)
    uniq, counts = np.unique(key, axis=0, return_counts=True)
    coarse = uniq[np.argmax(counts)] * 2.0
    near = np.all(np.abs(d - coarse) <= 3.0, axis=1)
    shift = np.median(d[near], axis=0) if near.any() else coarse
    tree = cKDTree(b)
    moved = a + shift
    for _ in range(3):  # refine with an affine fit: the two references differ by a rotation
        dist, ib = tree.query(moved, distance_upper_bound=3 * tol)
        ok = np.isfinite(dist)
        if ok.sum() < 6:
            break
        moved = fit_transform(a[ok], b[ib[ok]]).apply(a)
    dist, ib = tree.query(moved, distance_upper_bound=tol)
    ok = np.isfinite(dist)
    return np.flatnonzero(ok), ib[ok]


def _binned_noise(plane: np.ndarray, k: int = 4) -> float:
    """Background noise of the plane averaged in k x k blocks: what is left once the
    pixel-to-pixel correlation of debayering and interpolation (which lowers the per-pixel
    figure without adding information) is averaged out."""
    from oscdeep.stars import estimate_background

    h, w = (plane.shape[0] // k) * k, (plane.shape[1] // k) * k
    binned = plane[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    return estimate_background(binned, box=32).global_rms


def _median_fwhm(rgb: np.ndarray, crop: float = 0.6) -> float:
    """Median FWHM (px) of the PSF-fitted stars of the green plane's central ``crop``: how
    sharp a result is, since a smoother result also has less noise per pixel."""
    from oscdeep.stars import frame_quality

    h, w = rgb.shape[:2]
    y0, x0 = int(h * (1 - crop) / 2), int(w * (1 - crop) / 2)
    return frame_quality(np.ascontiguousarray(rgb[y0:h - y0, x0:w - x0, 1],
                                              dtype=np.float32)).fwhm


def score(osc_path: Path, siril_path: Path, crop: float = 0.6) -> dict:
    """Background noise per channel in the same units for both results.

    Each result, per channel: `estimate_background` (sep, 64 px meshes) on the central
    ``crop`` of the plane, its `global_rms` = background noise. Units differ (Siril: 0..1
    after -output_norm; oscdeep: ADU), so the stars both results share set the scale: stars
    are detected on each green plane, matched (Siril's image tried as read and flipped
    upside down, the better one kept), and per channel the scale s = median(flux_Siril /
    flux_oscdeep) of sky-subtracted 5 px aperture sums. Noise ratio = (noise_Siril / s) /
    noise_oscdeep: < 1 means Siril's background is quieter for the same star signal. The
    same ratio is also given for 4x4-binned planes (`_binned_noise`), since debayering and
    interpolation smooth pixel noise differently in the two programs.
    """
    import sep

    from oscdeep.stars import estimate_background

    osc, sir = _load_rgb(osc_path), _load_rgb(siril_path)
    best = None
    for flipped in (False, True):
        cand = sir[::-1] if flipped else sir
        xo, xs = _stars(osc[..., 1]), _stars(np.ascontiguousarray(cand[..., 1]))
        io_, is_ = _match(xo, xs)
        if best is None or len(io_) > len(best[1]):
            best = (flipped, io_, is_, xo, xs, cand)
    flipped, io_, is_, xo, xs, sir = best
    out = {"siril_flipped": flipped, "matched": len(io_), "channels": [],
           "fwhm": [_median_fwhm(osc), _median_fwhm(sir)]}
    for c, name in enumerate("RGB"):
        row = {"channel": name}
        fluxes = []
        for img, xy in ((osc, xo[io_]), (sir, xs[is_])):
            plane = np.ascontiguousarray(img[..., c], dtype=np.float32)
            h, w = plane.shape
            y0, x0 = int(h * (1 - crop) / 2), int(w * (1 - crop) / 2)
            bkg_crop = estimate_background(plane[y0:h - y0, x0:w - x0])
            bkg = estimate_background(plane)
            sub = np.nan_to_num(plane - bkg.level)
            flux, _, _ = sep.sum_circle(sub, xy[:, 0], xy[:, 1], 5.0)
            fluxes.append(flux)
            row.setdefault("noise", []).append(bkg_crop.global_rms)
            row.setdefault("binned", []).append(_binned_noise(plane[y0:h - y0, x0:w - x0]))
            row.setdefault("level", []).append(bkg_crop.global_level)
        good = (fluxes[0] > 0) & (fluxes[1] > 0)
        s = float(np.median(fluxes[1][good] / fluxes[0][good]))
        row["scale"] = s
        row["ratio"] = (row["noise"][1] / s) / row["noise"][0]
        row["binned_ratio"] = (row["binned"][1] / s) / row["binned"][0]
        out["channels"].append(row)
    return out


def print_score(label: str, sc: dict) -> None:
    print(f"\nNoise of the results ({label}; central 60 %, sep background rms per channel; "
          f"Siril {'flipped upside down' if sc['siril_flipped'] else 'as read'}, "
          f"{sc['matched']} stars matched):")
    print(f"  {'ch':3} {'oscdeep noise':>14} {'Siril noise':>12} {'scale S/O':>10} "
          f"{'Siril in osc units':>19} {'oscdeep/Siril':>14} {'4x4 binned: o/S':>16}")
    for row in sc["channels"]:
        n_o, n_s = row["noise"]
        print(f"  {row['channel']:3} {n_o:14.4g} {n_s:12.4g} {row['scale']:10.4g} "
              f"{n_s / row['scale']:19.4g} {1 / row['ratio']:13.3f}x "
              f"{1 / row['binned_ratio']:15.3f}x")
    fwhm_o, fwhm_s = sc["fwhm"]
    print(f"  star FWHM (green, median of fitted stars): oscdeep {fwhm_o:.3f} px, Siril "
          f"{fwhm_s:.3f} px ({fwhm_o / fwhm_s:.3f}x)")
    print("  (oscdeep/Siril < 1: oscdeep's background is quieter for the same star flux; "
          "scale = median Siril/oscdeep flux of the matched stars)")


# ---------------------------------------------------------------- report

def _med(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f}" if values else f"{'-':>7}"


def print_night(label: str, runs: dict[str, list[Run]], siril_ref: tuple[float, float]) -> None:
    sir, cmd = runs["Siril"], runs["oscdeep all frames"]
    print(f"\n=== {label}: {len(sir)} runs each, alternating (oscdeep run, Siril, "
          f"oscdeep all frames) ===")
    print(f"{'variant':<22} {'runs (wall s)':<26} {'median':>7} {'/Siril':>7} {'CPU s':>7} "
          f"{'RSS MiB':>8} {'PSS tree':>9} {'/Siril':>7} {'frames':>7} {'other CPU-s':>12}")
    s_med = statistics.median(r.total for r in sir)
    s_mem = max(r.tree_mib for r in sir)
    for name, rs in runs.items():
        walls = [r.total for r in rs]
        med = statistics.median(walls)
        mem = max(r.tree_mib for r in rs)
        print(f"{name:<22} {' '.join(f'{w:6.2f}' for w in walls):<26} {med:7.2f} "
              f"{med / s_med:6.2f}x {statistics.median(r.cpu for r in rs):7.1f} "
              f"{max(r.peak_mib for r in rs):8.0f} {mem:9.0f} {mem / s_mem:6.2f}x "
              f"{str(rs[-1].frames):>7} {' '.join(f'{r.other_cpu:.0f}' for r in rs):>12}")
    print(f"(issue's Siril reference on this machine: {siril_ref[0]:.0f} s, "
          f"{siril_ref[1]:.0f} MiB; RSS = largest process, PSS tree = sum over the process "
          f"tree incl. pool workers; other CPU-s = CPU the rest of the machine used per run)")
    steps = ["ingest", "masters", "analyze", "calibrate+debayer", "register", "stack",
             "start-up"]
    print(f"  per step, median s: {'step':<18} {'oscdeep cmds':>12} {'Siril':>8} "
          f"{'oscdeep PSS MiB':>16}")
    for st in steps:
        o = [r.steps[st] for r in cmd if st in r.steps]
        s = [r.steps[st] for r in sir if st in r.steps]
        mib = [r.step_mib[st] for r in cmd if st in r.step_mib]
        if o or s:
            print(f"  {'':20} {st:<18} {_med(o):>12} {_med(s):>8} "
                  f"{f'{max(mib):16.0f}' if mib else f'{chr(45):>16}'}")
    print("  (oscdeep `frames analyze` calibrates each light and measures its stars; its "
          "`stack build` calibrates, debayers and warps again, then integrates. Siril's "
          "preprocess writes calibrated debayered frames, register writes warped ones.)")


def bench_night(args: argparse.Namespace, night: Path, tag: str, runs: int,
                numba_cache: Path) -> dict[str, list[Run]]:
    warm_page_cache(night)
    out: dict[str, list[Run]] = {"oscdeep run": [], "Siril": [], "oscdeep all frames": []}
    for i in range(runs):
        for name, fn in (("oscdeep run", lambda d: oscdeep_run(night, d, numba_cache)),
                         ("Siril", lambda d: siril_run(night, d)),
                         ("oscdeep all frames",
                          lambda d: oscdeep_commands(night, d, numba_cache))):
            run_dir = args.workdir / f"{tag}-{name.replace(' ', '_')}"
            r = fn(run_dir)
            out[name].append(r)
            print(f"{tag} round {i + 1} {name}: {r.total:.2f} s, CPU {r.cpu:.1f} s, "
                  f"RSS {r.peak_mib:.0f} MiB, PSS tree {r.tree_mib:.0f} MiB, frames {r.frames}, "
                  f"other processes {r.other_cpu:.1f} CPU-s"
                  + (f"  steps {', '.join(f'{k} {v:.2f}' for k, v in r.steps.items())}"
                     if name != "oscdeep run" else ""), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-pipeline"))
    parser.add_argument("--runs", type=int, default=3, help="rounds on the 24-light night")
    parser.add_argument("--big-runs", type=int, default=2, help="rounds on the 40-light night")
    parser.add_argument("--nights", default="small,big",
                        help="which nights to time: small (24 lights), big (40 lights)")
    parser.add_argument("--big-night", type=int, default=0,
                        help="lights of a 1600x1200 night for the memory check (0: skip)")
    args = parser.parse_args()
    if shutil.which(SIRIL) is None or shutil.which("stdbuf") is None:
        raise SystemExit(f"{SIRIL} and stdbuf are needed (Debian: apt install siril coreutils)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, {siril_version()}; "
          f"load average at start {os.getloadavg()}", flush=True)
    small = make_night(args.workdir, 24, 1600, 1200, 21)
    numba_cache = args.workdir / "numba-cache"
    warm_page_cache(small)
    t0 = time.perf_counter()
    oscdeep_run(small, args.workdir / "warm-up", numba_cache)
    print(f"untimed warm-up oscdeep run (fills the numba cache): "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    chosen = set(args.nights.split(","))
    nights = [("24 lights 1600x1200", small, "small", args.runs, (15.0, 330.0))]
    if "small" not in chosen:
        nights = []
    if "big" in chosen:
        big = make_night(args.workdir, 40, 3000, 2000, 22)
        nights.append(("40 lights 3000x2000", big, "big", args.big_runs, (72.0, 1178.0)))
    results = {}
    for label, night, tag, n, ref in nights:
        results[tag] = bench_night(args, night, tag, n, numba_cache)
        print_night(label, results[tag], ref)
        last = results[tag]
        for name in ("oscdeep run", "oscdeep all frames"):
            try:
                print_score(f"{label}, {name} vs Siril",
                            score(last[name][-1].output, last["Siril"][-1].output))
            except Exception as exc:  # noqa: BLE001 - scoring must not lose the timings
                print(f"scoring {name} failed: {exc!r}")
        cmd_dir = args.workdir / f"{tag}-oscdeep_all_frames"
        x, m, rep = restack(cmd_dir, numba_cache)
        first_run = results[tag]["oscdeep all frames"][-1]
        first = first_run.steps["stack"]
        own = rep.get("seconds", float("nan"))
        first_own = first_run.stack_seconds
        print(f"\nRe-stack ({label}) with --select 'fwhm:..{x}' (median FWHM): {m.wall:.2f} s "
              f"(first stack build of the same library {first:.2f} s: {m.wall / first:.2f}x; "
              f"inside the command, without Python's start-up and imports: {own:.2f} s vs "
              f"{first_own:.2f} s, {own / first_own:.2f}x), {rep.get('frames')} frames, "
              f"{rep.get('warped')} warped, {rep.get('cached')} from the cache, PSS tree "
              f"{m.tree_mib:.0f} MiB, other processes {m.other_cpu:.1f} CPU-s", flush=True)
        linear_stack(cmd_dir, numba_cache, label, first_run, last["Siril"][-1].output)

    if args.big_night:
        night = make_night(args.workdir, args.big_night, 1600, 1200, 23)
        warm_page_cache(night)
        r = oscdeep_run(night, args.workdir / "many-oscdeep_run", numba_cache)
        small_mem = (max(x.tree_mib for x in results["small"]["oscdeep run"])
                     if "small" in results else float("nan"))
        print(f"\n{args.big_night}-light 1600x1200 night, oscdeep run: {r.total:.1f} s, "
              f"RSS {r.peak_mib:.0f} MiB, PSS tree {r.tree_mib:.0f} MiB "
              f"(24-light night: {small_mem:.0f} MiB), {r.frames} frames stacked, "
              f"other processes {r.other_cpu:.1f} CPU-s")
    print("\nSiril script:\n" + SIRIL_SCRIPT)


if __name__ == "__main__":
    main()
