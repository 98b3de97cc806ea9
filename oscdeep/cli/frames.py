"""``oscdeep frames list|reject|accept|fields``: look at frames and select them by query."""

from __future__ import annotations

import sys
from typing import Any

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err, err_line, fmt, out, print_json, table
from oscdeep.cli.options import QUERY_CONTEXT, query_options, selection

QUERY_HELP = """
\b
QUERY terms (ANDed; ',' between groups ORs them; '^' negates a term):
  fwhm:4..  fwhm:..3  'fwhm:>4'  exposure:300  temp:-12..-8  date:2026-11-20..
  target:M3*  kind:light  status:rejected  'object:M 94'
The card spelling '--fwhm>4' (one quoted argument) works too. See `oscdeep frames fields`.
"""

LIST_COLUMNS: list[tuple[str, str, str, int]] = [
    # (header, attribute, unit, digits)
    ("id", "id", "", 0),
    ("session", "session_name", "", 0),
    ("kind", "kind", "", 0),
    ("status", "status", "", 0),
    ("date (UTC)", "date_obs", "", 0),
    ("exp s", "exposure", "", 3),
    ("gain/ISO", "gain_iso", "", 0),
    ("temp °C", "temperature", "", 1),
    ("bayer", "bayer_pattern", "", 0),
    ("fwhm px", "fwhm", "", 2),
    ("round", "roundness", "", 2),
    ("stars", "star_count", "", 0),
    ("bkg ADU", "background", "", 1),
    ("file", "file_name", "", 0),
]


def frame_record(frame: Any) -> dict[str, Any]:
    """A frame as plain data for --json (metadata, status, measurements)."""
    return {
        "id": frame.id,
        "path": frame.path,
        "session": frame.session.name,
        "session_id": frame.session_id,
        "target": frame.target.name if frame.target else None,
        "kind": frame.kind,
        "kind_source": frame.kind_source,
        "status": frame.status,
        "reason": frame.reason,
        "format": frame.file_format,
        "content_hash": frame.content_hash,
        "size_bytes": frame.file_size,
        "camera": frame.camera,
        "camera_make": frame.camera_make,
        "camera_model": frame.camera_model,
        "instrument": frame.instrument,
        "telescope": frame.telescope,
        "width": frame.width,
        "height": frame.height,
        "bayer_pattern": frame.bayer_pattern,
        "row_order": frame.row_order,
        "exposure_s": frame.exposure,
        "iso": frame.iso,
        "gain": frame.gain,
        "offset": frame.offset,
        "temperature_c": frame.temperature,
        "set_temperature_c": frame.set_temperature,
        "xbinning": frame.xbinning,
        "ybinning": frame.ybinning,
        "filter": frame.filter,
        "object": frame.object,
        "date_obs": frame.date_obs,
        "fwhm_px": frame.fwhm,
        "roundness": frame.roundness,
        "eccentricity": frame.eccentricity,
        "star_count": frame.star_count,
        "background_adu": frame.background,
        "noise_adu": frame.noise,
        "snr": frame.snr,
        "weight": frame.weight,
    }


def _cell(frame: Any, attr: str, digits: int) -> str:
    if attr == "session_name":
        return frame.session.name
    if attr == "file_name":
        return frame.path.rsplit("/", 1)[-1]
    if attr == "gain_iso":
        return fmt(frame.gain, 1) if frame.gain is not None else fmt(frame.iso)
    value = getattr(frame, attr)
    return fmt(value, digits)


def _select(orm: Any, query: Any, sort: str | None, limit: int | None) -> list[Any]:
    """Frames matching ``query`` in the wanted order."""
    from oscdeep.db.models import Frame
    from oscdeep.query import select_frames
    from oscdeep.query.fields import get_field

    stmt = select_frames(query)
    if sort:
        descending = sort.startswith("-")
        column = get_field(sort.lstrip("-+"), where=f"--sort {sort}").sql()[0]
        stmt = stmt.order_by(None).order_by(
            column.is_(None), column.desc() if descending else column.asc(), Frame.id)
    else:
        stmt = stmt.order_by(Frame.session_id, Frame.kind, Frame.date_obs, Frame.id)
    if limit:
        stmt = stmt.limit(limit)
    return list(orm.scalars(stmt).unique())


@click.group("frames")
def frames_group() -> None:
    """List frames, and reject or accept them by a query."""


@frames_group.command("list", epilog=QUERY_HELP, context_settings=QUERY_CONTEXT)
@query_options()
@click.option("--sort", "-s", metavar="FIELD", help="Sort by a field (prefix '-' for descending).")
@click.option("--limit", type=int, metavar="N", help="Show at most N frames.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (one object per frame).")
@pass_app
def frames_list(app: AppContext, query: tuple[str, ...], sort: str | None, limit: int | None,
                as_json: bool, **kwargs: Any) -> None:
    """Frames matching QUERY with their metadata and quality measurements."""
    parsed = selection(query, kwargs)
    with app.library().session() as orm:
        frames = _select(orm, parsed, sort, limit)
        if as_json:
            from oscdeep.pipeline.align import current_registration

            records = []
            for f in frames:
                record = frame_record(f)
                reg = current_registration(orm, f) if f.kind == "light" else None
                record["transform"] = [reg.matrix[0:3], reg.matrix[3:6], reg.matrix[6:9]] \
                    if reg else None
                record["reference_path"] = reg.reference.path if reg else None
                record["registration"] = {
                    "reference_id": reg.reference_id, "reference_path": reg.reference.path,
                    "model": reg.model, "rms_px": reg.rms, "inliers": reg.n_inliers,
                } if reg else None
                records.append(record)
            print_json(records)
            return
        title = f"{len(frames)} frames: {parsed.describe()}"
        tbl = table(title, [(h, "right" if d or a in ("id", "star_count") else "left")
                            for h, a, _, d in LIST_COLUMNS])
        for f in frames:
            style = {"rejected": "dim", "failed": "red"}.get(f.status)
            tbl.add_row(*[_cell(f, a, d) for _, a, _, d in LIST_COLUMNS], style=style)
        out().print(tbl)
        if frames and all(f.fwhm is None for f in frames):
            out().print("[dim]Quality columns (fwhm, round, stars, bkg) are empty until "
                        "`oscdeep frames analyze` measures the frames; terms on empty fields "
                        "match nothing.[/]")


def _set_status(app: AppContext, query: tuple[str, ...], kwargs: dict[str, Any], status: str,
                reason: str | None, dry_run: bool, yes: bool, as_json: bool,
                auto: bool = False) -> None:
    parsed = selection(query, kwargs)
    verb = "reject" if status == "rejected" else "accept"
    if parsed.is_all and not yes and not auto:
        raise click.UsageError(f"give a QUERY or field option to say which frames to {verb} "
                               f"(or --yes to {verb} every frame)")
    with app.library().session() as orm:
        frames = _select(orm, parsed, None, None)
        if auto:
            from oscdeep.pipeline.autoreject import find_outliers

            pairs = find_outliers(f for f in frames
                                  if f.kind == "light" and f.status == "accepted")
            title = "automatic outlier rejection" + (
                "" if parsed.is_all else f" among {parsed.describe()}")
            if not any(f.star_count is not None for f in frames):
                err().print("[yellow]note:[/] no frame is measured yet: run "
                            "`oscdeep frames analyze` first")
        else:
            why = reason or (parsed.describe() if status == "rejected" else None)
            pairs = [(f, why) for f in frames if f.status != status]
            title = parsed.describe()
        changing = [f for f, _ in pairs]
        if as_json:
            print_json({"query": title, "matched": len(frames),
                        "changed": [] if dry_run else [f.id for f in changing],
                        "dry_run": dry_run, "would_change": [f.id for f in changing],
                        "reason": pairs[0][1] if pairs and not auto else reason,
                        "reasons": {str(f.id): r for f, r in pairs}})
        else:
            out().print(f"{len(frames)} frames match '{title}'; "
                        f"{len(changing)} would become {status}.")
        if dry_run or not changing:
            if not as_json:
                for f, why in pairs[:100]:
                    out().print(f"  {f.id:>6}  {f.path.rsplit('/', 1)[-1]}"
                                + (f"  ({why})" if auto else ""))
            return
        if not yes and sys.stdin.isatty() and not as_json:
            click.confirm(f"{verb.capitalize()} {len(changing)} frames?", abort=True,
                          err=True)
        for f, why in pairs:
            f.status = status
            f.reason = why
        if not as_json:
            out().print(f"{verb.capitalize()}ed {len(changing)} frames"
                        + (f" (reason: {pairs[0][1]})" if pairs[0][1] and not auto else "")
                        + ".")
            if auto:
                for f, why in pairs:
                    out().print(f"  {f.id:>6}  {f.path.rsplit('/', 1)[-1]}  {why}")


@frames_group.command("reject", epilog=QUERY_HELP, context_settings=QUERY_CONTEXT)
@query_options(exclude=["reason"])
@click.option("--auto", is_flag=True,
              help="Reject the statistical outliers of each night (FWHM, roundness, background, "
                   "star count; see README), among the frames QUERY selects.")
@click.option("--reason", metavar="TEXT", help="Reason to store (default: the query in words).")
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def frames_reject(app: AppContext, query: tuple[str, ...], auto: bool, reason: str | None,
                  dry_run: bool, yes: bool, as_json: bool, **kwargs: Any) -> None:
    """Mark frames matching QUERY as rejected (kept in the library, left out of stacks)."""
    _set_status(app, query, kwargs, "rejected", reason, dry_run, yes, as_json, auto)


@frames_group.command("accept", epilog=QUERY_HELP, context_settings=QUERY_CONTEXT)
@query_options(exclude=["reason"])
@click.option("--reason", metavar="TEXT", help="Note to store with the frames.")
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def frames_accept(app: AppContext, query: tuple[str, ...], reason: str | None, dry_run: bool,
                  yes: bool, as_json: bool, **kwargs: Any) -> None:
    """Mark frames matching QUERY as accepted again."""
    _set_status(app, query, kwargs, "accepted", reason, dry_run, yes, as_json)


@frames_group.command("analyze", epilog=QUERY_HELP, context_settings=QUERY_CONTEXT)
@query_options()
@click.option("--force", is_flag=True, help="Measure again frames that are already measured.")
@click.option("--threshold", type=float, default=5.0, show_default=True,
              help="Star detection threshold, in noise sigmas.")
@click.option("--workers", type=int, metavar="N", help="Processes to use (default: all cores).")
@click.option("--temp-tolerance", type=float, default=2.0, show_default=True,
              help="Largest temperature difference between a dark and the lights, °C.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_app
def frames_analyze(app: AppContext, query: tuple[str, ...], force: bool, threshold: float,
                   workers: int | None, temp_tolerance: float, as_json: bool,
                   **kwargs: Any) -> None:
    """Calibrate each light with its masters, detect and measure its stars, store the metrics.

    Stores FWHM, roundness, eccentricity, star count, background, noise, SNR and a weight on
    each frame, and its star catalog for registration. Frames already measured with the same
    masters are skipped (--force measures again). A frame where nothing can be measured
    (black frame, clouds, no stars) is marked failed with the reason, and the run goes on.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.config import MatchTolerances
    from oscdeep.pipeline.measure import AnalysisOptions, analyze_frames

    parsed = selection(query, kwargs)
    library = app.library()
    with library.session() as orm:
        from oscdeep.db.models import Frame
        from oscdeep.query import select_frames

        stmt = select_frames(parsed).where(Frame.kind == "light", Frame.status != "rejected")
        ids = [f.id for f in orm.scalars(stmt).unique()]
    options = AnalysisOptions(threshold=threshold, workers=workers, force=force,
                              tolerances=MatchTolerances(temperature=temp_tolerance))
    report = analyze_frames(library, ids, options, progress=RichProgress())
    if as_json:
        print_json({"analyzed": len(report.analyzed), "skipped": report.skipped,
                    "frames": [{"id": o.frame_id, "path": o.path, **o.metrics,
                                "failed": o.reason or o.error} for o in report.analyzed],
                    "warnings": report.warnings})
        return
    out().print(f"Measured {len(report.measured)} lights; {len(report.unmeasurable)} could not "
                f"be measured; {report.skipped} were already up to date.")
    for w in dict.fromkeys(report.warnings):
        err_line(f"[yellow]warning:[/] {w}")
    for o in report.unmeasurable:
        out().print(f"  [red]failed[/] {o.frame_id} {o.path.rsplit('/', 1)[-1]}: "
                    f"{o.reason or o.error}")
    if report.measured:
        out().print("See them with `oscdeep frames list --sort fwhm`; reject outliers with "
                    "`oscdeep frames reject --auto`.")


@frames_group.command("fields")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def frames_fields(as_json: bool) -> None:
    """The fields a QUERY can use, with their kind, unit and aliases."""
    from oscdeep.query.fields import FIELDS as fields
    if as_json:
        print_json([{"name": f.name, "kind": str(f.kind), "unit": f.unit, "aliases": list(f.aliases),
                     "help": f.help} for f in fields])
        return
    tbl = table("Query fields", ["field", "kind", "unit", "aliases", "meaning"])
    for f in fields:
        tbl.add_row(f.name, str(f.kind), f.unit or "", ", ".join(f.aliases), f.help)
    out().print(tbl)
    err().print("Examples: fwhm:..3  'fwhm:>4'  temp:-12..-8  date:2026-11-20..  target:M3*  "
                "kind:light,kind:flat  ^status:rejected")


COMMANDS = [frames_group]
