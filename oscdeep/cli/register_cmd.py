"""``oscdeep register``: align every measured light of a target to one reference frame."""

from __future__ import annotations

from typing import Any

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err, err_line, fmt, out, print_json, table
from oscdeep.cli.options import QUERY_CONTEXT, query_options, selection

MODELS = ["shift", "similarity", "affine", "homography"]


@click.command("register", context_settings=QUERY_CONTEXT)
@query_options()
@click.option("--reference", default="auto", show_default=True, metavar="auto|FRAME",
              help="Reference frame: 'auto' keeps the target's reference or picks the best "
                   "frame; or a frame id or path.")
@click.option("--model", type=click.Choice(MODELS), default=None,
              help="Transform model (default: the registration's own choice).")
@click.option("--force", is_flag=True, help="Register again frames already registered.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def register(app: AppContext, query: tuple[str, ...], reference: str, model: str | None,
             force: bool, as_json: bool, **kwargs: Any) -> None:
    """Register measured lights by star-pattern matching, one reference per target.

    Uses the star catalogs of `oscdeep frames analyze` (no image is read). Lights of every
    session of a target go to the same reference, so a new night is registered to the old
    one. A light that cannot be registered is marked failed with the reason; the run goes on.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.db.models import Frame
    from oscdeep.pipeline.align import RegisterOptions, register_frames
    from oscdeep.query import select_frames

    parsed = selection(query, kwargs)
    library = app.library()
    with library.session() as orm:
        stmt = select_frames(parsed).where(Frame.kind == "light", Frame.status != "rejected")
        ids = [f.id for f in orm.scalars(stmt).unique()]
    report = register_frames(library, ids, RegisterOptions(reference, model, force),
                             progress=RichProgress())
    if as_json:
        print_json({"groups": [{"target": g.target, "reference_id": g.reference_id,
                                "reference_path": g.reference_path,
                                "registered": [{"id": i, "rms_px": r, "inliers": n}
                                               for i, r, n in g.registered],
                                "up_to_date": g.up_to_date,
                                "failed": [{"id": i, "path": p, "reason": w}
                                           for i, p, w in g.failed]} for g in report.groups],
                    "not_measured": [{"id": i, "path": p} for i, p in report.not_measured]})
        return
    if not report.groups and not report.not_measured:
        out().print("No lights to register.")
        return
    tbl = table("Registration", ["target", "reference", ("registered", "right"),
                                 ("up to date", "right"), ("failed", "right"),
                                 ("median rms px", "right")])
    for g in report.groups:
        rms = sorted(r for _, r, _ in g.registered if r is not None)
        tbl.add_row(g.target, f"#{g.reference_id} {g.reference_path.rsplit('/', 1)[-1]}",
                    str(len(g.registered)), str(g.up_to_date), str(len(g.failed)),
                    fmt(rms[len(rms) // 2], 3) if rms else "")
    out().print(tbl)
    for g in report.groups:
        for frame_id, path, why in g.failed:
            err_line(f"[red]not registered:[/] {frame_id} {path.rsplit('/', 1)[-1]}: {why}")
    if report.not_measured:
        err().print(f"[yellow]{len(report.not_measured)} lights are not measured yet:[/] run "
                    "`oscdeep frames analyze` first")


COMMANDS = [register]
