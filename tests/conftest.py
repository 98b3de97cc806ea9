"""Shared fixtures: temporary libraries, the CLI runner, generated nights, real data location."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from oscdeep.io.fits import write_fits_image

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


W, H = 64, 48


def write_test_frame(path: Path, kind_card: dict, *, value: float = 1000.0, seed: int = 0, **cards) -> Path:
    rng = np.random.default_rng(seed)
    data = (value + rng.normal(0, 10, (H, W))).astype(np.float32)
    header = {"EXPTIME": 120.0, "GAIN": 100, "OFFSET": 30, "CCD-TEMP": -10.2, "SET-TEMP": -10.0,
              "BAYERPAT": "RGGB", "XBINNING": 1, "YBINNING": 1, "INSTRUME": "ZWO ASI2600MC Pro",
              "FILTER": "L-eXtreme", "DATE-OBS": "2026-11-20T21:30:00.5", **kind_card, **cards}
    return write_fits_image(path, data, header, dtype="uint16")


@pytest.fixture
def night(tmp_path: Path) -> Path:
    root = tmp_path / "2026-11-20"
    for i in range(4):
        write_test_frame(root / "Lights" / f"m42_{i:03d}.fits", {"IMAGETYP": "Light Frame", "OBJECT": "M 42"},
               seed=i, **{"DATE-OBS": f"2026-11-20T2{i}:00:00"})
    for i in range(3):  # no IMAGETYP: the folder says what they are
        write_test_frame(root / "darks" / f"d_{i}.fit", {}, value=1100, seed=10 + i)
    for i in range(2):
        write_test_frame(root / "FLATS" / f"f_{i}.fits", {"FRAME": "Flat"}, value=20000, seed=20 + i,
               EXPTIME=1.5)
    for i in range(2):
        write_test_frame(root / "Offset" / f"b_{i}.fits", {}, value=1000, seed=30 + i, EXPTIME=0.0)
    (root / "notes.txt").write_text("clear night, some wind")
    (root / "Lights" / "corrupt.fits").write_bytes(b"SIMPLE  =    T" + bytes(range(256)) * 20)
    (root / "Lights" / "empty.fit").write_bytes(b"")
    good = (root / "Lights" / "m42_000.fits").read_bytes()
    (root / "Lights" / "truncated.fits").write_bytes(good[: len(good) // 2])
    (root / "Lights" / "holiday.cr2").write_text("not a raw file")
    return root


def prepare_night(root: Path, config, *, workers: int = 1, register: bool = False):  # noqa: ANN001, ANN201
    """Write a synthetic night under ``root``, ingest it into a new library, build its masters
    and measure its lights (and register them); returns (library, light ids by time, analysis)."""
    from sqlalchemy import select

    from oscdeep.db.engine import open_library
    from oscdeep.db.models import Frame
    from oscdeep.pipeline.align import register_frames
    from oscdeep.pipeline.ingest import ingest
    from oscdeep.pipeline.masters import build_masters
    from oscdeep.pipeline.measure import AnalysisOptions, analyze_frames
    from oscdeep.pipeline.sample_night import write_sample_night

    write_sample_night(root / "night", config)
    library = open_library(root / "lib.db")
    ingest(library, [root / "night"])
    build_masters(library)
    with library.session() as orm:
        ids = list(orm.scalars(select(Frame.id).where(Frame.kind == "light")
                               .order_by(Frame.date_obs)))
    analysis = analyze_frames(library, ids, AnalysisOptions(workers=workers))
    if register:
        register_frames(library, ids)
    return library, ids, analysis


class RecordingProgress:
    """A progress observer that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def begin(self, description: str, total: int | None = None) -> None:
        self.events.append(("begin", description, total))

    def advance(self, step: int = 1) -> None:
        self.events.append(("advance", step))

    def end(self) -> None:
        self.events.append(("end",))
