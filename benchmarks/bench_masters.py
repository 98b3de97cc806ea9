"""Master calibrations from 30 frames of 3000x2000: oscdeep against Siril (siril-cli) in one run.

Generates (once, cached in the work dir) a calibration-only night of 30 bias, 30 darks and
30 flats (FITS uint16, RGGB) and builds master bias, dark and flat with both programs:

  * oscdeep: a fresh library per run, `session add` (timed as the ingest), then
    `calib build --json` (winsorized 3/3; darks keep their bias; flats minus the master bias,
    multiplicative normalisation). The first run uses an empty numba cache (what a fresh
    install pays); the other runs reuse that cache.
  * Siril: a script run by `siril-cli -s` in its own work dir on symbolic links to the
    night's files: `link` (its ingest), `stack` bias and darks (winsorized 3/3, no
    normalisation), `preprocess` the flats with the master bias, `stack` them (winsorized
    3/3, multiplicative), 32-bit float output, 2 threads, half of the memory.

Each command runs under a small launcher process, so its peak RSS is its own (not inherited
through fork from this process); files are read from a warm page cache. Siril's steps are
timed from its own log, stamped line by line as it arrives. Then both sets of masters are
checked against the night's truth (bias noise, flat ratio, dark residual) and each other.

    python benchmarks/bench_masters.py [--workdir /tmp/bench-masters] [--runs 3] [--frames 30]
"""

from __future__ import annotations

import argparse
import importlib.util
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

OSCDEEP = [sys.executable, "-m", "oscdeep"]
SIRIL = "siril-cli"
SIGMA_LOW, SIGMA_HIGH = 3.0, 3.0  # winsorized rejection, given to both programs

# Runs argv[2:], writes its stdout lines to argv[1] each prefixed by the seconds since start,
# its stderr to argv[1] + ".err", and prints: exit code, wall seconds, peak RSS KiB, CPU seconds.
LAUNCHER = r"""
import resource, subprocess, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], "w") as log, open(sys.argv[1] + ".err", "w") as err:
    p = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=err, text=True,
                         errors="replace")
    for line in p.stdout:
        log.write(f"{time.perf_counter() - t0:.3f}\t{line}")
    code = p.wait()
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(code, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
"""

def siril_script_text(light_steps: str = "") -> str:
    """The Siril script on ``in/{bias,darks,flats}``: link the frames, stack master bias and
    dark and the bias-subtracted flats (winsorized, as oscdeep does), then ``light_steps``
    (given, the lights in ``in/lights`` are linked too). Shared by the benchmarks."""
    lights = "cd ../lights\nlink light -out=../../process\n" if light_steps else ""
    return f"""\
requires 1.0.0
set32bits
setmem 0.5
setcpu 2
cd in/bias
link bias -out=../../process
cd ../darks
link dark -out=../../process
cd ../flats
link flat -out=../../process
{lights}cd ../../process
stack bias rej w {SIGMA_LOW:g} {SIGMA_HIGH:g} -nonorm -out=master_bias
stack dark rej w {SIGMA_LOW:g} {SIGMA_HIGH:g} -nonorm -out=master_dark
preprocess flat -bias=master_bias
stack pp_flat rej w {SIGMA_LOW:g} {SIGMA_HIGH:g} -norm=mul -out=master_flat
{light_steps}close
"""


SIRIL_SCRIPT = siril_script_text()


@dataclass
class Measured:
    """One command's wall time, peak RSS, CPU time and its stdout lines stamped with seconds."""

    wall: float
    peak_mib: float
    cpu: float
    other_cpu: float  # CPU seconds the rest of the machine used meanwhile
    lines: list[tuple[float, str]]

    @property
    def text(self) -> str:
        return "".join(line for _, line in self.lines)


@dataclass
class RunTimes:
    """Seconds per task of one run of one program (missing task: not measured)."""

    steps: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    other_cpu: float = 0.0


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (0 where /proc is missing)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_measured(args: list[str], log: Path, env: dict[str, str] | None = None) -> Measured:
    """Run a command through the launcher; raise SystemExit with its stderr if it fails."""
    busy0 = _busy_cpu_seconds()
    res = subprocess.run([sys.executable, "-c", LAUNCHER, str(log), *args], capture_output=True,
                         text=True, env=env)
    try:
        code, wall, peak_kib, cpu = res.stdout.split()
    except ValueError:
        raise SystemExit(f"launcher failed for {' '.join(args)}:\n{res.stderr}") from None
    other = max(0.0, _busy_cpu_seconds() - busy0 - float(cpu or 0))
    lines = []
    for raw in log.read_text().splitlines(keepends=True):
        stamp, _, line = raw.partition("\t")
        lines.append((float(stamp), line))
    if int(code) != 0:
        err = Path(str(log) + ".err").read_text()
        tail = "".join(line for _, line in lines[-30:])
        raise SystemExit(f"failed ({code}): {' '.join(args)}\n{err[-3000:]}\n{tail}")
    return Measured(float(wall), int(peak_kib) / 1024.0, float(cpu), other, lines)


def cached_night(workdir: Path, *, lights: int, calib: int, width: int, height: int,
                 seed: int) -> Path:
    """A synthetic night (``calib`` bias, darks and flats each), generated once and reused
    while its truth is there. Shared by the benchmarks."""
    from oscdeep.pipeline.sample_night import write_sample_night
    from oscdeep.synth import NightConfig

    night = workdir / f"night_{lights}L_{calib}C_{width}x{height}_s{seed}"
    if (night / "truth" / "truth.npz").exists():
        return night
    config = NightConfig(width=width, height=height, n_lights=lights, n_bias=calib,
                         n_darks=calib, n_flats=calib, seed=seed)
    t0 = time.perf_counter()
    write_sample_night(night, config)
    size = sum(p.stat().st_size for p in night.rglob("*.fits")) / 2**30
    print(f"generated {lights} lights + {3 * calib} calibration frames of {width}x{height} in "
          f"{time.perf_counter() - t0:.1f} s ({size:.2f} GiB) in {night}", flush=True)
    return night


def make_night(workdir: Path, frames: int, width: int, height: int, seed: int) -> Path:
    """The calibration-only night of this benchmark."""
    return cached_night(workdir, lights=0, calib=frames, width=width, height=height, seed=seed)


def warm_page_cache(night: Path) -> None:
    for path in sorted(night.rglob("*.fits")):
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


# ---------------------------------------------------------------- oscdeep

def oscdeep_run(night: Path, run_dir: Path, numba_cache: Path) -> RunTimes:
    """Fresh library: ingest the night, then build every master; time both commands."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    db = run_dir / "lib.db"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache))
    add = run_measured([*OSCDEEP, "--db", str(db), "session", "add", str(night)],
                       run_dir / "add.log", env)
    build = run_measured([*OSCDEEP, "--db", str(db), "calib", "build", "--method", "winsorized",
                          "--low", str(SIGMA_LOW), "--high", str(SIGMA_HIGH), "--json"],
                         run_dir / "build.log", env)
    report = json.loads(build.text)
    times = RunTimes()
    times.steps["ingest"] = add.wall
    times.peaks["ingest"] = add.peak_mib
    for group in report["groups"]:
        if group["status"] != "built":
            raise SystemExit(f"oscdeep did not build {group['kind']}: {group}")
        times.steps[group["kind"]] = group["seconds"]
    times.steps["build"] = build.wall
    times.peaks["build"] = build.peak_mib
    times.cpu["build"] = build.cpu
    times.other_cpu = add.other_cpu + build.other_cpu
    times.steps["start-up"] = build.wall - sum(times.steps[k] for k in ("bias", "dark", "flat"))
    times.steps["total"] = add.wall + build.wall
    times.peaks["total"] = max(add.peak_mib, build.peak_mib)
    return times


def oscdeep_masters(run_dir: Path) -> dict[str, Path]:
    masters = run_dir / "lib.db.files" / "masters"
    return {kind: next((masters / kind).glob("*.fits")) for kind in ("bias", "dark", "flat")}


# ---------------------------------------------------------------- Siril

def siril_version() -> str:
    res = subprocess.run([SIRIL, "--version"], capture_output=True, text=True, check=True)
    return res.stdout.strip()


def siril_prepare(night: Path, run_dir: Path) -> Path:
    """Siril's own work dir: links to the night's frames (never touched) and the script."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for kind in ("bias", "darks", "flats"):
        folder = run_dir / "in" / kind
        folder.mkdir(parents=True)
        for src in sorted((night / kind).glob("*.fits")):
            # .fit: Siril's default FITS extension, so `link` takes them without `setext`
            (folder / (src.stem + ".fit")).symlink_to(src)
    (run_dir / "process").mkdir()
    script = run_dir / "masters.ssf"
    script.write_text(SIRIL_SCRIPT)
    return script


def siril_steps(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds per script command from the stamped log ('log: Running command: X')."""
    starts = [(t, line.split("Running command:", 1)[1].strip()) for t, line in lines
              if "log: Running command:" in line]
    if not starts:
        raise SystemExit("no 'Running command' lines in Siril's log")
    ends = [t for t, _ in starts[1:]] + [wall]
    spans = [(cmd, end - t) for (t, cmd), end in zip(starts, ends, strict=True)]
    stacks = [s for cmd, s in spans if cmd == "stack"]
    pre = [s for cmd, s in spans if cmd == "preprocess"]
    if len(stacks) != 3 or len(pre) != 1:
        raise SystemExit(f"unexpected Siril command sequence: {[c for c, _ in spans]}")
    return {
        "start-up": starts[0][0],
        "ingest": sum(s for cmd, s in spans if cmd in ("link", "cd")),
        "bias": stacks[0], "dark": stacks[1],
        "flat": pre[0] + stacks[2], "flat preprocess": pre[0],
    }


def siril_run(night: Path, run_dir: Path) -> RunTimes:
    script = siril_prepare(night, run_dir)
    # stdbuf: line-buffered stdout, so every log line is stamped when it is written.
    # XDG dirs in the run dir: Siril starts from its default settings and leaves the user's
    # own configuration alone (it writes its config on exit).
    cmd = ["stdbuf", "-oL", SIRIL, "-d", str(run_dir), "-s", str(script)]
    env = dict(os.environ, XDG_CONFIG_HOME=str(run_dir / "xdg-config"),
               XDG_CACHE_HOME=str(run_dir / "xdg-cache"))
    res = run_measured(cmd, run_dir / "siril.log", env)
    if "Script execution finished successfully" not in res.text:
        raise SystemExit(f"Siril script failed, see {run_dir / 'siril.log'}")
    steps = siril_steps(res.lines, res.wall)
    times = RunTimes(steps=dict(steps))
    times.steps["build"] = res.wall - steps["ingest"]
    times.steps["total"] = res.wall
    times.peaks["build"] = times.peaks["total"] = res.peak_mib
    times.cpu["total"] = res.cpu
    times.other_cpu = res.other_cpu
    return times


def siril_masters(run_dir: Path) -> dict[str, Path]:
    return {kind: run_dir / "process" / f"master_{kind}.fit" for kind in ("bias", "dark", "flat")}


# ---------------------------------------------------------------- quality

def _siril_image(path: Path) -> np.ndarray:
    """Siril's master as stored (rows in file order), in ADU (its 32-bit scale is 0..1)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float64)
    return data * 65535.0 if np.nanmax(data) <= 2.0 else data


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _correlations(image: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Correlation with the truth of the image as stored and flipped upside down."""
    return _corr(image, truth), _corr(image[::-1], truth)


def _robust_sigma(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _site_normalised(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each CFA site divided by its median (invalid pixels NaN), so colour levels drop out."""
    out = np.where(valid, image, np.nan)
    for dy in (0, 1):
        for dx in (0, 1):
            plane = out[dy::2, dx::2]
            plane /= np.nanmedian(plane)
    return out


def quality(night: Path, osc: dict[str, Path], siril: dict[str, Path]) -> None:
    """Both programs' masters against the truth, so 'the same work' is shown in numbers."""
    from oscdeep.io.fits import read_fits_image
    from oscdeep.pipeline.sample_night import read_sample_truth

    doc, truth = read_sample_truth(night)
    bias_true = truth["bias"].astype(np.float64)
    flat_true = truth["flat"].astype(np.float64)
    exposure = doc["config"]["exposure"]
    dark_true = bias_true + truth["dark_rate"].astype(np.float64) * exposure / doc["e_per_adu"]
    cold = truth["hot_pixels"] | (flat_true < 0.2)  # leave defects out of the dark/flat figures
    n_frames = doc["config"]["n_bias"]
    expected_bias = doc["read_noise_adu"] / np.sqrt(n_frames)

    print("\nQuality on the same data (truth from the night's truth.npz, top-down rows):")
    loaded = {"oscdeep": {k: read_fits_image(p)[0].astype(np.float64) for k, p in osc.items()},
              "Siril": {k: _siril_image(p) for k, p in siril.items()}}
    references = {"bias": bias_true, "dark": dark_true, "flat": flat_true}
    masters: dict[str, dict[str, np.ndarray]] = {}
    for prog, images in loaded.items():
        corrs = {k: _correlations(images[k], references[k]) for k in references}
        # the dark's hot pixels decide the row order unambiguously; the others must agree
        flip = corrs["dark"][1] > corrs["dark"][0]
        masters[prog] = {k: v[::-1] if flip else v for k, v in images.items()}
        detail = ", ".join(f"{k} {a:.3f}/{b:.3f}" for k, (a, b) in corrs.items())
        print(f"  {prog}: rows {'flipped' if flip else 'as stored'} (correlation with the truth "
              f"as stored/flipped: {detail})")

    rows = []
    for prog, m in masters.items():
        bias_res = m["bias"] - bias_true
        dark_res = (m["dark"] - dark_true)[~cold]
        ratio = _site_normalised(m["flat"] / np.where(cold, 1.0, flat_true), ~cold) - 1.0
        ratio = ratio[~cold]
        rows.append((prog, float(np.std(bias_res)), float(np.mean(bias_res)),
                     float(np.std(dark_res - np.median(dark_res))), _robust_sigma(dark_res),
                     float(np.sqrt(np.mean(ratio ** 2))), float(np.max(np.abs(ratio)))))
    print(f"  {'':8} {'bias-truth std':>15} {'mean':>8} {'dark-truth std':>15} "
          f"{'robust':>8} {'flat/truth RMS':>15} {'max':>8}")
    for prog, b_std, b_mean, d_std, d_rob, f_rms, f_max in rows:
        print(f"  {prog:8} {b_std:12.3f} ADU {b_mean:8.3f} {d_std:11.3f} ADU {d_rob:8.3f} "
              f"{f_rms * 100:13.3f} % {f_max * 100:7.3f}%")
    print(f"  (bias: read noise {doc['read_noise_adu']:.3f} ADU / sqrt({n_frames}) = "
          f"{expected_bias:.3f} ADU expected; flat ratio normalised per CFA site; "
          f"{int(cold.sum())} hot/dead pixels left out of dark and flat)")
    o, s = masters["oscdeep"], masters["Siril"]
    flat_diff = (_site_normalised(o["flat"], ~cold) / _site_normalised(s["flat"], ~cold))[~cold]
    print(f"  oscdeep - Siril: bias RMS {np.sqrt(np.mean((o['bias'] - s['bias']) ** 2)):.3f} ADU, "
          f"dark RMS {np.sqrt(np.mean(((o['dark'] - s['dark'])[~cold]) ** 2)):.3f} ADU, "
          f"flat ratio RMS {np.sqrt(np.mean((flat_diff - 1) ** 2)) * 100:.4f} %")


# ---------------------------------------------------------------- report

TASKS = [
    ("ingest", "ingest (session add | link)"),
    ("bias", "master bias"),
    ("dark", "master dark"),
    ("flat", "master flat (incl. bias subtraction)"),
    ("start-up", "start-up, imports, library"),
    ("build", "build (calib build | script - link)"),
    ("total", "end to end"),
]


def _cell(values: list[float]) -> tuple[str, str, float | None]:
    if not values:
        return "-", "-", None
    return f"{min(values):6.2f}", f"{statistics.median(values):6.2f}", min(values)


def print_table(osc: list[RunTimes], siril: list[RunTimes]) -> None:
    print(f"\n{'task':<38} {'oscdeep s':>15} {'Siril s':>15} {'Siril/osc':>10} "
          f"{'peak RSS MiB':>16}")
    print(f"{'':<38} {'best':>7} {'median':>7} {'best':>7} {'median':>7} {'(best)':>10} "
          f"{'oscdeep':>8} {'Siril':>7}")
    for key, label in TASKS:
        ob, om, obest = _cell([r.steps[key] for r in osc if key in r.steps])
        sb, sm, sbest = _cell([r.steps[key] for r in siril if key in r.steps])
        ratio = f"{'-':>10}"
        if obest and sbest:
            r = sbest / obest
            ratio = f"{r:9.2f}x" if r >= 0.1 else f"{r:9.3f}x"
        opk = [r.peaks[key] for r in osc if key in r.peaks]
        spk = [r.peaks[key] for r in siril if key in r.peaks]
        opk_s = f"{max(opk):8.0f}" if opk else f"{'-':>8}"
        spk_s = f"{max(spk):7.0f}" if spk else f"{'-':>7}"
        print(f"{label:<38} {ob:>7} {om:>7} {sb:>7} {sm:>7} {ratio} {opk_s} {spk_s}")
    print("(ratio > 1: oscdeep is faster. Peak RSS is per process: Siril is one process for "
          "the whole script, so its figure covers every step.)")
    osc_cpu = statistics.median(r.cpu["build"] for r in osc)
    siril_cpu = statistics.median(r.cpu["total"] for r in siril)
    print(f"CPU time (user+sys, median; less sensitive than wall time to other load): oscdeep "
          f"calib build {osc_cpu:.2f} s, Siril script {siril_cpu:.2f} s "
          f"(Siril/oscdeep {siril_cpu / osc_cpu:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-masters"))
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each program")
    parser.add_argument("--frames", type=int, default=30, help="frames of each kind")
    parser.add_argument("--size", default="3000x2000")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if shutil.which(SIRIL) is None or shutil.which("stdbuf") is None:
        raise SystemExit(f"{SIRIL} and stdbuf are needed (Debian: apt install siril coreutils)")
    width, height = (int(v) for v in args.size.split("x"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, {siril_version()}")
    night = make_night(args.workdir, args.frames, width, height, args.seed)
    warm_page_cache(night)

    for stale in [*args.workdir.glob("osc-*"), *args.workdir.glob("siril-run*")]:
        shutil.rmtree(stale)  # earlier runs' libraries and Siril dirs (the night is kept)
    numba_cache = args.workdir / "numba-cache"
    shutil.rmtree(numba_cache, ignore_errors=True)
    first = oscdeep_run(night, args.workdir / "osc-first", numba_cache)
    n_cached = len(list(numba_cache.rglob("*.nbi")))
    print(f"oscdeep first run, empty numba cache (NUMBA_CACHE_DIR={numba_cache}): "
          f"calib build {first.steps['build']:.2f} s (bias {first.steps['bias']:.2f} s, "
          f"dark {first.steps['dark']:.2f} s, flat {first.steps['flat']:.2f} s), "
          f"{n_cached} kernel index files cached")
    spec = importlib.util.find_spec("oscdeep")
    default_cache = Path(spec.origin).parent / "__pycache__" if spec and spec.origin else None
    if default_cache is not None:
        print(f"  without NUMBA_CACHE_DIR numba caches beside the source when it can write "
              f"there ({default_cache}: {len(list(default_cache.glob('*.nbi')))} index files "
              f"now), else in ~/.cache/numba; a fresh install pays the compile once")
    shutil.rmtree(args.workdir / "osc-first")

    osc_runs, siril_runs = [], []
    for i in range(args.runs):  # interleaved, so drift on the machine hits both alike
        run_dir = args.workdir / f"osc-run{i}"
        osc_runs.append(oscdeep_run(night, run_dir, numba_cache))
        done = osc_runs[-1]
        print(f"oscdeep run {i + 1}: calib build {done.steps['build']:.2f} s, "
              f"peak {done.peaks['build']:.0f} MiB, CPU {done.cpu['build']:.1f} s"
              f" (other processes meanwhile: {done.other_cpu:.1f} CPU-s)")
        if i < args.runs - 1:
            shutil.rmtree(run_dir)
        run_dir = args.workdir / f"siril-run{i}"
        siril_runs.append(siril_run(night, run_dir))
        ran = siril_runs[-1]
        print(f"Siril run {i + 1}: script {ran.steps['total']:.2f} s, "
              f"peak {ran.peaks['total']:.0f} MiB, CPU {ran.cpu['total']:.1f} s"
              f" (other processes meanwhile: {ran.other_cpu:.1f} CPU-s)")
        if i < args.runs - 1:
            shutil.rmtree(run_dir)
    print_table(osc_runs, siril_runs)
    preprocess = statistics.median(r.steps["flat preprocess"] for r in siril_runs)
    print(f"Siril flat = preprocess {preprocess:.2f} s (writes {args.frames} float32 frames) "
          f"+ stack; Siril ingest = 3 x `link` "
          f"(symbolic links + .seq files); oscdeep ingest = `session add` (hash, headers, DB)")
    last = args.runs - 1
    quality(night, oscdeep_masters(args.workdir / f"osc-run{last}"),
            siril_masters(args.workdir / f"siril-run{last}"))
    print(f"\nSiril script ({args.workdir / f'siril-run{last}' / 'masters.ssf'}):")
    print(SIRIL_SCRIPT)


if __name__ == "__main__":
    main()
