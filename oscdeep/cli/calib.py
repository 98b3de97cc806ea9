"""``oscdeep calib build|match|list|show``: the calibration library."""

from __future__ import annotations

from typing import Any

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err_line, fmt, out, print_json, table
from oscdeep.cli.options import QUERY_CONTEXT, query_options, selection

KINDS = ["bias", "dark", "flat", "darkflat"]
METHODS = ["winsorized", "sigma", "linear", "percentile", "none", "median"]


def _memory(value: str | None) -> int | None:
    if value is None:
        return None
    from oscdeep.integrate import parse_memory_size

    try:
        return parse_memory_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--memory") from None


@click.group("calib")
def calib_group() -> None:
    """Master calibrations: build them once, match them to lights by rule, reuse them."""


@calib_group.command("build", context_settings=QUERY_CONTEXT)
@query_options(exclude=["kind"])
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
              help="Build only these kinds of master (repeatable; default all).")
@click.option("--method", type=click.Choice(METHODS), default="winsorized", show_default=True,
              help="Pixel rejection used to combine the frames.")
@click.option("--low", type=float, default=3.0, show_default=True, help="Low rejection sigma.")
@click.option("--high", type=float, default=3.0, show_default=True, help="High rejection sigma.")
@click.option("--temp-tolerance", type=float, default=2.0, show_default=True,
              help="Darks within this many °C of each other form one master.")
@click.option("--memory", metavar="SIZE", help="Memory budget for combining, e.g. 2G or 500M "
                                                "(default: half of the available memory).")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
@pass_app
def calib_build(app: AppContext, query: tuple[str, ...], kinds: tuple[str, ...], method: str,
                low: float, high: float, temp_tolerance: float, memory: str | None,
                as_json: bool, **kwargs: Any) -> None:
    """Build master bias, dark-flat, dark and flat frames from the library's calibration frames.

    Frames are grouped by camera, size, Bayer pattern, binning, gain/ISO and offset; darks also
    by exposure and temperature, flats by session and filter. Flats are calibrated by a
    dark-flat or bias first and normalised per CFA colour. A group whose inputs have not
    changed is not built again; new frames make a new version and the old one is kept.
    QUERY narrows the calibration frames used.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.config import MasterOptions, MatchTolerances
    from oscdeep.pipeline.masters import build_masters

    options = MasterOptions(rejection=method, sigma_low=low, sigma_high=high,
                            memory_bytes=_memory(memory),
                            tolerances=MatchTolerances(temperature=temp_tolerance))
    report = build_masters(app.library(), selection(query, kwargs), kinds=kinds or None,
                           options=options, progress=RichProgress())
    if as_json:
        print_json({"groups": [vars(g) for g in report.groups],
                    "excluded": [{"id": i, "path": p, "reason": r} for i, p, r in report.excluded]})
        return
    if not report.groups:
        out().print("No calibration frames to build masters from. Add some with "
                    "`oscdeep session add PATH` (folders named darks, flats, bias...).")
        return
    tbl = table("Master calibrations", ["kind", "group", "status", ("id", "right"),
                                        ("version", "right"), ("time", "right"), "file"])
    for g in report.groups:
        status = {"built": "[green]built[/]", "up-to-date": "up to date",
                  "failed": "[red]failed[/]"}[g.status]
        tbl.add_row(g.kind, g.description, status, fmt(g.master_id), fmt(g.version),
                    f"{g.seconds:.1f} s" if g.status == "built" else "",
                    (g.path or "").rsplit("/", 1)[-1])
    out().print(tbl)
    for g in report.groups:
        for w in g.warnings:
            err_line(f"[yellow]warning:[/] {g.kind} ({g.description}): {w}")
        if g.error:
            err_line(f"[red]error:[/] {g.kind} ({g.description}): {g.error}")
    for frame_id, path, why in report.excluded:
        err_line(f"[yellow]excluded:[/] frame {frame_id} {path}: {why}")


def master_record(m: Any) -> dict[str, Any]:
    """A master as plain data for --json."""
    return {
        "id": m.id, "kind": m.kind, "version": m.version, "path": m.path,
        "camera": m.camera, "width": m.width, "height": m.height,
        "bayer_pattern": m.bayer_pattern, "binning": f"{m.xbinning}x{m.ybinning}",
        "gain": m.gain, "iso": m.iso, "offset": m.offset, "exposure_s": m.exposure,
        "temperature_c": m.temperature, "temperature_min_c": m.temperature_min,
        "temperature_max_c": m.temperature_max, "filter": m.filter,
        "session_id": m.session_id, "n_frames": m.n_frames, "median": m.median,
        "noise": m.noise, "hot_pixels": m.hot_pixels, "date_start": m.date_start,
        "date_end": m.date_end, "created_at": m.created_at, "options": m.options,
        "software_version": m.software_version,
    }


@calib_group.command("list")
@click.option("--kind", type=click.Choice(KINDS), help="Only masters of this kind.")
@click.option("--all", "show_all", is_flag=True, help="Include older versions.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def calib_list(app: AppContext, kind: str | None, show_all: bool, as_json: bool) -> None:
    """Master calibrations in the library (newest version of each group unless --all)."""
    from sqlalchemy import select

    from oscdeep.db.models import MasterCalibration

    with app.library().session() as orm:
        stmt = select(MasterCalibration).order_by(MasterCalibration.kind, MasterCalibration.id)
        if kind:
            stmt = stmt.where(MasterCalibration.kind == kind)
        masters = list(orm.scalars(stmt))
        if not show_all:
            newest: dict[str, Any] = {}
            for m in masters:
                if m.group_key not in newest or m.version > newest[m.group_key].version:
                    newest[m.group_key] = m
            masters = [m for m in masters if newest[m.group_key] is m]
        if as_json:
            print_json([master_record(m) for m in masters])
            return
        if not masters:
            out().print("No masters yet: `oscdeep calib build` makes them.")
            return
        tbl = table("Master calibrations", [
            ("id", "right"), "kind", ("v", "right"), "camera", "size", "bayer",
            ("gain/ISO", "right"), ("exp s", "right"), ("temp °C", "right"), "filter",
            ("frames", "right"), ("median", "right"), ("noise", "right"), ("hot", "right"),
            "built"])
        for m in masters:
            tbl.add_row(str(m.id), m.kind, str(m.version), m.camera or "",
                        f"{m.width}x{m.height}", m.bayer_pattern or "",
                        fmt(m.gain, 1) if m.gain is not None else fmt(m.iso),
                        fmt(m.exposure, 3), fmt(m.temperature, 1), m.filter or "",
                        str(m.n_frames), fmt(m.median, 4), fmt(m.noise, 4), fmt(m.hot_pixels),
                        fmt(m.created_at))
        out().print(tbl)


@calib_group.command("show")
@click.argument("master_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def calib_show(app: AppContext, master_id: int, as_json: bool) -> None:
    """One master: its properties, statistics, options and the frames it was built from."""
    from oscdeep.db.models import MasterCalibration
    from oscdeep.errors import NotFoundError

    with app.library().session() as orm:
        m = orm.get(MasterCalibration, master_id)
        if m is None:
            raise NotFoundError(f"no master #{master_id}; `oscdeep calib list` shows them")
        record = master_record(m)
        record["sources"] = [{"id": s.frame.id, "path": s.frame.path,
                              "exposure_s": s.frame.exposure,
                              "temperature_c": s.frame.temperature} for s in m.sources]
        if as_json:
            print_json(record)
            return
        for key, value in record.items():
            if key not in ("sources", "options"):
                out().print(f"{key:>18}: {fmt(value, 4)}")
        out().print(f"{'options':>18}: {record['options']}")
        tbl = table(f"Built from {len(record['sources'])} frames",
                    [("id", "right"), "file", ("exp s", "right"), ("temp °C", "right")])
        for s in record["sources"]:
            tbl.add_row(str(s["id"]), s["path"], fmt(s["exposure_s"], 3),
                        fmt(s["temperature_c"], 2))
        out().print(tbl)


@calib_group.command("match", context_settings=QUERY_CONTEXT)
@query_options()
@click.option("--temp-tolerance", type=float, default=2.0, show_default=True,
              help="Largest temperature difference between a dark and the lights, °C.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def calib_match(app: AppContext, query: tuple[str, ...], temp_tolerance: float, as_json: bool,
                **kwargs: Any) -> None:
    """Explain which bias, dark and flat each group of lights will use, and why.

    QUERY is a session name or id, or a frame query (default: every accepted light). Masters
    that came close but lost are listed with the reason.
    """
    from oscdeep.config import MatchTolerances
    from oscdeep.pipeline.matching import match_lights

    with app.library().session() as orm:
        lights = _lights_for(orm, query, kwargs)
        matches = match_lights(orm, lights, MatchTolerances(temperature=temp_tolerance))
        if as_json:
            print_json([_match_record(m) for m in matches])
            return
        if not matches:
            out().print("No accepted lights match.")
            return
        for m in matches:
            _print_match(m)


@calib_group.command("apply", context_settings=QUERY_CONTEXT)
@query_options()
@click.option("--output", "-o", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=str),
              help="Folder for the calibrated lights (32-bit float FITS, *_cal.fits).")
@click.option("--dark-scale", default=None, metavar="exposure|optimize|K",
              help="Dark scaling: by exposure (default when exposures differ), 'optimize' "
                   "(the factor that minimises noise), or a number.")
@click.option("--temp-tolerance", type=float, default=2.0, show_default=True,
              help="Largest temperature difference between a dark and the lights, °C.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def calib_apply(app: AppContext, query: tuple[str, ...], out_dir: str, dark_scale: str | None,
                temp_tolerance: float, as_json: bool, **kwargs: Any) -> None:
    """Calibrate lights with their matched masters and write them to a folder.

    QUERY is a session or a frame query (default: every accepted light). Each light gets
    (light − bias − k·dark) / flat with cosmetic correction of hot and cold pixels; the masters
    used are recorded on the frame and in the output's HISTORY. Your original files are not
    touched.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.config import MatchTolerances
    from oscdeep.pipeline.calibration import write_calibrated

    scale: str | float | None = dark_scale
    if dark_scale not in (None, "exposure", "optimize"):
        try:
            scale = float(dark_scale)  # type: ignore[arg-type]
        except ValueError:
            raise click.BadParameter("use exposure, optimize or a number",
                                     param_hint="--dark-scale") from None
    library = app.library()
    with library.session() as orm:
        ids = [f.id for f in _lights_for(orm, query, kwargs)]
    if not ids:
        out().print("No accepted lights match.")
        return
    run = write_calibrated(library, ids, out_dir, dark_scale=scale,
                           tolerances=MatchTolerances(temperature=temp_tolerance),
                           progress=RichProgress())
    if as_json:
        print_json({"calibrated": run.calibrated, "written": run.written,
                    "failed": [{"id": i, "path": p, "error": e} for i, p, e in run.failed],
                    "warnings": run.warnings,
                    "groups": [_match_record(m) for m in run.matches]})
        return
    out().print(f"Calibrated {run.calibrated} lights into {out_dir}.")
    for w in dict.fromkeys(run.warnings):
        err_line(f"[yellow]warning:[/] {w}")
    for frame_id, path, error in run.failed:
        err_line(f"[red]failed:[/] frame {frame_id} {path}: {error}")


def _lights_for(orm: Any, query: tuple[str, ...], kwargs: dict[str, Any]) -> list[Any]:
    """Accepted lights of a session (by name or id) or of a frame query."""
    from sqlalchemy import func, or_, select

    from oscdeep.db.models import Frame, Session
    from oscdeep.query import select_frames

    stmt = None
    if len(query) == 1 and ":" not in query[0] and not query[0].startswith(("^", "-")):
        ref = query[0]
        session_ids = list(orm.scalars(select(Session.id).where(or_(
            Session.name == ref, func.lower(Session.name).startswith(ref.lower()),
            Session.id == (int(ref) if ref.isdigit() else -1)))))
        if session_ids:
            selection((), kwargs)
            stmt = select_frames(None).where(Frame.session_id.in_(session_ids))
    if stmt is None:
        stmt = select_frames(selection(query, kwargs))
    stmt = stmt.where(Frame.kind == "light", Frame.status == "accepted")
    return list(orm.scalars(stmt).unique())


def _choice_record(c: Any) -> dict[str, Any]:
    return {"master_id": c.master.id if c.master else None,
            "path": c.master.path if c.master else None, "reason": c.reason,
            "scale": c.scale, "warnings": c.warnings,
            "rejected": [{"master_id": r.master_id, "master": r.label, "reason": r.reason}
                         for r in c.rejected]}


def _match_record(m: Any) -> dict[str, Any]:
    return {"session": m.session_name, "lights": m.group.describe(), "frame_ids": m.frame_ids,
            "bias": _choice_record(m.bias), "dark": _choice_record(m.dark),
            "flat": _choice_record(m.flat)}


def _print_match(m: Any) -> None:
    from oscdeep.pipeline.matching import master_label

    console = out()
    console.print(f"\n[bold]{m.session_name}[/]: {m.group.describe()}")
    tbl = table(None, ["role", "master", "why"])
    for c in (m.bias, m.dark, m.flat):
        label = master_label(c.master) if c.master else "[yellow]none[/]"
        tbl.add_row(c.role, label, c.reason)
    console.print(tbl)
    for c in (m.bias, m.dark, m.flat):
        for w in c.warnings:
            console.print(f"  [yellow]warning:[/] {w}")
        for r in c.rejected:
            console.print(f"  [dim]not {c.role}: {r.label}: {r.reason}[/]")


COMMANDS = [calib_group]
