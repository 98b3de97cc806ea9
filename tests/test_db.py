"""The library database: migrations build exactly the models' schema; engine settings; location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from oscdeep.db.base import Base
from oscdeep.db.engine import (
    SCHEMA_HEAD,
    files_dir_for,
    head_revision,
    open_library,
    resolve_url,
    schema_revision,
)

ROOT = Path(__file__).resolve().parents[1]


def _schema_diff(engine) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def _columns(engine) -> dict[str, list[tuple]]:
    insp = inspect(engine)
    return {t: sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t))
            for t in insp.get_table_names()}


def test_migrations_build_the_models_schema(tmp_path: Path) -> None:
    from alembic import command

    from oscdeep.db.engine import alembic_config

    url = resolve_url(tmp_path / "migrated.db")
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    assert _schema_diff(engine) == [], "models and migrations disagree"
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    assert schema_revision(engine) == head_revision(url) == SCHEMA_HEAD


def test_new_library_has_the_migrated_schema(tmp_path: Path) -> None:
    """A new library is built from the models and stamped at head: the same tables,
    columns, indexes and revision as running every migration, and Alembic accepts it."""
    from alembic import command

    from oscdeep.db.engine import alembic_config

    lib = open_library(tmp_path / "new.db")
    assert _schema_diff(lib.engine) == []
    url = resolve_url(tmp_path / "migrated.db")
    command.upgrade(alembic_config(url), "head")
    migrated = create_engine(url)
    assert _columns(lib.engine) == _columns(migrated)
    for table in Base.metadata.tables:
        assert sorted(i["name"] for i in inspect(lib.engine).get_indexes(table)) == \
            sorted(i["name"] for i in inspect(migrated).get_indexes(table)), table
    assert schema_revision(lib.engine) == SCHEMA_HEAD
    command.upgrade(alembic_config(lib.url), "head")  # nothing to do, no error
    assert schema_revision(lib.engine) == SCHEMA_HEAD


def test_alembic_check_from_checkout(tmp_path: Path) -> None:
    db = tmp_path / "check.db"
    env = {**os.environ, "OSCDEEP_DB": str(db)}
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
    up = subprocess.run([*alembic, "upgrade", "head"], cwd=ROOT, env=env, capture_output=True,
                        text=True)
    assert up.returncode == 0, up.stderr
    check = subprocess.run([*alembic, "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    lib = open_library(tmp_path / "lib.db")
    with lib.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    from sqlalchemy.exc import IntegrityError

    from oscdeep.db.models import Frame

    with pytest.raises(IntegrityError), lib.session() as orm:
        orm.add(Frame(session_id=999, path="/x.fits", content_hash="0" * 64, file_size=1,
                      file_format="fits", kind="light", width=2, height=2))


def test_older_schema_is_upgraded_on_open(tmp_path: Path) -> None:
    """A library made by the first release is migrated to head on open, keeping its rows."""
    from alembic import command

    from oscdeep.db.engine import alembic_config

    url = resolve_url(tmp_path / "old.db")
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO targets (name, created_at) VALUES ('M 31', '2026-01-01')"))
    assert schema_revision(engine) == "0001"
    engine.dispose()
    lib = open_library(tmp_path / "old.db")
    assert schema_revision(lib.engine) == head_revision(url) != "0001"
    with lib.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM targets")).scalar() == "M 31"
    lib.close()
    from oscdeep.errors import DatabaseError

    command.downgrade(alembic_config(url), "0001")
    with pytest.raises(DatabaseError, match="oscdeep db upgrade"):
        open_library(tmp_path / "old.db", migrate=False)


def test_refuses_to_migrate_a_foreign_database(tmp_path: Path) -> None:
    from oscdeep.errors import DatabaseError

    path = tmp_path / "other.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE photos (id INTEGER)"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="not an oscdeep library"):
        open_library(path)


def test_location_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSCDEEP_DB", str(tmp_path / "env.db"))
    assert resolve_url(tmp_path / "flag.db").endswith("flag.db")
    assert resolve_url(None).endswith("env.db")
    monkeypatch.delenv("OSCDEEP_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'xdg' / 'oscdeep' / 'library.db'}"
    assert resolve_url("postgresql+psycopg://u:p@localhost/astro").startswith("postgresql")
    assert files_dir_for(resolve_url(tmp_path / "a.db")) == tmp_path / "a.db.files"


def test_migrations_run_from_a_non_editable_install(tmp_path: Path) -> None:
    """A wheel install (no checkout on sys.path) still finds and runs the migrations."""
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True)
    if build.returncode != 0 and "No module named" in build.stderr and "setuptools" in build.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert build.returncode == 0, build.stderr
    assert (target / "oscdeep" / "migrations" / "versions" / "0001_initial_schema.py").exists()
    code = ("import oscdeep, sys; from oscdeep.db.engine import open_library, schema_revision;"
            f"lib = open_library({str(tmp_path / 'w.db')!r});"
            "print(oscdeep.__file__); print(schema_revision(lib.engine))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    installed, revision = run.stdout.split()
    assert installed.startswith(str(target))
    assert revision == head_revision(resolve_url(tmp_path / "w.db"))
