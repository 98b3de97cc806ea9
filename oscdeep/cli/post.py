"""``oscdeep post``: a stack becomes a finished picture (gradient, colour, stretch, export)."""

from __future__ import annotations

from typing import Any

import click

from oscdeep.cli.app import AppContext, pass_app
from oscdeep.cli.console import fmt, out, print_json, table


def finishing_options(func: Any) -> Any:
    """The options of how a stack is finished, shared by `post`, `run` and `demo`."""
    options = [
        click.option("--background", default="poly:2", show_default=True,
                     metavar="poly[:DEG]|rbf[:SMOOTH]|none",
                     help="Gradient model removed from the stack (degree 1-4; RBF smoothing)."),
        click.option("--background-mode", type=click.Choice(["subtract", "divide"]),
                     default="subtract", show_default=True,
                     help="Subtract (light pollution) or divide (vignetting residue)."),
        click.option("--exclude", multiple=True, metavar="rect:X0,Y0,X1,Y1|circle:X,Y,R",
                     help="Region (stack pixels) never sampled as sky; repeat for more."),
        click.option("--color", default="auto", show_default=True,
                     metavar="auto|average|solar|background|none",
                     help="Colour calibration: neutral sky and white balance from the stars "
                          "(average star, or near-median stars as a solar proxy)."),
        click.option("--stretch", default="ghs", show_default=True,
                     metavar="ghs[:LEVEL]|mtf[:LEVEL]|none",
                     help="Stretch: Generalized Hyperbolic (default) or midtones transfer, "
                          "with the sky brought to LEVEL (0.2 / 0.25)."),
        click.option("--saturation", type=float, default=0.0, show_default=True,
                     help="Colour saturation boost after the stretch (0 = none, 0.3 = mild)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def finish_options_from(background: str, background_mode: str, exclude: tuple[str, ...],
                        color: str, stretch: str, saturation: float) -> Any:
    """FinishOptions from the values of :func:`finishing_options` (errors name the option)."""
    from oscdeep.background import parse_exclusion
    from oscdeep.finish import FinishOptions

    return FinishOptions.from_specs(background, color, stretch, saturation,
                                    tuple(parse_exclusion(e) for e in exclude),
                                    background_mode=background_mode)


@click.command("post")
@click.argument("stack")
@click.option("--output", "-o", metavar="OUT.png|.tif|.fits|.jpg",
              help="Picture to write; its extension picks the format "
                   "(default: the stack's path with .png).")
@finishing_options
@click.option("--bits", type=click.Choice(["8", "16", "32"]),
              help="Bits per channel where the format offers a choice (PNG/TIFF 16, TIFF 32 "
                   "float).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def post(app: AppContext, stack: str, output: str | None, background: str, background_mode: str,
         exclude: tuple[str, ...], color: str, stretch: str, saturation: float,
         bits: str | None, as_json: bool) -> None:
    """Finish STACK (name or id) into a picture: remove the gradient, calibrate the colour,
    stretch, and write it. The picture is recorded in the library with its parameters.

    \b
    Formats by extension: .png / .tif 16-bit, .fits 32-bit float, .jpg 8-bit preview.
    """
    from oscdeep.cli.console import RichProgress
    from oscdeep.pipeline.post import post_stack

    options = finish_options_from(background, background_mode, exclude, color, stretch,
                                  saturation)
    report = post_stack(app.library(), stack, output=output, options=options,
                        bits=int(bits) if bits else None, progress=RichProgress())
    print_post_report(report, as_json)


def print_post_report(report: Any, as_json: bool = False) -> None:
    """What a finishing run did, as a table or JSON."""
    if as_json:
        print_json(vars(report))
        return
    s = report.summary
    tbl = table(f"Picture of {report.stack}", ["step", "result"])
    if "background" in s:
        b = s["background"]
        tbl.add_row("background", f"{b['model']}: {b['samples']} sky cells "
                    f"({b['rejected_cells']} left out), residual rms "
                    f"{', '.join(fmt(v, 2) for v in b['residual_rms'])}")
    if "color" in s:
        c = s["color"]
        tbl.add_row("colour", f"factors R {c['factors'][0]:.3f} G {c['factors'][1]:.3f} "
                    f"B {c['factors'][2]:.3f} from {c['n_stars']} stars"
                    + (f" ({c['reference']})" if c["reference"] else ""))
    if "stretch" in s:
        st = s["stretch"]
        tbl.add_row("stretch", f"{st.get('method', '')}: sky at "
                    f"{fmt(st.get('background'), 3)}, "
                    f"{100 * st.get('white_clipped_fraction', 0):.3f} % white")
    tbl.add_row("written", f"{report.output} ({report.format}, {report.seconds:.1f} s)")
    out().print(tbl)


COMMANDS = [post]
