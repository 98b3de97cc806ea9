"""Throughput and peak anonymous memory of oscdeep.integrate.combine on generated FITS frames.

Writes N uint16 FITS frames (3000x2000 mono by default) to a temporary folder, warms the
page cache, then runs each configuration in a fresh subprocess that samples its own RssAnon
(anonymous memory, so the page cache of the frames is not counted). Also times the first
call of the kernels with an empty numba cache against a call with the cache filled.

    python benchmarks/bench_integrate.py                      # 20, 40, 80 frames, winsorized 3/3
    python benchmarks/bench_integrate.py --frames 40 --memory 500M --prefetch both
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, threading, time
t_import = time.perf_counter()
import numpy as np
from oscdeep.integrate import ArraySource, CombineOptions, FitsSource, combine
from oscdeep.integrate import parse_memory_size

def rss_anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

args = json.loads(sys.argv[1])
warm = [ArraySource(np.zeros((16, 16), np.float32))] * 3
t0 = time.perf_counter()
combine(warm, options=CombineOptions(rejection=args["rejection"],
                                     normalization=args["normalization"]))
first_call = time.perf_counter() - t0
if args.get("compile_only"):
    print(json.dumps({"first_call": first_call,
                      "import": t0 - t_import}))
    sys.exit()
baseline = rss_anon()
peak = [baseline]
done = threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.002)

thread = threading.Thread(target=sample, daemon=True)
thread.start()
memory = parse_memory_size(args["memory"]) if args["memory"] else None
options = CombineOptions(rejection=args["rejection"], normalization=args["normalization"],
                         memory_bytes=memory, prefetch=args["prefetch"])
t0 = time.perf_counter()
result = combine([FitsSource(p) for p in args["paths"]], options=options)
wall = time.perf_counter() - t0
done.set()
thread.join()
print(json.dumps({"wall": wall, "timings": result.timings, "rows": result.band_rows,
                  "bands": result.n_bands, "planned": result.memory_bytes,
                  "baseline": baseline, "peak": peak[0],
                  "rejected": float(result.frame_rejected_fraction.mean())}))
"""


def make_frames(folder: Path, n: int, shape: tuple[int, int], seed: int = 0) -> list[Path]:
    """uint16 frames: sky with a gradient, Poisson-like noise, a few hot pixels per frame."""
    from oscdeep.io.fits import write_fits_image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    sky = (1200.0 + 0.05 * xx + 0.03 * yy).astype(np.float32)
    paths = []
    for i in range(n):
        path = folder / f"light_{i:03d}.fits"
        if not path.exists():
            frame = sky + rng.normal(0.0, 35.0, shape).astype(np.float32)
            hot = rng.integers(0, frame.size, frame.size // 2000)
            frame.reshape(-1)[hot] += 20000
            write_fits_image(path, frame, dtype="uint16")
        paths.append(path)
    return paths


def warm_cache(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


def run_worker(args: dict, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(args)], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compile_times(rejection: str, normalization: str) -> tuple[float, float]:
    """First-call time with an empty numba cache, then with the cache written by that call."""
    cache = tempfile.mkdtemp(prefix="oscdeep-numba-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    args = {"rejection": rejection, "normalization": normalization, "compile_only": True}
    try:
        cold = run_worker(args, env)["first_call"]
        warm = run_worker(args, env)["first_call"]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--width", type=int, default=3000)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--rejection", default="winsorized")
    parser.add_argument("--normalization", default="none")
    parser.add_argument("--memory", default=None, help="budget, e.g. 1G (default: automatic)")
    parser.add_argument("--prefetch", choices=["off", "on", "both"], default="off")
    parser.add_argument("--repeat", type=int, default=2, help="runs per row; best wall kept")
    parser.add_argument("--dir", type=Path, default=None, help="keep frames here")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile timing")
    ns = parser.parse_args()

    folder = ns.dir or Path(tempfile.mkdtemp(prefix="oscdeep-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    shape = (ns.height, ns.width)
    try:
        t0 = time.perf_counter()
        paths = make_frames(folder, max(ns.frames), shape)
        print(f"frames ready in {time.perf_counter() - t0:.1f} s ({folder})", flush=True)
        if not ns.no_compile:
            cold, warm = compile_times(ns.rejection, ns.normalization)
            print(f"first call, empty numba cache: {cold:.2f} s; cached: {warm:.2f} s")
        prefetch = {"off": [False], "on": [True], "both": [False, True]}[ns.prefetch]
        mpx = shape[0] * shape[1] / 1e6
        header = (f"{'N':>4} {'prefetch':>8} {'rows':>5} {'bands':>5} {'wall s':>7} "
                  f"{'norm s':>7} {'read s':>7} {'kernel s':>8} {'Mpx-fr/s':>9} "
                  f"{'plan MiB':>8} {'RssAnon+ MiB':>12} {'rej %':>6}")
        print(f"\n{ns.rejection}, normalization {ns.normalization}, "
              f"{ns.width}x{ns.height} uint16 FITS, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.2f}")
        print(header)
        for n in ns.frames:
            warm_cache(paths[:n])
            for pf in prefetch:
                job = {"paths": [str(p) for p in paths[:n]], "memory": ns.memory,
                       "rejection": ns.rejection, "normalization": ns.normalization,
                       "prefetch": pf}
                runs = [run_worker(job) for _ in range(ns.repeat)]
                r = min(runs, key=lambda run: run["wall"])  # least disturbed by other load
                r["peak"] = max(run["peak"] - run["baseline"] for run in runs) + r["baseline"]
                t = r["timings"]
                print(f"{n:>4} {str(pf):>8} {r['rows']:>5} {r['bands']:>5} {r['wall']:>7.2f} "
                      f"{t['normalization']:>7.2f} {t['read']:>7.2f} {t['combine']:>8.2f} "
                      f"{n * mpx / r['wall']:>9.1f} {r['planned'] / 2**20:>8.0f} "
                      f"{(r['peak'] - r['baseline']) / 2**20:>12.0f} "
                      f"{100 * r['rejected']:>6.2f}", flush=True)
    finally:
        if ns.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
