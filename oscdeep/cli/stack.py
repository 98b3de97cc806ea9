"""``oscdeep stack build|list|show``: integrate a selection of lights, recorded as a Stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err_line, fmt, fmt_duration, out, print_json, table
from oscdeep.cli.options import QUERY_CONTEXT, query_options, selection
from oscdeep.pipeline.stack_options import StackOptions

METHODS = ["winsorized", "sigma", "linear", "percentile", "none", "median"]
NORMS = ["additive_scaling", "additive", "multiplicative", "multiplicative_scaling", "none"]
WEIGHTS = ["weight", "noise", "stars", "none"]
INTERPS = ["bicubic", "bilinear", "lanczos"]
DEBAYERS = ["bilinear", "ea", "vng"]


def integration_options(func: Any) -> Any:
    """The options of how lights are integrated, shared by `stack build` and `run`."""
    options = [
        click.option("--method", type=click.Choice(METHODS), default="winsorized",
                     show_default=True, help="Pixel rejection."),
        click.option("--low", type=float, default=3.0, show_default=True,
                     help="Low rejection sigma."),
        click.option("--high", type=float, default=3.0, show_default=True,
                     help="High rejection sigma."),
        click.option("--norm", type=click.Choice(NORMS), default="additive_scaling",
                     show_default=True, help="Normalisation of each frame to the reference."),
        click.option("--weight", type=click.Choice(WEIGHTS), default="weight", show_default=True,
                     help="Frame weights: the analysis weight (SNR²), 1/noise², star count, "
                          "or none."),
        click.option("--interp", type=click.Choice(INTERPS), default=StackOptions.interpolation,
                     show_default=True, help="Interpolation of the warp onto the reference grid."),
        click.option("--debayer", type=click.Choice(DEBAYERS), default=StackOptions.debayer,
                     show_default=True,
                     help="Demosaicing of the lights (vng: fewest colour fringes and, with the "
                          "bilinear warp, the quietest background at the same star size)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group("stack")
def stack_group() -> None:
    """Integrate lights into stacks, and look at the stacks built."""


@stack_group.command("build", context_settings=QUERY_CONTEXT)
@query_options(exclude=["target", "weight"])
@click.option("--target", "-t", "target_name", metavar="NAME", help="Target whose lights to stack.")
@click.option("--select", "select_text", metavar="QUERY",
              help="Frame selection as one quoted query, e.g. 'fwhm:..3 ^session:2026-11-02*'.")
@integration_options
@click.option("--drizzle", type=click.FloatRange(1.0, 4.0), metavar="SCALE",
              help="Drizzle onto a SCALE× finer grid (2 or 3) instead of interpolating.")
@click.option("--pixfrac", type=click.FloatRange(0.05, 1.0), default=0.7, show_default=True,
              help="Drizzle drop size, as a fraction of an input pixel.")
@click.option("--cfa-drizzle", is_flag=True,
              help="Bayer drizzle: drop each CFA pixel into its own colour, without debayering.")
@click.option("--name", "-n", metavar="NAME", help="Stack name (default: '<target> #N').")
@click.option("--output", "-o", metavar="OUT.fits", help="Output FITS (default: in the library).")
@click.option("--memory", metavar="SIZE", help="Memory budget for integrating, e.g. 4G.")
@click.option("--cache-limit", metavar="SIZE",
              help="Disk the warped-frame cache may use, e.g. 50G (default: half the free disk, "
                   "at most 20G); least recently used frames go first.")
@click.option("--no-catch-up", "no_catch_up", is_flag=True,
              help="Stack only the lights already analysed and registered (by default, lights "
                   "of the target added since, e.g. a new night, are analysed and registered "
                   "first).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def stack_build(app: AppContext, query: tuple[str, ...], target_name: str | None,
                select_text: str | None, method: str, low: float, high: float, norm: str,
                weight: str, interp: str, debayer: str, drizzle: float | None, pixfrac: float,
                cfa_drizzle: bool, name: str | None, output: str | None,
                memory: str | None, cache_limit: str | None, no_catch_up: bool, as_json: bool,
                **kwargs: Any) -> None:
    """Calibrate, debayer, warp and integrate every accepted, registered light selected.

    The selection is QUERY and the field options, ANDed with --target and --select. Lights
    of the selected targets that were added since they were last processed (a new night)
    are analysed and registered first; nothing else is redone. Warped frames are cached in
    the library, so a new selection of the same lights skips that work. Writes a 32-bit
    float RGB FITS with COVERAGE, REJ_LOW and REJ_HIGH extensions.
    """
    import shlex

    from oscdeep.cli.calib import _memory
    from oscdeep.cli.console import RichProgress
    from oscdeep.pipeline.build import StackOptions, build_stack, unique_stack_name
    from oscdeep.pipeline.catch_up import select_lights
    from oscdeep.query import all_of, parse_query

    tokens = list(query)
    if target_name:
        tokens.append(f"target:{target_name}")
    parts = [selection(tuple(tokens), kwargs)]
    if select_text:
        parts.append(parse_query(shlex.split(select_text)))
    chosen = all_of(parts)
    library = app.library()
    chosen_lights = select_lights(library, chosen, targets=[target_name] if target_name else [],
                                  catch_up_first=not no_catch_up, progress=RichProgress())
    ids, targets, caught = (chosen_lights.frame_ids, chosen_lights.target_names,
                            chosen_lights.caught_up)
    if caught is not None and caught.did_something and not as_json:
        _print_catch_up(caught)
    if not ids:
        raise click.UsageError("no accepted light matches the selection")
    stack_name = unique_stack_name(library, name, targets[0] if len(targets) == 1 else "stack")
    out_path = Path(output) if output else \
        library.files_dir / "stacks" / f"{stack_name.replace(' ', '_').replace('#', '')}.fits"
    if cfa_drizzle and not drizzle:
        drizzle = 1.0
    options = StackOptions(rejection=method, low=low, high=high, normalization=norm,
                           weighting=weight, interpolation=interp, debayer=debayer,
                           drizzle=drizzle,
                           pixfrac=pixfrac, cfa_drizzle=cfa_drizzle, memory_bytes=_memory(memory),
                           cache_limit=_memory(cache_limit))
    report = build_stack(library, ids, name=stack_name, output=out_path, options=options,
                         selection=chosen.text(), progress=RichProgress())
    _print_report(report, as_json, caught)


def _print_catch_up(caught: Any) -> None:
    built = caught.masters_built
    out().print(f"Caught up: {caught.analysed} new lights analysed, {caught.registered} "
                f"registered" + (f", {built} master{'s' if built > 1 else ''} built"
                                 if built else ""))
    for frame_id, why in caught.failed:
        err_line(f"[yellow]left out:[/] frame {frame_id}: {why}")
    for w in dict.fromkeys(caught.warnings):
        err_line(f"[yellow]warning:[/] {w}")


def _print_report(report: Any, as_json: bool, caught: Any = None) -> None:
    if as_json:
        print_json({**vars(report), "catch_up": vars(caught) if caught is not None else None})
        return
    out().print(f"Stack [bold]{report.name}[/] (#{report.stack_id}): {report.frames} lights, "
                f"{fmt_duration(report.stats.get('total_exposure_s'))} → {report.output}")
    stats = report.stats
    out().print(f"  warped {report.warped}, from cache {report.cached}, "
                f"{report.seconds:.1f} s; noise per channel "
                + ", ".join(f"{v:.3g}" for v in stats.get("noise_per_channel", []))
                + f"; {stats.get('star_count', 0)} stars, FWHM {fmt(stats.get('fwhm_px'), 2)} px")
    out().print(f"  cache: {report.cache_files} warped frames, "
                f"{report.cache_bytes / 2**30:.2f} GiB"
                + (f" ({report.cache_removed} old ones removed)" if report.cache_removed else ""))
    for w in dict.fromkeys(report.warnings):
        err_line(f"[yellow]warning:[/] {w}")
    for frame_id, why in report.skipped:
        err_line(f"[yellow]left out:[/] frame {frame_id}: {why}")


def stack_record(s: Any) -> dict[str, Any]:
    """A stack as plain data for --json."""
    return {"id": s.id, "name": s.name, "target": s.target.name if s.target else None,
            "selection": s.selection, "options": s.options, "status": s.status,
            "output_path": s.output_path, "n_frames": s.n_frames,
            "total_exposure_s": s.total_exposure, "stats": s.stats, "wall_time_s": s.wall_time,
            "software_version": s.software_version, "created_at": s.created_at}


@stack_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def stack_list(app: AppContext, as_json: bool) -> None:
    """Stacks in the library with their frames, integration and output."""
    from sqlalchemy import select

    from oscdeep.db.models import Stack

    with app.library().session() as orm:
        stacks = list(orm.scalars(select(Stack).order_by(Stack.id)))
        if as_json:
            print_json([stack_record(s) for s in stacks])
            return
        if not stacks:
            out().print("No stacks yet: `oscdeep stack build --target NAME` makes one.")
            return
        tbl = table("Stacks", [("id", "right"), "name", "target", ("frames", "right"),
                               ("integration", "right"), "method", ("time", "right"), "output"])
        for s in stacks:
            tbl.add_row(str(s.id), s.name, s.target.name if s.target else "", str(s.n_frames),
                        fmt_duration(s.total_exposure), s.options.get("rejection", ""),
                        f"{s.wall_time:.1f} s" if s.wall_time else "", s.output_path or "")
        out().print(tbl)


@stack_group.command("show")
@click.argument("stack")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def stack_show(app: AppContext, stack: str, as_json: bool) -> None:
    """One stack (by name or id): selection, options, statistics and every frame's weight."""
    from oscdeep.db.catalog import find_stack

    with app.library().session() as orm:
        found = find_stack(orm, stack)
        record = stack_record(found)
        record["frames"] = [{"id": m.frame_id, "path": m.frame.path, "weight": m.weight,
                             "rejected_fraction": m.rejected_fraction} for m in found.members]
        record["pictures"] = [{"id": p.id, "path": p.path, "format": p.format,
                               "params": p.params, "stats": p.stats,
                               "created_at": p.created_at} for p in found.products]
        if as_json:
            print_json(record)
            return
        for key in ("name", "target", "selection", "options", "output_path", "n_frames",
                    "total_exposure_s", "stats", "wall_time_s", "created_at"):
            out().print(f"{key:>17}: {fmt(record[key], 3)}")
        tbl = table("Frames", [("id", "right"), "file", ("weight", "right"),
                               ("rejected %", "right")])
        for m in record["frames"]:
            tbl.add_row(str(m["id"]), Path(m["path"]).name, fmt(m["weight"], 4),
                        fmt(100 * (m["rejected_fraction"] or 0), 2))
        out().print(tbl)
        if record["pictures"]:
            pics = table("Pictures", [("id", "right"), "file", "background", "colour", "stretch",
                                      "made"])
            for p in record["pictures"]:
                pics.add_row(str(p["id"]), p["path"], str(p["params"].get("background", "")),
                             str(p["params"].get("color", "")),
                             str(p["params"].get("stretch", "")), fmt(p["created_at"]))
            out().print(pics)


@stack_group.command("rebuild")
@click.argument("stack")
@click.option("--select", "select_text", metavar="QUERY",
              help="A new selection (default: the stack's own, evaluated again — new nights of "
                   "the target that match are included).")
@click.option("--name", "-n", metavar="NAME", help="Record the result as a new stack NAME "
                                                    "(default: replace STACK's result).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the FITS here (default: STACK's file, or one named after --name "
                   "beside it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def stack_rebuild(app: AppContext, stack: str, select_text: str | None, name: str | None,
                  output: Path | None, as_json: bool) -> None:
    """Build a stack again with its options, on its selection or a new one.

    Nothing upstream is recomputed: calibration, measurements, registration and cached warped
    frames are reused; only new lights are warped.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.pipeline.build import rebuild_stack

    report = rebuild_stack(app.library(), stack, selection=select_text, new_name=name,
                           output=output, progress=RichProgress())
    _print_report(report, as_json)


@stack_group.command("diff")
@click.argument("first")
@click.argument("second")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def stack_diff(app: AppContext, first: str, second: str, as_json: bool) -> None:
    """What differs between two stacks: frames, options and result statistics."""
    from oscdeep.pipeline.build import diff_stacks

    with app.library().session() as orm:
        diff = diff_stacks(orm, first, second)
    if as_json:
        print_json(diff)
        return
    a, b = diff["names"]
    out().print(f"[bold]{a}[/] vs [bold]{b}[/]")
    for name, ids in ((a, diff["only_first"]), (b, diff["only_second"])):
        shown = " ".join(str(i) for i in ids[:30]) + (" …" if len(ids) > 30 else "")
        out().print(f"  frames only in {name}: {len(ids)}" + (f" (ids {shown})" if ids else ""))
    out().print(f"  frames in both: {diff['common']}")
    tbl = table(None, ["", a, b])
    for key, (va, vb) in diff["differences"].items():
        tbl.add_row(key, fmt(va, 4), fmt(vb, 4))
    out().print(tbl)


COMMANDS = [stack_group]
