"""A pipeline step run in a forked child: its result, its progress and its errors reach the
parent as if it had run there; its database writes are visible after it ends."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from oscdeep.db.engine import Library, open_library
from oscdeep.db.models import Target
from oscdeep.errors import NotFoundError, OscdeepError
from oscdeep.pipeline import forked
from oscdeep.pipeline.forked import step_in_child

from .conftest import RecordingProgress


def _add_targets(library: Library, *, progress, names: list[str]) -> dict:
    progress.begin("adding", len(names))
    with library.session() as orm:
        for name in names:
            orm.add(Target(name=name))
            progress.advance()
    progress.end()
    return {"pid": os.getpid(), "added": len(names)}


def _fails(library: Library, *, progress, kind: str) -> None:
    if kind == "oscdeep":
        raise NotFoundError("no stack named 'x'")
    raise ZeroDivisionError("a bug")


@pytest.fixture()
def library(tmp_path: Path) -> Library:
    return open_library(tmp_path / "lib.db")


@pytest.mark.parametrize("fork", [True, False])
def test_result_progress_and_writes_come_back(library: Library, monkeypatch, fork: bool) -> None:
    if not fork:
        monkeypatch.setattr(forked, "fork_available", lambda: False)
    progress = RecordingProgress()
    with step_in_child(_add_targets, library, progress=progress, names=["M 31", "M 42"]) as got:
        busy = sum(range(100_000))  # the parent's own work meanwhile
    result = got.result()
    assert busy > 0 and result["added"] == 2
    assert (result["pid"] != os.getpid()) is fork
    assert progress.events == [("begin", "adding", 2), ("advance", 1), ("advance", 1), ("end",)]
    with library.session() as orm:  # the child's commit, seen through the parent's engine
        assert orm.scalar(select(func.count()).select_from(Target)) == 2


def test_errors_come_back_as_one_line_or_with_the_traceback(library: Library) -> None:
    with step_in_child(_fails, library, progress=RecordingProgress(), kind="oscdeep") as got:
        pass
    with pytest.raises(OscdeepError, match="no stack named 'x'"):
        got.result()
    with step_in_child(_fails, library, progress=RecordingProgress(), kind="bug") as got:
        pass
    with pytest.raises(RuntimeError, match="ZeroDivisionError: a bug"):
        got.result()


def _sleeps(library: Library, *, progress, pid_file: Path) -> None:
    pid_file.write_text(str(os.getpid()))
    time.sleep(60)


def test_an_interrupted_parent_stops_the_child(library: Library, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with pytest.raises(KeyboardInterrupt):
        with step_in_child(_sleeps, library, progress=RecordingProgress(), pid_file=pid_file):
            deadline = time.monotonic() + 20
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise KeyboardInterrupt
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left running
        os.kill(child, 0)


def _waits(library: Library, *, progress, pid_file: Path) -> None:
    pid_file.write_text(str(os.getpid()))
    time.sleep(30)


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="parent-death signal is Linux's")
def test_a_killed_parent_leaves_no_orphan(library: Library, tmp_path: Path) -> None:
    """SIGKILL of the process that forked the step kills the step too (prctl PDEATHSIG)."""
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from oscdeep.db.engine import open_library\n"
        "from oscdeep.pipeline.forked import step_in_child\n"
        "from oscdeep.progress import NullProgress\n"
        "from tests.test_forked import _waits\n"
        f"lib = open_library({str(tmp_path / 'p.db')!r})\n"
        f"with step_in_child(_waits, lib, progress=NullProgress(), pid_file=Path({str(pid_file)!r})):\n"
        "    time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break  # dead, waiting to be reaped by init
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the step outlived its killed parent")
