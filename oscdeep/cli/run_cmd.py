"""``oscdeep run``: a whole night (or several) from raw files to a stack, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err_line, fmt_duration, out, table
from oscdeep.cli.post import finish_options_from, finishing_options
from oscdeep.cli.stack import integration_options


@click.command("run")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--target", "-t", metavar="NAME", help="Target of the lights (default: OBJECT).")
@click.option("--output", "-o", required=True, metavar="OUT.fits", help="The stack to write.")
@click.option("--name", "-n", metavar="NAME", help="Stack name (default: '<target> #N').")
@integration_options
@click.option("--picture", "-p", metavar="OUT.png|.tif|.jpg",
              help="Finished picture (default: the stack's path with .png).")
@click.option("--no-picture", is_flag=True, help="Stop at the stack: no finished picture.")
@finishing_options
@pass_app
def run(app: AppContext, paths: tuple[Path, ...], target: str | None, output: str,
        name: str | None, method: str, low: float, high: float, norm: str, weight: str,
        interp: str, debayer: str, picture: str | None, no_picture: bool,
        **finishing: Any) -> None:
    """Ingest PATHS, build masters, measure, reject outliers, register, stack and finish the
    picture, in one go.

    Each step skips what the library already holds, so running it again after an
    interruption, or with a new night of the same target, does only the missing work.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.pipeline.stack_options import StackOptions
    from oscdeep.pipeline.run import run_pipeline

    finish = None if no_picture else finish_options_from(**finishing)
    report = run_pipeline(app.library(), list(paths), output=output, target=target, name=name,
                          stack_options=StackOptions(rejection=method, low=low, high=high,
                                                     normalization=norm, weighting=weight,
                                                     interpolation=interp, debayer=debayer),
                          finish=finish, picture=picture, progress=RichProgress())
    print_run_summary(report)


def print_run_summary(report: Any) -> None:
    """One table: what each step of a run did."""
    tbl = table("Run summary", ["step", "result"])
    ing = report.ingest
    tbl.add_row("ingest", f"{len(ing.added)} frames added ({', '.join(f'{n} {k}' for k, n in sorted(ing.added_by_kind().items())) or 'none new'}), "
                f"{ing.unchanged} known, {len(ing.skipped)} skipped")
    built = report.masters.groups
    tbl.add_row("masters", ", ".join(f"{g.kind} #{g.master_id} {g.status}" for g in built)
                or "no calibration frames")
    an = report.analysis
    tbl.add_row("analysis", f"{len(an.measured)} measured, {len(an.unmeasurable)} failed, "
                f"{an.skipped} already measured")
    tbl.add_row("rejection", f"{len(report.rejected)} outliers rejected")
    for g in report.registration.groups:
        tbl.add_row("registration", f"{g.target}: {len(g.registered) + g.up_to_date} registered "
                    f"to frame #{g.reference_id}, {len(g.failed)} failed")
    for s in report.stacks:
        tbl.add_row("stack", f"{s.name}: {s.frames} lights, "
                    f"{fmt_duration(s.stats.get('total_exposure_s'))} → {s.output}")
    if not report.stacks:
        tbl.add_row("stack", "none: no accepted, registered light")
    for p in report.pictures:
        tbl.add_row("picture", f"{p.stack} → {p.output}")
    out().print(tbl)
    for skipped in ing.skipped:
        err_line(f"skipped {skipped.path}: {skipped.cause}")
    for why in ing.warnings:
        err_line(f"[yellow]warning:[/] {why}")
    for why in dict.fromkeys(w for s in report.stacks for w in s.warnings):
        err_line(f"[yellow]warning:[/] {why}")
    for frame_id, why in report.rejected:
        err_line(f"rejected frame {frame_id}: {why}")


COMMANDS = [run]
