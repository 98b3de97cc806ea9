"""`frames analyze` + `register` on a 40-light night of 3000x2000: oscdeep against Siril's
registration (siril-cli 1.0.6) in one run, with both programs' accuracy against the truth.

Generates (once, cached in the work dir) a synthetic night: 40 lights (FITS uint16, RGGB,
dithered up to 20 px, rotated up to 0.3 deg; one cloud frame, two bad-seeing frames, one
satellite trail), 10 darks, 10 flats, 10 bias. Then, interleaved, ``--runs`` times:

  * oscdeep, a fresh library per run: `session add` + `calib build` (winsorized 3/3; timed
    as set-up, kept out of the comparison), then the timed pair `frames analyze` (calibrate
    each light, detect and measure its stars, store its catalog) and `register` (triangle
    matching on the stored catalogs, transforms stored; no image is read or written).
  * Siril, on masters it built once from the same frames (untimed for the comparison; same
    script as bench_masters.py): `link` the lights + `preprocess -dark -flat -cfa
    -equalize_cfa -debayer` (its standard OSC script: calibrated, debayered float32 frames
    written), then in a second siril-cli `register pp_light` (global star alignment: stars,
    matching, and the warped r_pp_light frames written; 1.0.6 accepts `-noout` and `-2pass`
    but ignores them, so a transforms-only registration cannot be timed).

Each command runs under a launcher that records its wall time, CPU time, the peak RSS of
its largest process and the peak PSS summed over its whole process tree (sampled every
0.1 s; `frames analyze` runs worker processes, Siril is one multi-threaded process), and the
CPU the rest of the machine used meanwhile. Files are read from a warm page cache.

Accuracy: each program's frame -> reference transforms against the truth
(T_ref @ inv(T_frame)), as the worst of the four corner errors per frame; median and max
over the good frames, the cloud and bad-seeing frames listed apart. oscdeep's transforms
come from `frames list --json`. Siril 1.0.6 keeps no transform in its .seq file (its `R`
lines hold two shifts, 0 after a global star alignment, then FWHM, weighted FWHM, roundness
and quality), so its matrices are parsed from its stdout: the "Transformation Matrix:" it
warps with (5 decimals) and the affine of its star matcher that the matrix is refitted from
("TRANS", 10 digits). Its matrices map frame -> reference in its own coordinates, rows
counted bottom-up (it writes ROWORDER TOP-DOWN files but flips them in memory): the four
possible conventions are scored against the truth and the best one is used and printed.
Then the same figure is measured on images for both programs, against the stars of Siril's
reference frame: Siril's written r_ frames, and its calibrated pp_ frames warped (cv2) with
oscdeep's and with the true matrices (that last row is the method's own noise floor).

    python benchmarks/bench_analysis.py [--workdir /tmp/bench-analysis] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_masters import (  # noqa: E402
    OSCDEEP, SIRIL, RunTimes, _busy_cpu_seconds, _cell, cached_night, oscdeep_run, siril_masters,
    siril_run, siril_version, warm_page_cache)

# Like bench_masters' launcher, and also samples the PSS summed over the command's process
# tree (pool workers included). Prints: exit code, wall s, peak RSS KiB of the largest
# process, CPU s, peak tree PSS KiB.
LAUNCHER = r"""
import os, resource, subprocess, sys, threading, time

def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out

def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

peak = 0
done = threading.Event()

def sample(pid):
    global peak
    while not done.is_set():
        peak = max(peak, sum(pss_kib(p) for p in tree(pid)))
        done.wait(0.1)

t0 = time.perf_counter()
with open(sys.argv[1], "w") as log, open(sys.argv[1] + ".err", "w") as err:
    p = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=err, text=True,
                         errors="replace")
    sampler = threading.Thread(target=sample, args=(p.pid,), daemon=True)
    sampler.start()
    for line in p.stdout:
        log.write(f"{time.perf_counter() - t0:.3f}\t{line}")
    code = p.wait()
wall = time.perf_counter() - t0
done.set()
sampler.join()
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(code, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, peak)
"""

SIRIL_SETTINGS = "requires 1.0.0\nset32bits\nsetmem 0.5\nsetcpu 2\n"
SIRIL_CALIBRATE = SIRIL_SETTINGS + """\
cd in/lights
link light -out=../../process
cd ../../process
preprocess light -dark=master_dark -flat=master_flat -cfa -equalize_cfa -debayer
close
"""
SIRIL_REGISTER = SIRIL_SETTINGS + """\
cd process
register pp_light
close
"""

GOOD_EXCLUDED = ("cloud", "bad_seeing")  # flags that leave a frame out of the accuracy figures


@dataclass
class Measured:
    """One command: wall, CPU, peak RSS of its largest process, peak PSS of its whole tree."""

    wall: float
    cpu: float
    peak_mib: float
    tree_mib: float
    other_cpu: float
    lines: list[tuple[float, str]]

    @property
    def text(self) -> str:
        return "".join(line for _, line in self.lines)


def run_measured(args: list[str], log: Path, env: dict[str, str] | None = None) -> Measured:
    """Run a command through the launcher; raise SystemExit with its stderr if it fails."""
    busy0 = _busy_cpu_seconds()
    res = subprocess.run([sys.executable, "-c", LAUNCHER, str(log), *args], capture_output=True,
                         text=True, env=env)
    try:
        code, wall, peak_kib, cpu, tree_kib = res.stdout.split()
    except ValueError:
        raise SystemExit(f"launcher failed for {' '.join(args)}:\n{res.stderr}") from None
    other = max(0.0, _busy_cpu_seconds() - busy0 - float(cpu))
    lines = []
    for raw in log.read_text().splitlines(keepends=True):
        stamp, _, line = raw.partition("\t")
        lines.append((float(stamp), line))
    if int(code) != 0:
        err = Path(str(log) + ".err").read_text()
        tail = "".join(line for _, line in lines[-30:])
        raise SystemExit(f"failed ({code}): {' '.join(args)}\n{err[-3000:]}\n{tail}")
    return Measured(float(wall), float(cpu), int(peak_kib) / 1024.0, int(tree_kib) / 1024.0,
                    other, lines)


def make_night(workdir: Path, lights: int, width: int, height: int, seed: int) -> Path:
    """The night of this benchmark: ``lights`` lights and 10 bias, darks and flats each."""
    return cached_night(workdir, lights=lights, calib=10, width=width, height=height,
                        seed=seed)


def _record(times: RunTimes, key: str, m: Measured) -> None:
    times.steps[key] = m.wall
    times.cpu[key] = m.cpu
    times.peaks[key] = m.peak_mib
    times.peaks[key + " tree"] = m.tree_mib
    times.other_cpu += m.other_cpu


# ---------------------------------------------------------------- oscdeep

def oscdeep_analysis_run(night: Path, run_dir: Path, numba_cache: Path) -> RunTimes:
    """Fresh library with masters (set-up), then the timed `frames analyze` and `register`."""
    setup = oscdeep_run(night, run_dir, numba_cache)  # session add + calib build
    db = str(run_dir / "lib.db")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache))
    analyze = run_measured([*OSCDEEP, "--db", db, "frames", "analyze", "--json"],
                           run_dir / "analyze.log", env)
    register = run_measured([*OSCDEEP, "--db", db, "register", "--json"],
                            run_dir / "register.log", env)
    times = RunTimes()
    times.steps["setup"] = setup.steps["total"]
    times.peaks["setup"] = setup.peaks["total"]
    _record(times, "calibrate", analyze)
    _record(times, "register", register)
    times.steps["work"] = times.steps["process"] = analyze.wall + register.wall
    times.cpu["work"] = analyze.cpu + register.cpu
    for key in ("work", "process"):
        times.peaks[key] = max(analyze.peak_mib, register.peak_mib)
        times.peaks[key + " tree"] = max(analyze.tree_mib, register.tree_mib)
    report = json.loads(analyze.text)
    times.steps["measured"] = sum(1 for f in report["frames"] if not f["failed"])
    return times


def oscdeep_transforms(run_dir: Path, night: Path) -> tuple[dict[int, np.ndarray], int | None,
                                                             dict[int, str]]:
    """Light index -> frame->reference 3x3, the reference's light index, failures by index."""
    res = subprocess.run([*OSCDEEP, "--db", str(run_dir / "lib.db"), "frames", "list",
                          "kind:light", "--json"], capture_output=True, text=True, check=True)
    index = _light_index_by_file(night)
    transforms, failed, ref = {}, {}, None
    for record in json.loads(res.stdout):
        i = index[str(Path(record["path"]).relative_to(night))]
        if record["transform"] is None:
            failed[i] = record["reason"] or record["status"]
            continue
        transforms[i] = np.array(record["transform"], dtype=np.float64)
        ref = index[str(Path(record["reference_path"]).relative_to(night))]
    return transforms, ref, failed


# ---------------------------------------------------------------- Siril

def siril_prepare_lights(night: Path, masters_dir: Path, run_dir: Path) -> None:
    """Siril's run dir: links to the lights (as .fit) and to the masters built once."""
    shutil.rmtree(run_dir, ignore_errors=True)
    lights = run_dir / "in" / "lights"
    lights.mkdir(parents=True)
    for src in sorted((night / "lights").glob("*.fits")):
        (lights / (src.stem + ".fit")).symlink_to(src)
    process = run_dir / "process"
    process.mkdir()
    for kind, path in siril_masters(masters_dir).items():
        if kind != "bias":  # the dark keeps the bias, as in Siril's OSC script
            (process / path.name).symlink_to(path)
    (run_dir / "calibrate.ssf").write_text(SIRIL_CALIBRATE)
    (run_dir / "register.ssf").write_text(SIRIL_REGISTER)


def siril_command_spans(lines: list[tuple[float, str]], wall: float
                        ) -> list[tuple[str, float, float]]:
    """(command, start s, duration s) of each script command, from the stamped log."""
    starts = [(t, line.split("Running command:", 1)[1].strip()) for t, line in lines
              if "log: Running command:" in line]
    ends = [t for t, _ in starts[1:]] + [wall]
    return [(cmd, t, end - t) for (t, cmd), end in zip(starts, ends, strict=True)]


def siril_script(run_dir: Path, name: str) -> Measured:
    # stdbuf: line-buffered stdout, so each line is stamped as written; XDG dirs in the run dir
    # so Siril starts from its defaults and leaves the user's configuration alone.
    cmd = ["stdbuf", "-oL", SIRIL, "-d", str(run_dir), "-s", str(run_dir / f"{name}.ssf")]
    env = dict(os.environ, XDG_CONFIG_HOME=str(run_dir / "xdg-config"),
               XDG_CACHE_HOME=str(run_dir / "xdg-cache"))
    res = run_measured(cmd, run_dir / f"{name}.log", env)
    if "Script execution finished successfully" not in res.text:
        raise SystemExit(f"Siril script {name} failed, see {run_dir / (name + '.log')}")
    return res


def siril_analysis_run(night: Path, masters_dir: Path, run_dir: Path) -> RunTimes:
    siril_prepare_lights(night, masters_dir, run_dir)
    cal = siril_script(run_dir, "calibrate")
    reg = siril_script(run_dir, "register")
    spans = {"calibrate": siril_command_spans(cal.lines, cal.wall),
             "register": siril_command_spans(reg.lines, reg.wall)}
    times = RunTimes()
    _record(times, "calibrate", cal)
    _record(times, "register", reg)
    times.steps["calibrate"] = sum(s for c, _, s in spans["calibrate"] if c == "preprocess")
    times.steps["link"] = sum(s for c, _, s in spans["calibrate"] if c == "link")
    times.steps["register"] = sum(s for c, _, s in spans["register"] if c == "register")
    times.steps["start-up"] = spans["calibrate"][0][1] + spans["register"][0][1]
    times.steps["work"] = times.steps["calibrate"] + times.steps["register"]
    times.steps["process"] = cal.wall + reg.wall
    times.cpu["work"] = cal.cpu + reg.cpu
    for key in ("work", "process"):
        times.peaks[key] = max(cal.peak_mib, reg.peak_mib)
        times.peaks[key + " tree"] = max(cal.tree_mib, reg.tree_mib)
    times.steps["registered"] = float(re.search(r"Total: (\d+) failed, (\d+) registered",
                                                reg.text).group(2))
    return times


_ROW = re.compile(r"^\s*([-+]?\d+\.\d+)\s+([-+]?\d+\.\d+)\s+([-+]?\d+\.\d+)\s*$")


@dataclass
class SirilMatrices:
    """What Siril's register log says about each image (keys: Siril file numbers).

    ``final``: the "Transformation Matrix:" it prints (5 decimals) after its OpenCV
    homography fit, the one it warps with. ``matcher``: the affine of its star matcher
    ("TRANS based on recalculated matches": x' = a + b x + c y, y' = d + e x + f y, 10
    digits) from which that homography is refined; same coordinates, full precision.
    """

    final: dict[int, np.ndarray]
    matcher: dict[int, np.ndarray]
    reference: int


def parse_siril_matrices(text: str) -> SirilMatrices:
    """Siril 1.0.6's registration transforms, from its stdout.

    Per image it prints "Transformation Matrix:" and three rows, then, in a critical
    section, "Matching stars in image N: done" with dx = -h02, dy = -h12 (2 decimals) and
    rotation = atan2(h01, h00) in degrees (3 decimals). Two threads may interleave their
    output, so each image takes the one printed matrix that agrees with its own dx, dy and
    rotation, and the matcher affine whose translation is within 0.05 px of that matrix's.
    """
    lines = text.splitlines()
    matrices: list[np.ndarray] = []
    affines: list[np.ndarray] = []
    for i, line in enumerate(lines):
        if line.startswith("Transformation Matrix:"):
            rows = [[float(v) for v in m.groups()] for l2 in lines[i + 1:i + 40]
                    if (m := _ROW.match(l2))][:3]
            matrices.append(np.array(rows))
        elif line.startswith("TRANS based on recalculated matches"):
            nxt = next((l2 for l2 in lines[i + 1:i + 10] if l2.startswith("TRANS:")), None)
            if nxt is not None:
                c = {k: float(v) for k, v in re.findall(r"(\w+)=([-+.\deE]+)", nxt)}
                affines.append(np.array([[c["b"], c["c"], c["a"]], [c["e"], c["f"], c["d"]],
                                         [0.0, 0.0, 1.0]]))
    records: dict[int, dict[str, float]] = {}
    current = None
    for line in lines:
        if m := re.search(r"Matching stars in image (\d+): done", line):
            current = int(m.group(1))
            records[current] = {}
        elif current is not None and (m := re.search(r"log: (dx|dy|rotation):\s*([-+]?\d+\.\d+)",
                                                     line)):
            records[current][m.group(1)] = float(m.group(2))
    final, matcher = {}, {}
    for filenum, rec in records.items():
        hits = [h for h in matrices
                if abs(-h[0, 2] - rec["dx"]) <= 0.0051 and abs(-h[1, 2] - rec["dy"]) <= 0.0051
                and abs(np.degrees(np.arctan2(h[0, 1], h[0, 0])) - rec["rotation"]) <= 0.0011]
        if len(hits) != 1:
            raise SystemExit(f"image {filenum}: {len(hits)} printed matrices agree with its "
                             f"dx/dy/rotation; cannot tell which is its own")
        final[filenum] = hits[0]
        near = [a for a in affines if np.hypot(*(a[:2, 2] - hits[0][:2, 2])) < 0.05]
        if len(near) == 1:
            matcher[filenum] = near[0]
    ref = re.search(r"file \w+?_(\d+)\.fit[^\n]*\nlog: Reference Image:", text)
    if ref is None:
        raise SystemExit("reference image not found in Siril's register log")
    return SirilMatrices(final, matcher, int(ref.group(1)))


def _light_index_by_file(night: Path) -> dict[str, int]:
    doc = json.loads((night / "truth" / "truth.json").read_text())
    return {f["file"]: f["index"] for f in doc["frames"] if f["kind"] == "light"}


def siril_file_to_light(night: Path, folder: Path, prefix: str) -> dict[int, int]:
    """Siril file number -> light index, by DATE-OBS (Siril keeps it, to the second)."""
    from astropy.io import fits

    doc = json.loads((night / "truth" / "truth.json").read_text())
    times = [(datetime.fromisoformat(f["date_obs"]).replace(tzinfo=None), f["index"])
             for f in doc["frames"] if f["kind"] == "light"]
    out = {}
    for path in sorted(folder.glob(f"{prefix}[0-9]*.fit")):
        stamp = datetime.fromisoformat(fits.getheader(path)["DATE-OBS"]).replace(tzinfo=None)
        gap, index = min((abs((stamp - t).total_seconds()), i) for t, i in times)
        if gap > 30:
            raise SystemExit(f"{path.name}: DATE-OBS {stamp} matches no light of the truth")
        out[int(path.stem[len(prefix):])] = index
    return out


def _flip(height: int) -> np.ndarray:
    """y -> height - 1 - y (Siril's rows bottom-up against the truth's top-down)."""
    return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, height - 1.0], [0.0, 0.0, 1.0]])


SIRIL_CONVENTIONS = {
    "frame->ref, y bottom-up": lambda h, f: f @ h @ f,
    "frame->ref, y top-down": lambda h, f: h,
    "ref->frame, y bottom-up": lambda h, f: f @ np.linalg.inv(h) @ f,
    "ref->frame, y top-down": lambda h, f: np.linalg.inv(h),
}


# ---------------------------------------------------------------- accuracy

def truth_frame_to_ref(doc: dict, ref: int) -> dict[int, np.ndarray]:
    """True frame pixel -> reference pixel transforms (T_ref @ inv(T_frame))."""
    lights = {f["index"]: np.array(f["transform"]) for f in doc["frames"] if f["kind"] == "light"}
    return {i: lights[ref] @ np.linalg.inv(t) for i, t in lights.items()}


def errors_vs_truth(estimates: dict[int, np.ndarray], truth: dict[int, np.ndarray],
                    width: int, height: int) -> dict[int, float]:
    """Worst corner error (px) per frame."""
    from oscdeep.transform import corner_errors

    return {i: float(corner_errors(m, truth[i], width, height).max())
            for i, m in estimates.items()}


def _green(path: Path) -> np.ndarray:
    """Green plane of a Siril RGB frame, rows as stored (top-down here, as the truth)."""
    from astropy.io import fits

    return np.ascontiguousarray(fits.getdata(path)[1], dtype=np.float32)


def _stars(green: np.ndarray) -> np.ndarray:
    """(x, y) of isolated, unflagged stars (sep barycentres above 8 sigma)."""
    import sep

    invalid = green == 0  # uncovered borders of a warped frame (Siril and cv2 fill with 0)
    bkg = sep.Background(green, mask=invalid)
    data = green - bkg.back()
    sep.set_extract_pixstack(2_000_000)
    objs = sep.extract(data, 8.0, err=bkg.globalrms, minarea=5, mask=invalid)
    keep = (objs["flag"] == 0) & (objs["npix"] < 400)
    return np.column_stack([objs["x"][keep], objs["y"][keep]])


def star_residual(xy: np.ndarray, ref_xy: np.ndarray, ref_tree: object, width: int,
                  height: int) -> tuple[float, int]:
    """Worst corner displacement of the affine fitted (3-sigma clipped) from a frame's stars
    to the reference's stars paired within 1 px, and the number of pairs kept."""
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]],
                       dtype=np.float64)
    dist, j = ref_tree.query(xy, distance_upper_bound=1.0)  # type: ignore[attr-defined]
    ok = np.isfinite(dist)
    src, dst = xy[ok], ref_xy[j[ok]]
    design = np.column_stack([src, np.ones(len(src))])
    keep = np.ones(len(src), dtype=bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], dst[keep], rcond=None)
        resid = np.hypot(*(design @ coef - dst).T)
        keep = resid <= 3.0 * 1.4826 * np.median(resid[keep]) + 1e-9
    moved = np.column_stack([corners, np.ones(4)]) @ coef
    return float(np.hypot(*(moved - corners).T).max()), int(keep.sum())


def image_checks(pp_paths: dict[int, Path], r_paths: dict[int, Path], ref: int,
                 warps: dict[str, dict[int, np.ndarray]], width: int, height: int
                 ) -> dict[str, dict[int, tuple[float, int]]]:
    """Residual misregistration measured on images, the same way for every program: stars
    of each registered green plane against those of the reference frame (Siril's written
    reference, unwarped). 'Siril r_' uses Siril's own written frames; each entry of ``warps``
    (light -> 3x3 frame->reference, top-down) warps Siril's calibrated pp_ frame with
    cv2 (cubic), so transforms are compared on the same pixels, interpolation aside."""
    import cv2
    from scipy.spatial import cKDTree

    ref_xy = _stars(_green(r_paths[ref]))
    tree = cKDTree(ref_xy)
    out: dict[str, dict[int, tuple[float, int]]] = {"Siril r_": {}, **{k: {} for k in warps}}
    for i in sorted(pp_paths):
        if i == ref:
            continue
        if i in r_paths:
            out["Siril r_"][i] = star_residual(_stars(_green(r_paths[i])), ref_xy, tree,
                                               width, height)
        green = _green(pp_paths[i])
        for name, matrices in warps.items():
            if i in matrices:
                warped = cv2.warpPerspective(green, matrices[i], (width, height),
                                             flags=cv2.INTER_CUBIC,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                out[name][i] = star_residual(_stars(warped), ref_xy, tree, width, height)
    return out


def accuracy(night: Path, osc_dir: Path, siril_dir: Path) -> None:
    doc = json.loads((night / "truth" / "truth.json").read_text())
    cfg = doc["config"]
    width, height = cfg["width"], cfg["height"]
    flags = {f["index"]: f["flags"] for f in doc["frames"] if f["kind"] == "light"}
    n_lights = len(flags)
    excluded = {i for i, fl in flags.items() if set(fl) & set(GOOD_EXCLUDED)}

    osc_m, osc_ref, osc_failed = oscdeep_transforms(osc_dir, night)
    osc_err = errors_vs_truth(osc_m, truth_frame_to_ref(doc, osc_ref), width, height)

    log = (siril_dir / "register.log").read_text()
    text = "".join(raw.partition("\t")[2] for raw in log.splitlines(keepends=True))
    parsed = parse_siril_matrices(text)
    process = siril_dir / "process"
    file_light = siril_file_to_light(night, process, "pp_light_")
    siril_ref = file_light[parsed.reference]
    truth = truth_frame_to_ref(doc, siril_ref)
    raw = {file_light[n]: h for n, h in parsed.final.items()}
    raw[siril_ref] = np.eye(3)
    flip = _flip(height)
    good_raw = [i for i in raw if i not in excluded and i != siril_ref]
    print("\nSiril's printed matrix H (in Siril's pixel coordinates) against the truth, per "
          "convention (median / max worst-corner error over the good frames):")
    scores = {}
    for name, conv in SIRIL_CONVENTIONS.items():
        e = errors_vs_truth({i: conv(raw[i], flip) for i in good_raw}, truth, width, height)
        scores[name] = statistics.median(e.values())
        print(f"  {name:<26} {scores[name]:10.3f} px {max(e.values()):10.3f} px")
    best = min(scores, key=scores.get)
    to_top = SIRIL_CONVENTIONS[best]
    print(f"  -> H maps {best.split(',')[0]} pixels with y counted {best.split('y ')[1]} "
          f"(y_top = {height - 1} - y_bottom); used below")
    siril_m = {i: to_top(h, flip) for i, h in raw.items()}
    siril_err = errors_vs_truth(siril_m, truth, width, height)
    siril_failed = {i: "not registered" for i in range(n_lights) if i not in siril_m}
    matcher = {file_light[n]: to_top(a, flip) for n, a in parsed.matcher.items()}
    matcher[siril_ref] = np.eye(3)
    matcher_err = errors_vs_truth(matcher, truth, width, height)
    # what rounding the true matrices to Siril's 5 printed decimals costs by itself
    rounded = {i: to_top(np.round(to_top(truth[i], flip), 5), flip) for i in siril_m}
    rounding_err = errors_vs_truth(rounded, truth, width, height)

    # the same measure on images for every program, against the same reference stars
    r_light = siril_file_to_light(night, process, "r_pp_light_")
    r_paths = {i: process / f"r_pp_light_{n:05d}.fit" for n, i in r_light.items()}
    pp_paths = {i: process / f"pp_light_{n:05d}.fit" for n, i in file_light.items()}
    osc_to_siril_ref = {i: np.linalg.inv(osc_m[siril_ref]) @ m for i, m in osc_m.items()} \
        if siril_ref in osc_m else {}
    checks = image_checks(pp_paths, r_paths, siril_ref,
                          {"truth": truth, "oscdeep": osc_to_siril_ref}, width, height)
    r_err = {i: e for i, (e, _) in checks["Siril r_"].items()}

    def summary(err: dict[int, float], ref: int) -> tuple[str, str, int]:
        good = [e for i, e in err.items() if i not in excluded and i != ref]
        return f"{statistics.median(good):7.3f}", f"{max(good):7.3f}", len(good)

    print(f"\nRegistration accuracy against the truth: worst of the 4 corner errors per frame "
          f"(px), frame -> reference; good frames = all but the reference and the "
          f"{'/'.join(GOOD_EXCLUDED)} frames ({len(excluded)}):")
    print(f"  {'':40} {'reference':>10} {'good':>5} {'median':>8} {'max':>8} "
          f"{'not registered':>15}")
    rows = [("oscdeep: stored matrices", osc_err, osc_ref, osc_failed),
            ("Siril: printed final H (5 decimals)", siril_err, siril_ref, siril_failed),
            ("Siril: its matcher's affine (10 digits)", matcher_err, siril_ref, None),
            ("  (true H rounded to 5 decimals)", rounding_err, siril_ref, None),
            ("Siril: stars of its r_ frames vs ref", r_err, siril_ref, None),
            ("oscdeep matrices: cv2-warped pp_ frames", {i: e for i, (e, _) in
                                                        checks["oscdeep"].items()},
             siril_ref, None),
            ("true matrices: cv2-warped pp_ frames", {i: e for i, (e, _) in
                                                     checks["truth"].items()}, siril_ref, None)]
    for name, err, ref, failed in rows:
        med, mx, n = summary(err, ref)
        fail = f"{len(failed):15d}" if failed is not None else f"{'':>15}"
        print(f"  {name:40} {'light ' + str(ref):>10} {n:5d} {med:>8} {mx:>8} {fail}")
    stars = [n for _, n in checks["Siril r_"].values()]
    print("  Rows 1-4 against the true transforms. oscdeep: `frames list --json` 'transform'. "
          "Siril: the final H it warps with, parsed from its stdout; printing it to 5 decimals "
          "alone costs about the 'rounded' row, so part of that row's error is the printing's; "
          "the matcher's affine is what that H is refitted from (full precision).")
    print("  Rows 5-7 on images, all against the stars of Siril's reference frame (sep, green "
          "plane, pairs within 1 px, "
          f"median {statistics.median(stars):.0f} and min {min(stars)} pairs per frame): an "
          "affine fitted from each registered frame's stars, its worst corner displacement. "
          "Includes centroid noise: the 'true matrices' row is that floor. oscdeep's matrices "
          "are chained to Siril's reference (frame -> oscdeep's ref -> light 0), so they carry "
          "two estimates' errors; pp_ frames warped with cv2 cubic, Siril's own r_ frames with "
          "its default interpolation.")
    print("  Frames left out above (flags: oscdeep / Siril final H / Siril matcher / Siril r_, "
          "px):")
    special = sorted({i for i, fl in flags.items() if fl} | {osc_ref, siril_ref})
    for i in special:
        def cell(err: dict[int, float], failed: dict[int, str] | None = None) -> str:
            if i in err:
                return f"{err[i]:.3f}"
            return f"failed ({failed.get(i, '?')})" if failed else "-"
        notes = [n for n, on in (("oscdeep's reference", i == osc_ref),
                                 ("Siril's reference", i == siril_ref),
                                 ("counted as good", i not in excluded and i not in
                                  (osc_ref, siril_ref))) if on]
        print(f"    light {i:2d} {','.join(flags[i]) or '-':<11} {cell(osc_err, osc_failed)} / "
              f"{cell(siril_err, siril_failed)} / {cell(matcher_err)} / {cell(r_err)}"
              + (f"  ({'; '.join(notes)})" if notes else ""))
    for name, failed in (("oscdeep", osc_failed), ("Siril", siril_failed)):
        for i, why in failed.items():
            print(f"  {name} did not register light {i}: {why}")


# ---------------------------------------------------------------- report

TASKS = [
    ("setup", "set-up: add + calib build | masters"),
    ("calibrate", "analyze | preprocess -debayer"),
    ("register", "register | register (+ r_ frames)"),
    ("work", "analyze + register | prep. + reg."),
    ("process", "the same, whole processes"),
]


def print_table(osc: list[RunTimes], siril: list[RunTimes], siril_setup: RunTimes) -> None:
    print(f"\n{'task (oscdeep | Siril)':<36} {'oscdeep s':>15} {'Siril s':>15} {'Siril/osc':>10} "
          f"{'peak MiB: largest proc / tree PSS':>34}")
    print(f"{'':<36} {'best':>7} {'median':>7} {'best':>7} {'median':>7} {'(best)':>10} "
          f"{'oscdeep':>16} {'Siril':>16}")
    for key, label in TASKS:
        ob, om, obest = _cell([r.steps[key] for r in osc if key in r.steps])
        sruns = [siril_setup] if key == "setup" else siril
        sb, sm, sbest = _cell([r.steps[key] for r in sruns if key in r.steps])
        ratio = f"{'-':>10}"
        if obest and sbest:
            ratio = f"{sbest / obest:9.2f}x"

        def mem(runs: list[RunTimes]) -> str:
            rss = [r.peaks[key] for r in runs if key in r.peaks]
            tree = [r.peaks[key + " tree"] for r in runs if key + " tree" in r.peaks]
            if not rss:
                return f"{'-':>16}"
            return f"{max(rss):7.0f} /{max(tree):6.0f}" if tree else f"{max(rss):7.0f}        "
        print(f"{label:<36} {ob:>7} {om:>7} {sb:>7} {sm:>7} {ratio} {mem(osc):>16} "
              f"{mem(sruns):>16}")
    print("(ratio > 1: oscdeep is faster. Siril's task times are its commands' spans in its "
          "log; 'whole processes' adds start-up and exit (Siril: 2 siril-cli runs, "
          "'link' included); oscdeep's are always whole commands, start-up included. Peak: "
          "max over runs; the set-up's is the largest process only.)")
    osc_cpu = statistics.median(r.cpu["work"] for r in osc)
    siril_cpu = statistics.median(r.cpu["work"] for r in siril)
    print(f"CPU time (user+sys, median; less sensitive than wall time to other load): oscdeep "
          f"analyze+register {osc_cpu:.1f} s, Siril preprocess+register scripts {siril_cpu:.1f} s "
          f"(Siril/oscdeep {siril_cpu / osc_cpu:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-analysis"))
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each program")
    parser.add_argument("--lights", type=int, default=40)
    parser.add_argument("--size", default="3000x2000")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for tool in (SIRIL, "stdbuf"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (Debian: apt install siril coreutils)")
    t_start = time.perf_counter()
    width, height = (int(v) for v in args.size.split("x"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, {siril_version()}, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    night = make_night(args.workdir, args.lights, width, height, args.seed)
    warm_page_cache(night)
    for stale in [*args.workdir.glob("osc-run*"), *args.workdir.glob("siril-run*")]:
        shutil.rmtree(stale)  # earlier runs (the night and the numba cache are kept)

    numba_cache = args.workdir / "numba-cache"
    cold = not any(numba_cache.rglob("*.nbi"))
    masters_dir = args.workdir / "siril-masters"
    built = siril_run(night, masters_dir)  # bench_masters' script: link + 3 masters
    siril_setup = RunTimes(steps={"setup": built.steps["total"]},
                           peaks={"setup": built.peaks["total"]})
    print(f"Siril masters (untimed for the comparison): {built.steps['total']:.2f} s, "
          f"in {masters_dir / 'process'}")

    osc_runs, siril_runs = [], []
    for i in range(args.runs):  # interleaved, so drift on the machine hits both alike
        run_dir = args.workdir / f"osc-run{i}"
        osc_runs.append(oscdeep_analysis_run(night, run_dir, numba_cache))
        r = osc_runs[-1]
        print(f"oscdeep run {i + 1}{' (numba cache empty before it)' if i == 0 and cold else ''}: "
              f"set-up {r.steps['setup']:.2f} s; analyze {r.steps['calibrate']:.2f} s "
              f"({r.steps['measured']:.0f} measured), register {r.steps['register']:.2f} s; "
              f"peak {r.peaks['calibrate']:.0f} MiB largest / {r.peaks['calibrate tree']:.0f} "
              f"MiB tree; CPU {r.cpu['work']:.1f} s (other processes: {r.other_cpu:.1f} CPU-s)")
        if i < args.runs - 1:
            shutil.rmtree(run_dir)
        run_dir = args.workdir / f"siril-run{i}"
        siril_runs.append(siril_analysis_run(night, masters_dir, run_dir))
        s = siril_runs[-1]
        print(f"Siril run {i + 1}: preprocess {s.steps['calibrate']:.2f} s, register "
              f"{s.steps['register']:.2f} s ({s.steps['registered']:.0f} registered), scripts "
              f"{s.steps['process']:.2f} s; peak {s.peaks['calibrate']:.0f} / "
              f"{s.peaks['register']:.0f} MiB; CPU {s.cpu['work']:.1f} s "
              f"(other processes: {s.other_cpu:.1f} CPU-s)")
        if i < args.runs - 1:
            shutil.rmtree(run_dir)
    print_table(osc_runs, siril_runs, siril_setup)
    last = args.runs - 1
    accuracy(night, args.workdir / f"osc-run{last}", args.workdir / f"siril-run{last}")
    print(f"\nSiril scripts ({args.workdir / f'siril-run{last}'}), on masters from "
          f"bench_masters.SIRIL_SCRIPT built in {masters_dir / 'process'}:")
    print("calibrate.ssf:\n" + SIRIL_CALIBRATE + "register.ssf:\n" + SIRIL_REGISTER)
    print(f"benchmark wall time {time.perf_counter() - t_start:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
