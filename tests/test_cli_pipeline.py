"""The processing commands end to end through the CLI: masters, analysis, rejection, registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oscdeep.pipeline.sample_night import write_sample_night
from oscdeep.synth import NightConfig

NIGHT = NightConfig(width=480, height=320, n_lights=8, n_darks=4, n_flats=4, n_bias=4, seed=31,
                    pattern="BGGR", n_bad_seeing=1, cloud=False, satellite=False)


@pytest.fixture(scope="module")
def night_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-night") / "night"
    write_sample_night(root, NIGHT)
    return root


def test_masters_analysis_rejection_and_registration(cli, night_dir: Path) -> None:  # noqa: ANN001
    assert cli("session", "add", night_dir).code == 0
    built = cli("calib", "build", "--json").json()
    assert [(g["kind"], g["status"]) for g in built["groups"]] == [
        ("bias", "built"), ("dark", "built"), ("flat", "built")]
    masters = cli("calib", "list", "--json").json()
    assert {m["kind"]: m["n_frames"] for m in masters} == {"bias": 4, "dark": 4, "flat": 4}
    assert all(Path(m["path"]).is_file() for m in masters)
    match = cli("calib", "match", "--json").json()
    assert len(match) == 1 and all(match[0][r]["master_id"] for r in ("bias", "dark", "flat"))

    analysed = cli("frames", "analyze", "--workers", "1", "--json").json()
    assert analysed["analyzed"] == 8 and not any(f["failed"] for f in analysed["frames"])
    again = cli("frames", "analyze", "--json").json()
    assert again["analyzed"] == 0 and again["skipped"] == 8

    by_fwhm = cli("frames", "list", "kind:light", "--sort", "-fwhm", "--json").json()
    assert by_fwhm[0]["fwhm_px"] == max(f["fwhm_px"] for f in by_fwhm)
    auto = cli("frames", "reject", "--auto", "--dry-run", "--json").json()
    assert auto["would_change"] == [by_fwhm[0]["id"]]
    assert auto["reasons"][str(by_fwhm[0]["id"])].startswith("auto: fwhm")
    sharp = cli("frames", "reject", "--fwhm", "<2", "--stars", "<5", "--dry-run", "--json").json()
    assert sharp["would_change"] == []

    registered = cli("register", "--json").json()
    (group,) = registered["groups"]
    assert len(group["registered"]) == 8 and group["failed"] == []
    lights = cli("frames", "list", "kind:light", "--json").json()
    reference = [f for f in lights if f["id"] == group["reference_id"]][0]
    assert np.allclose(reference["transform"], np.eye(3))
    assert {f["reference_path"] for f in lights} == {reference["path"]}
    assert all(len(f["transform"]) == 3 and len(f["transform"][0]) == 3 for f in lights)
    shown = cli("session", "show", "1", "--json").json()
    fwhm = next(m for m in shown["quality"] if m["name"] == "FWHM")
    assert fwhm["n"] == 8 and fwhm["minimum"] <= fwhm["median"] <= fwhm["maximum"]


def test_calib_apply_writes_calibrated_lights(cli, night_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from oscdeep.io.fits import read_fits_header

    assert cli("session", "add", night_dir).code == 0
    assert cli("calib", "build").code == 0
    result = cli("calib", "apply", "kind:light", "-o", tmp_path / "cal", "--json").json()
    assert result["calibrated"] == 8 and len(result["written"]) == 8
    header = read_fits_header(result["written"][0])
    assert header["BITPIX"] == -32 and header["BAYERPAT"] == "BGGR"
    assert any("flat" in h for h in header["HISTORY"])


def test_run_does_everything_then_only_what_is_missing(cli, night_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from astropy.io import fits

    first = cli("run", night_dir, "-o", tmp_path / "m42.fits")
    assert first.code == 0, first.err
    assert "Run summary" in first.out and "8 measured" in first.out
    with fits.open(tmp_path / "m42.fits") as hdul:
        assert hdul[0].data.shape == (3, NIGHT.height, NIGHT.width)
        assert hdul["COVERAGE"].data.max() >= 6
    second = cli("run", night_dir, "-o", tmp_path / "again.fits")
    assert second.code == 0, second.err
    assert "0 frames added" in second.out and "0 measured" in second.out
    stacks = cli("stack", "list", "--json").json()
    assert len(stacks) == 2 and stacks[0]["n_frames"] == stacks[1]["n_frames"]
    diff = cli("stack", "diff", stacks[0]["name"], stacks[1]["name"], "--json").json()
    assert diff["only_first"] == [] and diff["only_second"] == []
    shown = cli("stack", "show", stacks[1]["name"], "--json").json()
    assert len(shown["frames"]) == shown["n_frames"]
    rebuilt = cli("stack", "rebuild", stacks[0]["name"], "--select", "fwhm:..3.5", "--name",
                  "sharp", "-o", tmp_path / "sharp.fits", "--json").json()
    assert rebuilt["warped"] == 0 and rebuilt["frames"] <= shown["n_frames"]
    assert Path(rebuilt["output"]) == tmp_path / "sharp.fits" and Path(rebuilt["output"]).exists()
    diff_text = cli("stack", "diff", stacks[0]["name"], "sharp").out
    missing = shown["n_frames"] - rebuilt["frames"]
    assert f"frames only in sharp: 0\n" in diff_text
    assert f"frames only in {stacks[0]['name']}: {missing}" in diff_text
    assert shown["options"]["debayer"] == "vng" and shown["options"]["interpolation"] == "bilinear"
    other = cli("stack", "build", "--target", "M42", "--debayer", "bilinear", "--interp",
                "bicubic", "--name", "soft", "--json").json()
    assert other["warped"] == shown["n_frames"]  # other options: warped anew, not from the cache
    options = cli("stack", "show", "soft", "--json").json()["options"]
    assert options["debayer"] == "bilinear" and options["interpolation"] == "bicubic"


@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_a_killed_run_resumes_cleanly(night_dir: Path, tmp_path: Path, delay: float) -> None:
    """SIGKILL in the middle of `oscdeep run`, then run again: consistent library, full result."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    db = tmp_path / "lib.db"
    args = [sys.executable, "-m", "oscdeep", "--db", str(db), "run", str(night_dir),
            "-o", str(tmp_path / "out.fits")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as conn:
        frames = conn.execute("SELECT count(*), count(DISTINCT content_hash) FROM frames").fetchone()
        assert frames == (20, 20)
        lights = conn.execute("SELECT count(*) FROM frames WHERE kind='light' AND "
                              "analyzed_at IS NOT NULL").fetchone()[0]
        assert lights == 8
    assert (tmp_path / "out.fits").exists()


def test_run_stacks_camera_raw_lights_under_the_folder_name(cli, tmp_path: Path) -> None:  # noqa: ANN001
    """DNG lights name no object: without --target, run files them under the folder it was
    given and stacks them, instead of stopping after the masters."""
    import dataclasses

    night = tmp_path / "Orion raw"
    write_sample_night(night, dataclasses.replace(NIGHT, file_format="dng", n_lights=6,
                                                  n_bad_seeing=0, seed=32))
    done = cli("run", night, "-o", tmp_path / "raw.fits", "--no-picture")
    assert done.code == 0, done.err
    (stack,) = cli("stack", "list", "--json").json()
    assert stack["target"] == "Orion raw" and stack["n_frames"] >= 5
    assert (tmp_path / "raw.fits").is_file()


def test_run_says_which_files_it_skipped_and_why(cli, tmp_path: Path) -> None:  # noqa: ANN001
    """A file run cannot classify is named on stderr with the cause, not just counted."""
    from astropy.io import fits

    folder = tmp_path / "misc"
    folder.mkdir()
    fits.PrimaryHDU(np.zeros((8, 8), np.uint16)).writeto(folder / "IMG_0001.fits")
    done = cli("run", folder, "-o", tmp_path / "out.fits", "--no-picture")
    assert done.code == 0, done.err
    said = " ".join(done.err.split())
    assert "IMG_0001.fits" in said and "frame type unknown" in said and "session add --kind" in said
    assert "none: no accepted, registered light" in " ".join(done.out.split())


def test_stack_build_takes_in_a_new_night(cli, night_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """A second night of the target, added with `session add` only: `stack build` builds its
    flat, analyses and registers its lights alone, warps only them and stacks all."""
    import dataclasses
    import datetime as dt

    assert cli("run", night_dir, "-o", tmp_path / "first.fits", "--no-picture").code == 0
    first = cli("stack", "list", "--json").json()[-1]
    more = dataclasses.replace(NIGHT, n_lights=3, n_darks=0, n_bias=0, n_flats=4,
                               n_bad_seeing=0, start=dt.datetime(2026, 11, 21, 21, 0))
    write_sample_night(tmp_path / "night2", more)
    assert cli("session", "add", tmp_path / "night2").code == 0
    before = {f["id"]: f["fwhm_px"] for f in cli("frames", "list", "kind:light", "--json").json()}

    built = cli("stack", "build", "--target", "M42", "--json").json()
    caught = built["catch_up"]
    assert (caught["masters_built"], caught["analysed"], caught["registered"]) == (1, 3, 3)
    assert caught["failed"] == []
    assert built["frames"] == first["n_frames"] + 3
    assert built["warped"] == 3 and built["cached"] == first["n_frames"]
    after = {f["id"]: f["fwhm_px"] for f in cli("frames", "list", "kind:light", "--json").json()}
    assert all(after[i] == fwhm for i, fwhm in before.items() if fwhm is not None)
    assert sum(fwhm is None for fwhm in before.values()) == 3
    assert all(fwhm is not None for fwhm in after.values())

    again = cli("stack", "build", "--target", "M42", "--json").json()
    assert not any(again["catch_up"][k] for k in ("masters_built", "analysed", "registered"))
    assert again["warped"] == 0 and again["frames"] == built["frames"]
    plain = cli("stack", "build", "--target", "M42", "--no-catch-up").out
    assert "Caught up" not in plain
