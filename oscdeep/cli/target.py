"""``oscdeep target list``: what the library holds per target and filter."""

from __future__ import annotations

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import fmt_duration, out, print_json, table


@click.group("target")
def target_group() -> None:
    """Targets and their total integration."""


@target_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def target_list(app: AppContext, as_json: bool) -> None:
    """Accepted lights and integration time per target and filter."""
    from oscdeep.db.catalog import integration_by_target

    with app.library().session() as orm:
        rows = integration_by_target(orm)
    if as_json:
        print_json([{"target": r.target, "filter": r.filter or None, "lights": r.frames,
                     "integration_s": r.exposure_s, "sessions": r.sessions} for r in rows])
        return
    tbl = table("Integration per target (accepted lights)",
                ["target", "filter", ("sessions", "right"), ("lights", "right"),
                 ("integration", "right")], show_footer=True)
    for r in rows:
        tbl.add_row(r.target, r.filter, str(r.sessions), str(r.frames), fmt_duration(r.exposure_s))
    tbl.columns[0].footer = "total"
    tbl.columns[3].footer = str(sum(r.frames for r in rows))
    tbl.columns[4].footer = fmt_duration(sum(r.exposure_s for r in rows))
    out().print(tbl)


COMMANDS = [target_group]
