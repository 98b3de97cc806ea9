"""``oscdeep demo``: generate a realistic synthetic night and run oscdeep on it."""

from __future__ import annotations

from pathlib import Path

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err, out

PATTERNS = ["RGGB", "BGGR", "GRBG", "GBRG"]


@click.command("demo")
@click.argument("directory", required=False, default="oscdeep-demo",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed of the night.")
@click.option("--lights", type=int, help="Number of light frames (default: the sample night's).")
@click.option("--size", metavar="WxH", help="Sensor size, e.g. 3000x2000.")
@click.option("--pattern", type=click.Choice(PATTERNS), help="Bayer pattern of the camera.")
@click.option("--format", "file_format", type=click.Choice(["fits", "dng"]), default="fits",
              show_default=True, help="Write FITS (astro camera) or DNG (camera raw) files.")
@click.option("--force", is_flag=True, help="Write the night again even if DIRECTORY holds one.")
@pass_app
def demo(app: AppContext, directory: Path, seed: int, lights: int | None, size: str | None,
         pattern: str | None, file_format: str, force: bool) -> None:
    """Write a synthetic OSC night to DIRECTORY (default ./oscdeep-demo) and ingest it.

    The night has lights, darks, flats and bias with stars of several colours, a faint nebula,
    light-pollution gradients, vignetting and dust, hot pixels, varying seeing, one satellite
    trail; its truth is written to DIRECTORY/truth. Unless --db is given, the demo uses its
    own library DIRECTORY/library.db, so your real library is left alone.
    """
    import dataclasses

    from oscdeep.cli.console import RichProgress
    from oscdeep.cli.session import print_ingest_report, show_session
    from oscdeep.db.catalog import find_session
    from oscdeep.pipeline.ingest import IngestOptions, ingest
    from oscdeep.pipeline.sample_night import write_sample_night
    from oscdeep.synth import NightConfig

    changes: dict[str, object] = {"seed": seed, "file_format": file_format}
    if lights is not None:
        changes["n_lights"] = lights
    if pattern:
        changes["pattern"] = pattern
    if size:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise click.BadParameter(f"{size!r} is not WIDTHxHEIGHT", param_hint="--size") from None
        changes.update(width=width, height=height)
    config = dataclasses.replace(NightConfig(), **changes)

    night_dir = directory / "night"
    if force or not (night_dir / "truth").exists():
        err().print(f"Writing a synthetic night to {night_dir} ...")
        write_sample_night(night_dir, config)
    else:
        err().print(f"Using the night already in {night_dir} (--force writes it again)")
    if app.db is None:
        app.db = str(directory.resolve() / "library.db")
    library = app.library()
    report = ingest(library, [night_dir], IngestOptions(), progress=RichProgress())
    print_ingest_report(report)
    _process(library)
    if report.session_id is not None:
        with library.session() as orm:
            show_session(orm, find_session(orm, str(report.session_id)))
    where = library.display_location()
    out().print(f"\nLibrary: {where}\nLook around:  oscdeep --db {where} frames list --sort fwhm"
                f"\n              oscdeep --db {where} calib match")


def _process(library) -> None:  # noqa: ANN001
    """The stages built so far: masters, measurement, outlier rejection, registration."""
    from sqlalchemy import select

    from oscdeep.cli.console import RichProgress
    from oscdeep.db.models import Frame
    from oscdeep.pipeline.align import register_frames
    from oscdeep.pipeline.autoreject import find_outliers
    from oscdeep.pipeline.masters import build_masters
    from oscdeep.pipeline.measure import analyze_frames

    built = build_masters(library, progress=RichProgress())
    out().print("Masters: " + ", ".join(f"{g.kind} #{g.master_id} ({g.status})"
                                        for g in built.groups))
    with library.session() as orm:
        ids = list(orm.scalars(select(Frame.id).where(Frame.kind == "light")))
    analysed = analyze_frames(library, ids, progress=RichProgress())
    out().print(f"Measured {len(analysed.measured)} lights "
                f"({len(analysed.unmeasurable)} could not be measured).")
    with library.session() as orm:
        lights = orm.scalars(select(Frame).where(Frame.kind == "light",
                                                 Frame.status == "accepted"))
        for frame, why in find_outliers(lights):
            frame.status, frame.reason = "rejected", why
            out().print(f"Rejected {frame.path.rsplit('/', 1)[-1]}: {why}")
    with library.session() as orm:
        ids = list(orm.scalars(select(Frame.id).where(Frame.kind == "light",
                                                      Frame.status == "accepted")))
    registered = register_frames(library, ids, progress=RichProgress())
    for g in registered.groups:
        out().print(f"Registered {len(g.registered) + g.up_to_date} lights of {g.target} to "
                    f"frame #{g.reference_id}; {len(g.failed)} could not be registered.")


COMMANDS = [demo]
