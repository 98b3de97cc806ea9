"""Ingest benchmark: `oscdeep session add` on a generated night and on the real Seestar files.

Prints wall time and peak memory (max RSS of the oscdeep process) for:
  * a generated night of 200 frames of 3000x2000 (170 lights, 10 darks, 10 flats, 10 bias),
  * the 7 real Seestar S50 files in ../shared/data/real (when present),
and the start-up time of `oscdeep --help`. Files are read from the page cache (warm) after
one untimed pass; the first, cold figure is printed too.

    python benchmarks/bench_ingest.py [--workdir bench-out] [--frames 200] [--size 3000x2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
OSCDEEP = [sys.executable, "-m", "oscdeep"]


LAUNCHER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
            "w = time.perf_counter() - t; "
            "print(r.returncode, w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run_measured(args: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS MiB of that command).

    A small launcher process runs it, so the peak is the command's own and not inherited from
    this (large) benchmark process through fork.
    """
    res = subprocess.run([sys.executable, "-c", LAUNCHER, *args], capture_output=True, text=True)
    code, wall, peak_kib = res.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{res.stderr}")
    return float(wall), int(peak_kib) / 1024.0


def make_night(workdir: Path, frames: int, width: int, height: int) -> Path:
    """``frames`` frames in all: 10 bias, darks and flats each, the rest lights."""
    from bench_masters import cached_night

    return cached_night(workdir, lights=frames - 30, calib=10, width=width, height=height, seed=7)


def bench_ingest(label: str, folder: Path, n_files: int) -> None:
    cold_db = Path(tempfile.mkdtemp()) / "cold.db"
    cold, _ = run_measured([*OSCDEEP, "--db", str(cold_db), "session", "add", str(folder)])
    walls, peaks = [], []
    for _ in range(3):
        db = Path(tempfile.mkdtemp()) / "lib.db"
        wall, peak = run_measured([*OSCDEEP, "--db", str(db), "session", "add", str(folder)])
        walls.append(wall)
        peaks.append(peak)
        shutil.rmtree(db.parent)
    again, _ = run_measured([*OSCDEEP, "--db", str(cold_db), "session", "add", str(folder)])
    shutil.rmtree(cold_db.parent)
    best = min(walls)
    print(f"{label:<34} {n_files:>5} files  first {cold:6.2f} s  warm {best:6.2f} s "
          f"({best / n_files * 1000:5.1f} ms/file)  peak RSS {max(peaks):6.0f} MiB  "
          f"re-add (all known) {again:5.2f} s")


def bench_startup_cost() -> None:
    """What every command pays before it starts: imports, and creating an empty library."""
    db = Path(tempfile.mkdtemp()) / "empty.db"
    wall, peak = run_measured([*OSCDEEP, "--db", str(db), "db", "info"])
    print(f"{'new empty library (db info)':<34} {wall:6.2f} s  peak RSS {peak:6.0f} MiB")
    shutil.rmtree(db.parent)


def bench_help() -> None:
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        subprocess.run([*OSCDEEP, "--help"], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    exe = shutil.which("oscdeep")
    line = f"oscdeep --help (python -m): median {statistics.median(times) * 1000:.0f} ms"
    if exe:
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            subprocess.run([exe, "--help"], stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t0)
        line += f"; console script: median {statistics.median(times) * 1000:.0f} ms"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", default="3000x2000")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    night = make_night(args.workdir, args.frames, width, height)
    bench_ingest(f"generated night {width}x{height}", night, args.frames)
    if REAL.exists():
        seestar = REAL / "seestar_s50_zeseestarstacker"
        bench_ingest("real Seestar S50 FITS", seestar, len(list(seestar.glob("*.fit"))))
    else:
        print(f"(real files not found at {REAL}: skipped)")
    bench_startup_cost()
    bench_help()


if __name__ == "__main__":
    main()
