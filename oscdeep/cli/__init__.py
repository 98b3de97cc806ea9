"""The ``oscdeep`` command line: a thin layer over the pipeline and the database.

Only this package imports click and rich. Heavy modules (numpy, astropy, OpenCV, SQLAlchemy)
are imported inside commands so that ``oscdeep --help`` starts fast.
"""

from __future__ import annotations

import os
import sys

import click

from oscdeep.cli.app import cli


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning domain errors into one line and an exit code."""
    from oscdeep.errors import OscdeepError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="oscdeep", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OscdeepError as exc:
        if debug:
            raise
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - last resort, a one-liner instead of a traceback
        if debug:
            raise
        sys.stderr.write(f"internal error: {exc.__class__.__name__}: {exc} "
                         "(rerun with --debug for the traceback)\n")
        sys.exit(1)


def entry() -> None:
    """The ``oscdeep`` program: :func:`main`, then leave at once.

    Everything is written and closed by then (the library by the command's context, pools and
    files by their ``with`` blocks), so the interpreter's own teardown — collecting every
    object of numpy, numba, astropy and SQLAlchemy — only costs time: about half a second
    after a run.
    """
    code: int = 0
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            sys.stderr.write(f"{exc.code}\n")
            code = 1
        else:
            code = int(exc.code or 0)
    except BaseException:  # --debug tracebacks: print them as Python would
        import traceback

        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


__all__ = ["cli", "entry", "main"]
