"""Root command group and the shared context (which library to open)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from oscdeep.db.engine import Library


@dataclass
class AppContext:
    """Options of the root command, and the library opened on first use."""

    db: str | None = None
    debug: bool = False
    _library: Library | None = field(default=None, repr=False)

    def library(self) -> Library:
        if self._library is None:
            from oscdeep.db.engine import open_library

            self._library = open_library(self.db)
        return self._library


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", metavar="PATH|URL", envvar="OSCDEEP_DB", show_envvar=True,
              help="Library database: a SQLite file or a SQLAlchemy URL "
                   "(default: library.db in the per-user data folder).")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="oscdeep", prog_name="oscdeep")
@click.pass_context
def cli(ctx: click.Context, db: str | None, debug: bool) -> None:
    """oscdeep: calibrate, register and stack one-shot-colour deep-sky nights, kept in a library.

    \b
    Typical night:
      oscdeep session add ~/astro/2026-11-20/ --target M31
      oscdeep calib build
      oscdeep frames analyze
      oscdeep frames reject --fwhm '>4'
      oscdeep register
      oscdeep stack build --target M31 --name all
      oscdeep post all -o m31.png
      oscdeep report -o m31.html
    or all at once:  oscdeep run ~/astro/2026-11-20/ --target M31 -o m31.fits
    Try it on a generated night:  oscdeep demo
    """
    ctx.obj = AppContext(db=db, debug=debug)
    ctx.call_on_close(lambda: ctx.obj._library.close() if ctx.obj._library else None)


def _register() -> None:
    from oscdeep.cli import (calib, db_cmd, demo, frames, post, register_cmd, report_cmd,
                             run_cmd, session, stack, target)

    for module in (session, frames, calib, register_cmd, stack, post, report_cmd, run_cmd,
                   target, demo, db_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()
