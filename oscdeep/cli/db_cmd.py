"""``oscdeep db info|upgrade``: where the library is and which schema it has."""

from __future__ import annotations

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import out, print_json


@click.group("db")
def db_group() -> None:
    """The library database itself."""


@db_group.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def db_info(app: AppContext, as_json: bool) -> None:
    """Location, schema revision and row counts of the library."""
    from sqlalchemy import func, select

    from oscdeep.db import models
    from oscdeep.db.engine import schema_revision

    library = app.library()
    counts = {}
    with library.session() as orm:
        for name in ("Target", "Session", "Frame", "MasterCalibration", "Registration", "Stack"):
            model = getattr(models, name)
            counts[model.__tablename__] = orm.scalar(select(func.count()).select_from(model))
    info = {"database": library.display_location(), "files_dir": str(library.files_dir),
            "schema_revision": schema_revision(library.engine), "rows": counts}
    if as_json:
        print_json(info)
        return
    out().print(f"database:  {info['database']}\nfiles:     {info['files_dir']}\n"
                f"schema:    {info['schema_revision']}")
    out().print("rows:      " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Migrate the library to this version's schema (also done on first use)."""
    from oscdeep.db.engine import open_library, schema_revision

    library = open_library(app.db, migrate=True)
    out().print(f"{library.display_location()} is at schema {schema_revision(library.engine)}")
    library.close()


COMMANDS = [db_group]
