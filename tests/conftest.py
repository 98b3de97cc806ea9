"""Shared fixtures: temporary libraries, the CLI runner, generated nights, real data location."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SEESTAR = REAL_DATA / "seestar_s50_zeseestarstacker"


def require_real(path: Path = REAL_DATA) -> Path:
    """Skip the calling test when the real camera files are not beside the checkout."""
    if not path.exists():
        pytest.skip(f"real camera files not found at {path}")
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):  # noqa: ANN201
        return json.loads(self.out)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "lib" / "library.db"


@pytest.fixture
def cli(db_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> Callable[..., CliResult]:
    """Run ``oscdeep --db <tmp library> ARGS...`` in-process and capture its output."""
    from oscdeep.cli import main

    monkeypatch.delenv("OSCDEEP_DB", raising=False)

    def run(*args: str, db: bool = True) -> CliResult:
        argv = (["--db", str(db_path)] if db else []) + [str(a) for a in args]
        code = 0
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["oscdeep", *argv])
        try:
            main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def library(db_path: Path):  # noqa: ANN201
    from oscdeep.db.engine import open_library

    lib = open_library(db_path)
    yield lib
    lib.close()
