"""``oscdeep demo``: generate a realistic synthetic night and run oscdeep on it."""

from __future__ import annotations

from pathlib import Path

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import err, out
from oscdeep.cli.post import finish_options_from, finishing_options

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
@finishing_options
@pass_app
def demo(app: AppContext, directory: Path, seed: int, lights: int | None, size: str | None,
         pattern: str | None, file_format: str, force: bool, **finishing: object) -> None:
    """Write a synthetic OSC night to DIRECTORY (default ./oscdeep-demo) and ingest it.

    The night has lights, darks, flats and bias with stars of several colours, a faint nebula,
    light-pollution gradients, vignetting and dust, hot pixels, varying seeing, one satellite
    trail; its truth is written to DIRECTORY/truth. Unless --db is given, the demo uses its
    own library DIRECTORY/library.db, so your real library is left alone.
    """
    import dataclasses

    from oscdeep.cli.console import RichProgress
    from oscdeep.cli.run_cmd import print_run_summary
    from oscdeep.cli.session import show_session
    from oscdeep.db.catalog import find_session
    from oscdeep.pipeline.run import run_pipeline
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
    run = run_pipeline(library, [night_dir], output=directory / "stack.fits",
                       target=config.target,  # camera raw files do not name it
                       finish=finish_options_from(**finishing),  # type: ignore[arg-type]
                       picture=directory / "picture.png", progress=RichProgress())
    print_run_summary(run)
    report = run.ingest
    if report.session_id is not None:
        with library.session() as orm:
            show_session(orm, find_session(orm, str(report.session_id)))
    from oscdeep.pipeline.report import write_report

    write_report(library, None, directory / "report.html")
    where = library.display_location()
    made = (f"Stack:   {run.stacks[0].output}\nPicture: {run.pictures[0].output}\n"
            if run.stacks and run.pictures else "No stack was made (see the summary above).\n")
    out().print(f"\nLibrary: {where}\n{made}"
                f"Report:  {directory / 'report.html'} (open it in a browser)\n"
                f"Look around:  oscdeep --db {where} frames list --sort fwhm\n"
                f"              oscdeep --db {where} stack show 1")


COMMANDS = [demo]
