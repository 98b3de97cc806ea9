"""Open the library database: find it, create it, migrate it to the current schema.

Location: an explicit ``--db`` value, else ``$OSCDEEP_DB``, else ``library.db`` in the per-user
data directory. A value containing ``://`` is used as a SQLAlchemy URL (PostgreSQL works);
anything else is a path to a SQLite file. Master files and caches live in a folder beside the
database (``<name>.files/``), or under ``$OSCDEEP_DATA`` / the data directory for a server URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from oscdeep.errors import DatabaseError

ENV_DB = "OSCDEEP_DB"
ENV_DATA = "OSCDEEP_DATA"
DEFAULT_NAME = "library.db"
SCHEMA_HEAD = "0005"
"""Revision of the newest migration (a test checks it against the migrations folder), so that
opening a library needs no Alembic import unless it must be migrated."""


def default_data_dir() -> Path:
    """Per-user data directory of oscdeep (platform convention, e.g. ~/.local/share/oscdeep)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("oscdeep", appauthor=False))


def resolve_url(db: str | os.PathLike[str] | None = None) -> str:
    """SQLAlchemy URL of the library from ``--db``, ``$OSCDEEP_DB`` or the default location."""
    value = str(db) if db else os.environ.get(ENV_DB) or str(default_data_dir() / DEFAULT_NAME)
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def files_dir_for(url: str) -> Path:
    """Folder for master calibration files and caches that belongs to a library."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db_path = Path(parsed.database)
        return db_path.with_name(db_path.name + ".files")
    env = os.environ.get(ENV_DATA)
    base = Path(env).expanduser() if env else default_data_dir()
    return base / (parsed.database or "library")


def migrations_dir() -> Path:
    """Where the Alembic scripts are, in a checkout or an installed wheel alike."""
    import oscdeep.migrations

    return Path(oscdeep.migrations.__file__).parent


def alembic_config(url: str):  # -> alembic.config.Config
    """Alembic configuration pointing at the packaged migrations and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 (DB-API objects)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL mode, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def schema_revision(engine: Engine) -> str | None:
    """Alembic revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision(url: str) -> str | None:
    """Newest revision the installed migrations know."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def create_schema(engine: Engine) -> None:
    """Build the newest schema in an empty database: the models' tables, stamped with the
    head revision (Alembic's recipe for a new database: the same tables as running every
    migration, which a test checks, in a fraction of the time)."""
    from oscdeep.db import models  # noqa: F401 (registers every table on Base.metadata)
    from oscdeep.db.base import Base

    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                          "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"),
                     {"head": SCHEMA_HEAD})


def upgrade(engine: Engine, url: str) -> None:
    """Bring the schema to the newest revision (creating it in an empty database)."""
    from alembic import command

    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@dataclass
class Library:
    """An open library: its engine, a session factory and its file folder."""

    url: str
    engine: Engine
    sessionmaker: sessionmaker[OrmSession]
    files_dir: Path

    @contextmanager
    def session(self) -> Iterator[OrmSession]:
        """A unit of work: committed when the block ends normally, rolled back otherwise."""
        with self.sessionmaker() as orm, orm.begin():
            yield orm

    def close(self) -> None:
        self.engine.dispose()

    def display_location(self) -> str:
        """The database location for people (password hidden)."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            return str(parsed.database)
        return parsed.render_as_string(hide_password=True)


def open_library(db: str | os.PathLike[str] | None = None, *, migrate: bool = True) -> Library:
    """Open (creating and migrating as needed) the library database named by ``db``."""
    url = resolve_url(db)
    try:
        engine = make_engine(url)
        current = schema_revision(engine)
        if current != SCHEMA_HEAD:
            if not migrate:
                raise DatabaseError(
                    f"library {url} is at schema {current or 'empty'}, this oscdeep needs "
                    f"{SCHEMA_HEAD}: run `oscdeep db upgrade`"
                )
            foreign = set(inspect(engine).get_table_names()) - {"alembic_version"}
            if current is None and foreign:
                raise DatabaseError(f"{url} holds tables that are not an oscdeep library")
            if current is None:
                create_schema(engine)
            else:
                upgrade(engine, url)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot open library {url}: {exc.__class__.__name__}: {exc}") from exc
    except OSError as exc:
        raise DatabaseError(f"cannot open library {url}: {exc}") from exc
    files = files_dir_for(url)
    return Library(
        url=url,
        engine=engine,
        sessionmaker=sessionmaker(engine, expire_on_commit=False),
        files_dir=files,
    )
