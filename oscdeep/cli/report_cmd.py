"""``oscdeep report``: an HTML page of a night, a target, a stack or the whole library."""

from __future__ import annotations

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import out


@click.command("report")
@click.argument("ref", required=False, metavar="[SESSION|TARGET|STACK]")
@click.option("--output", "-o", default="report.html", show_default=True, metavar="FILE.html",
              help="Where to write the page.")
@pass_app
def report(app: AppContext, ref: str | None, output: str) -> None:
    """A self-contained HTML page of a night, a target, a stack, or (no argument) the whole
    library: quality plots per night, masters, stacks with previews, the final pictures.

    \b
    Prefix the reference to be explicit: session:2026-11-20, target:M42, stack:3.
    """
    from oscdeep.pipeline.report import write_report

    size = write_report(app.library(), ref, output)
    out().print(f"Report written to {output} ({size / 1024:.0f} KiB); open it in a browser.")


COMMANDS = [report]
