"""``oscdeep session add|list|show``: nights of frames in the library."""

from __future__ import annotations

from pathlib import Path

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err_line, fmt, fmt_duration, out, print_json, table

KINDS = ["light", "dark", "flat", "bias", "darkflat"]


@click.group("session")
def session_group() -> None:
    """Add nights of frames to the library and look at them."""


@session_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--target", "-t", metavar="NAME", help="Target of the lights (default: OBJECT header).")
@click.option("--kind", type=click.Choice(KINDS, case_sensitive=False),
              help="Frame type for files whose header and folder name do not say.")
@click.option("--name", "-n", metavar="NAME",
              help="Session name (default: the night's date and target). An existing name adds to it.")
@click.option("--json", "as_json", is_flag=True, help="Print the ingest report as JSON.")
@pass_app
def session_add(app: AppContext, paths: tuple[Path, ...], target: str | None, kind: str | None,
                name: str | None, as_json: bool) -> None:
    """Ingest folders or files (FITS and camera raw) into a session of the library.

    Folders are scanned recursively. Frames are classified by header (IMAGETYP/FRAME), else by
    folder or file name (lights, darks, flats, bias/offset, darkflats), else by --kind. Files
    already in the library (same content) are not added again; moved files are re-linked.
    Unreadable or unsupported files are listed and skipped. Files are only read, never changed.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.pipeline.ingest import IngestOptions, ingest
    from oscdeep.types import FrameKind

    library = app.library()
    report = ingest(
        library, list(paths),
        IngestOptions(target=target, kind=FrameKind(kind.lower()) if kind else None,
                      session_name=name),
        progress=RichProgress(),
    )
    if as_json:
        print_json(ingest_report_json(report))
        return
    print_ingest_report(report)
    from oscdeep.db.catalog import find_session

    shown = [sid for sid, _, _ in report.sessions] or (
        [report.session_id] if report.session_id is not None else [])
    with library.session() as orm:
        for sid in shown:
            show_session(orm, find_session(orm, str(sid)))


def ingest_report_json(report) -> dict:  # noqa: ANN001
    """The ingest report as plain data."""
    return {
        "session": {"id": report.session_id, "name": report.session_name,
                    "created": report.session_created, "target": report.target},
        "sessions": [{"id": i, "name": n, "created": c} for i, n, c in report.sessions],
        "scanned": report.scanned,
        "added": [{"id": i, "path": p, "kind": k} for i, p, k in report.added],
        "added_by_kind": report.added_by_kind(),
        "unchanged": report.unchanged,
        "relinked": [{"id": i, "from": a, "to": b} for i, a, b in report.relinked],
        "duplicates": [{"path": str(s.path), "cause": s.cause} for s in report.duplicates],
        "skipped": [{"path": str(s.path), "cause": s.cause} for s in report.skipped],
        "ignored": report.ignored,
        "warnings": report.warnings,
    }


def print_ingest_report(report) -> None:  # noqa: ANN001
    """Summary of an ingest: added per kind, unchanged, moved, skipped with causes."""
    console = out()
    by_kind = report.added_by_kind()
    added = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "nothing new"
    names = [n for _, n, _ in report.sessions] or ([report.session_name] if report.session_name else [])
    where = (f" to session{'s' if len(names) > 1 else ''} " + ", ".join(f"[bold]{n}[/]" for n in names)
             if names else "")
    console.print(f"Added {added}{where}; {report.unchanged} already in the library, "
                  f"{len(report.relinked)} re-linked after a move, "
                  f"{len(report.duplicates)} duplicate copies, {len(report.skipped)} skipped.")
    for frame_id, old, new in report.relinked:
        console.print(f"  moved: frame {frame_id} {old} -> {new}")
    for w in report.warnings:
        err_line(f"[yellow]warning:[/] {w}")
    if report.skipped or report.duplicates:
        tbl = table("Not ingested", ["file", "cause"])
        for s in report.skipped + report.duplicates:
            tbl.add_row(str(s.path), s.cause)
        console.print(tbl)


def show_session(orm, session) -> None:  # noqa: ANN001
    """Per-kind table of one session: counts, exposures, temperatures, integration."""
    from sqlalchemy import func, select

    from oscdeep.db.catalog import kind_summary
    from oscdeep.db.models import Frame

    console = out()
    head = f"Session [bold]{session.name}[/] (id {session.id})"
    if session.target:
        head += f" - target {session.target.name}"
    if session.night:
        head += f" - night of {session.night.isoformat()}"
    console.print(head)
    stmt = (select(Frame.kind, func.count(), func.min(Frame.exposure), func.max(Frame.exposure),
                   func.min(Frame.temperature), func.max(Frame.temperature),
                   func.min(Frame.date_obs), func.max(Frame.date_obs),
                   func.group_concat(func.distinct(Frame.bayer_pattern)) if _sqlite(orm)
                   else func.min(Frame.bayer_pattern))
            .where(Frame.session_id == session.id).group_by(Frame.kind))
    ranges = {row[0]: row[1:] for row in orm.execute(stmt)}
    tbl = table(None, ["kind", ("frames", "right"), ("accepted", "right"), ("rejected", "right"),
                       ("failed", "right"), ("exposure", "right"), ("temp °C", "right"),
                       "pattern", ("integration", "right"), "first", "last"], show_footer=True)
    total_n = 0
    for s in kind_summary(orm, session_id=session.id):
        _, emin, emax, tmin, tmax, first, last, pattern = ranges[s.kind]
        exposure = fmt(emin, 3, "s") if emin == emax else f"{fmt(emin, 3)}–{fmt(emax, 3)} s"
        temp = fmt(tmin, 1) if tmin == tmax else f"{fmt(tmin, 1)}…{fmt(tmax, 1)}"
        tbl.add_row(s.kind, str(s.total), str(s.accepted), str(s.rejected), str(s.failed),
                    exposure, temp, pattern or "", fmt_duration(s.exposure_s) if s.kind == "light"
                    else "", fmt(first), fmt(last))
        total_n += s.total
    tbl.columns[0].footer = "total"
    tbl.columns[1].footer = str(total_n)
    console.print(tbl)
    show_quality(orm, session.id)


def show_quality(orm, session_id: int | None) -> None:  # noqa: ANN001
    """Quality of the lights: metric ranges, and counts by status with their reasons."""
    from oscdeep.db.catalog import quality_summary

    metrics, statuses = quality_summary(orm, session_id=session_id)
    console = out()
    if any(m.n for m in metrics):
        tbl = table("Quality of the measured lights", ["metric", ("frames", "right"),
                    ("median", "right"), ("min", "right"), ("max", "right"), "unit"])
        for m in metrics:
            if m.n:
                tbl.add_row(m.name, str(m.n), fmt(m.median, 2), fmt(m.minimum, 2),
                            fmt(m.maximum, 2), m.unit)
        console.print(tbl)
    if any(st != "accepted" for st, _, _ in statuses):
        tbl = table("Lights by status", ["status", ("frames", "right"), "reason"])
        for st, why, n in statuses:
            tbl.add_row(st, str(n), why)
        console.print(tbl)


def _sqlite(orm) -> bool:  # noqa: ANN001
    return orm.get_bind().dialect.name == "sqlite"


@session_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def session_list(app: AppContext, as_json: bool) -> None:
    """Sessions in the library with frame counts and integration time."""
    from sqlalchemy import case, func, select

    from oscdeep.db.models import Frame, Session, Target

    library = app.library()
    with library.session() as orm:
        light = case((Frame.kind == "light", 1), else_=0)
        light_exp = case((Frame.kind == "light", Frame.exposure), else_=0.0)
        stmt = (
            select(Session.id, Session.name, Target.name, Session.night, func.count(Frame.id),
                   func.sum(light), func.coalesce(func.sum(light_exp), 0.0),
                   func.min(func.coalesce(Frame.instrument, Frame.camera_model)))
            .outerjoin(Target, Session.target_id == Target.id)
            .outerjoin(Frame, Frame.session_id == Session.id)
            .group_by(Session.id, Session.name, Target.name, Session.night)
            .order_by(Session.night, Session.name)
        )
        rows = orm.execute(stmt).all()
    if as_json:
        print_json([{"id": i, "name": n, "target": t, "night": night, "frames": nf,
                     "lights": nl or 0, "integration_s": float(e or 0), "camera": cam}
                    for i, n, t, night, nf, nl, e, cam in rows])
        return
    if not rows:
        out().print(f"No sessions yet in {library.display_location()}. "
                    "Add one with `oscdeep session add PATH`.")
        return
    tbl = table(f"Sessions in {library.display_location()}",
                [("id", "right"), "name", "target", "night", "camera", ("frames", "right"),
                 ("lights", "right"), ("integration", "right")], show_footer=True)
    for i, n, t, night, nf, nl, e, cam in rows:
        tbl.add_row(str(i), n, t or "", night.isoformat() if night else "", cam or "", str(nf),
                    str(nl or 0), fmt_duration(e))
    tbl.columns[1].footer = f"{len(rows)} sessions"
    tbl.columns[5].footer = str(sum(r[4] for r in rows))
    tbl.columns[6].footer = str(sum(r[5] or 0 for r in rows))
    tbl.columns[7].footer = fmt_duration(sum(float(r[6] or 0) for r in rows))
    out().print(tbl)


@session_group.command("show")
@click.argument("session")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def session_show(app: AppContext, session: str, as_json: bool) -> None:
    """One session (by id or name): frames per kind, exposures, temperatures, integration."""
    from oscdeep.db.catalog import find_session, kind_summary, quality_summary

    with app.library().session() as orm:
        found = find_session(orm, session)
        if as_json:
            metrics, statuses = quality_summary(orm, session_id=found.id)
            print_json({
                "quality": [vars(m) for m in metrics],
                "lights_by_status": [{"status": st, "reason": why or None, "frames": n}
                                     for st, why, n in statuses],
                "id": found.id, "name": found.name,
                "target": found.target.name if found.target else None,
                "night": found.night, "source_path": found.source_path,
                "kinds": [vars(s) for s in kind_summary(orm, session_id=found.id)],
            })
            return
        show_session(orm, found)


COMMANDS = [session_group]
