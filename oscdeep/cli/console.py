"""Terminal output: rich consoles, tables, JSON, and the rich implementation of Progress."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

PIPE_WIDTH = 160
_out: Console | None = None
_err: Console | None = None


def out() -> Console:
    """Console for results (stdout); colour only on a terminal."""
    global _out
    if _out is None:
        _out = Console(highlight=False, soft_wrap=False)
        if not _out.is_terminal and "COLUMNS" not in os.environ:
            _out.width = PIPE_WIDTH  # piped tables stay readable instead of folding at 80
    return _out


def err() -> Console:
    """Console for progress, warnings and errors (stderr)."""
    global _err
    if _err is None:
        _err = Console(stderr=True, highlight=False)
    return _err


def err_line(message: str) -> None:
    """One warning or error on stderr, never folded at the console's width, so the file it
    names stays whole in logs and pipes (progress bars keep their own wrapping)."""
    err().print(message, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout: plain JSON, no colour, no wrapping."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def table(title: str | None, columns: Iterable[str | tuple[str, str]], **kwargs: Any) -> Table:
    """A table whose columns are names, or (name, justify) pairs."""
    tbl = Table(title=title, title_justify="left", header_style="bold", **kwargs)
    for col in columns:
        name, justify = (col, "left") if isinstance(col, str) else col
        tbl.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return tbl


def fmt(value: Any, digits: int = 2, unit: str = "") -> str:
    """A cell: '' for None, numbers rounded, an optional unit."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    elif isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    else:
        text = str(value)
    return f"{text} {unit}".rstrip() if unit and text else text


def fmt_duration(seconds: float | None) -> str:
    """Integration time as '2 h 05 min', '4 min 10 s' or '30 s'."""
    if not seconds:
        return "0 s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.3g} s"


class RichProgress:
    """Progress bars on stderr; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = err().is_terminal if enabled is None else enabled
        self._bar: Progress | None = None
        self._task: Any = None

    def begin(self, description: str, total: int | None = None) -> None:
        if not self.enabled:
            return
        self.end()
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err(),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, step: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, step)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
