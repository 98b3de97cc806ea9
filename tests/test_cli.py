"""The command line through its real entry point, against a temporary library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def ingested(cli, night: Path):  # noqa: ANN001, ANN201
    result = cli("session", "add", night, "--json")
    assert result.code == 0, result.err
    return result.json()


def test_session_add_reports_counts_and_skips(ingested) -> None:  # noqa: ANN001
    assert ingested["added_by_kind"] == {"light": 4, "dark": 3, "flat": 2, "bias": 2}
    assert ingested["session"]["name"] == "2026-11-20 M 42"
    skipped = {Path(s["path"]).name for s in ingested["skipped"]}
    assert skipped == {"corrupt.fits", "empty.fit", "truncated.fits", "holiday.cr2"}


def test_session_add_human_summary_and_rerun(cli, night: Path) -> None:  # noqa: ANN001
    first = cli("session", "add", night, "--target", "Orion Nebula")
    assert first.code == 0, first.err
    assert "Added 2 bias, 3 dark, 2 flat, 4 light" in first.out
    assert "corrupt.fits" in first.out and "Session" in first.out
    again = cli("session", "add", night, "--json")
    assert again.json()["added"] == [] and again.json()["unchanged"] == 11


def test_session_list_and_show(cli, ingested) -> None:  # noqa: ANN001
    sessions = cli("session", "list", "--json").json()
    assert len(sessions) == 1
    assert sessions[0]["lights"] == 4 and sessions[0]["integration_s"] == pytest.approx(480.0)
    shown = cli("session", "show", "2026-11-20", "--json").json()
    kinds = {k["kind"]: k for k in shown["kinds"]}
    assert kinds["light"]["total"] == 4 and kinds["light"]["exposure_s"] == pytest.approx(480)
    table = cli("session", "show", str(shown["id"]))
    assert "light" in table.out and "8 min" in table.out
    missing = cli("session", "show", "nope")
    assert missing.code == 1 and "no session 'nope'" in missing.err


def test_frames_list_query_and_sort(cli, ingested) -> None:  # noqa: ANN001
    frames = cli("frames", "list", "--json").json()
    assert len(frames) == 11
    darks = cli("frames", "list", "kind:dark", "--json").json()
    assert {f["kind"] for f in darks} == {"dark"} and len(darks) == 3
    either = cli("frames", "list", "kind:dark", ",", "kind:flat", "--json").json()
    assert len(either) == 5
    by_option = cli("frames", "list", "--exposure", ">100", "--json").json()
    assert {f["kind"] for f in by_option} == {"light", "dark"}
    by_date = cli("frames", "list", "kind:light", "--sort", "-date", "--json").json()
    dates = [f["date_obs"] for f in by_date]
    assert dates == sorted(dates, reverse=True)
    table = cli("frames", "list", "kind:light")
    assert "4 frames: kind is light" in table.out and "frames analyze" in table.out


def test_frames_reject_and_accept(cli, ingested) -> None:  # noqa: ANN001
    dry = cli("frames", "reject", "kind:light", "date:2026-11-20T22..", "--dry-run", "--json")
    assert dry.json()["would_change"] and dry.json()["changed"] == []
    assert all(f["status"] == "accepted" for f in cli("frames", "list", "--json").json())
    done = cli("frames", "reject", "--exposure>100", "kind:light", "--yes", "--json").json()
    assert len(done["changed"]) == 4
    rejected = cli("frames", "list", "status:rejected", "--json").json()
    assert len(rejected) == 4
    assert rejected[0]["reason"] == done["reason"] and "exposure > 100 s" in done["reason"]
    back = cli("frames", "accept", "status:rejected", "--yes", "--json").json()
    assert len(back["changed"]) == 4
    assert cli("frames", "list", "status:rejected", "--json").json() == []
    noquery = cli("frames", "reject")
    assert noquery.code == 2 and "QUERY" in noquery.err


def test_query_errors_are_one_line(cli, ingested) -> None:  # noqa: ANN001
    typo = cli("frames", "list", "fwmh:>4")
    assert typo.code == 1
    assert typo.err.count("\n") == 1 and "did you mean fwhm" in typo.err
    empty = cli("frames", "list", "--fwhm", "")
    assert empty.code == 1 and "redirection" in empty.err
    badsort = cli("frames", "list", "--sort", "fwmh")
    assert badsort.code == 1 and "fwhm" in badsort.err


def test_fields_targets_and_db_info(cli, ingested) -> None:  # noqa: ANN001
    fields = {f["name"]: f for f in cli("frames", "fields", "--json").json()}
    assert fields["fwhm"]["unit"] == "px" and "exptime" in fields["exposure"]["aliases"]
    targets = cli("target", "list", "--json").json()
    assert targets == [{"target": "M 42", "filter": "L-eXtreme", "lights": 4,
                        "integration_s": 480.0, "sessions": 1}]
    info = cli("db", "info", "--json").json()
    assert info["rows"]["frames"] == 11 and info["schema_revision"]


def test_db_env_variable_is_used(cli, night: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    env_db = tmp_path / "env" / "lib.db"
    monkeypatch.setenv("OSCDEEP_DB", str(env_db))
    result = cli("session", "add", night / "darks", db=False)
    assert result.code == 0, result.err
    assert env_db.exists()


def test_unexpected_path_is_a_usage_error(cli, tmp_path: Path) -> None:  # noqa: ANN001
    result = cli("session", "add", tmp_path / "missing")
    assert result.code == 2 and "does not exist" in result.err


def test_python_dash_m_and_version() -> None:
    run = subprocess.run([sys.executable, "-m", "oscdeep", "--version"], capture_output=True,
                         text=True)
    assert run.returncode == 0 and run.stdout.startswith("oscdeep, version")


def test_program_exit_codes_and_output_survive_the_fast_exit(tmp_path: Path) -> None:
    """The program leaves with os._exit after main(): output must be flushed and the exit
    code kept (0 success, 1 a domain error, 2 a usage error)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "oscdeep", "--db",
                               str(tmp_path / "lib.db"), *args], capture_output=True, text=True)

    info = run("db", "info", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["schema_revision"]
    missing = run("stack", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.strip().startswith("error: no stack")
    usage = run("post")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
