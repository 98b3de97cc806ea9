"""Inline SVG scatter plots of per-frame quality against time, written out by hand.

No JavaScript and no external files: a report page must work offline, years later. Each point
is a ``<circle>`` whose ``<title>`` child carries the frame name, its value and, for a rejected
frame, the reason, so a browser shows them on hover. Points are coloured by status.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 600
HEIGHT = 270
MARGIN_LEFT = 64
MARGIN_RIGHT = 18
MARGIN_TOP = 34
MARGIN_BOTTOM = 46
PAD = 10
"""Pixels between the plot frame and the outermost tick, so edge points are not cut."""

COLOURS = {"accepted": "#2166ac", "rejected": "#d6452a", "failed": "#8c8c8c"}
STATUS_ORDER = ("accepted", "rejected", "failed")
_TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400)


@dataclass(frozen=True)
class Point:
    """One frame's value. ``x`` is a time (naive = UTC) or a number such as a frame index."""

    x: dt.datetime | float | None
    y: float | None
    status: str = "accepted"
    label: str = ""
    reason: str | None = None


@dataclass(frozen=True)
class Scale:
    """Linear map from data values [lo, hi] to pixels [a, b]."""

    lo: float
    hi: float
    a: float
    b: float

    def __call__(self, value: float) -> float:
        if self.hi == self.lo:
            return (self.a + self.b) / 2
        return self.a + (value - self.lo) * (self.b - self.a) / (self.hi - self.lo)


@dataclass(frozen=True)
class Axis:
    """A scale with its tick values and labels."""

    scale: Scale
    ticks: tuple[tuple[float, str], ...]
    is_time: bool = False


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _x_value(x: dt.datetime | float | None) -> float | None:
    if isinstance(x, dt.datetime):
        aware = x if x.tzinfo else x.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    return float(x) if _finite(x) else None


def plotted(points: Sequence[Point]) -> list[Point]:
    """The points that can be drawn: finite x and y."""
    return [p for p in points if _finite(p.y) and _x_value(p.x) is not None]


def nice_step(span: float, target: int = 5, *, integer: bool = False) -> float:
    """A 1-2-2.5-5 × 10^k step giving about ``target`` intervals over ``span``."""
    raw = span / max(target, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    return max(step, 1.0) if integer else step


def _decimals(step: float) -> int:
    places = 0
    while places < 8 and abs(step * 10**places - round(step * 10**places)) > 1e-6:
        places += 1
    return places


def _format(value: float, places: int) -> str:
    text = f"{value:.{places}f}"
    return "0" if text.strip("-0.") == "" else text


def value_axis(values: Sequence[float], a: float, b: float, *, integer: bool = False) -> Axis:
    """Axis over ``values`` with nice round ticks; a constant series gets a small range."""
    lo, hi = min(values), max(values)
    if hi == lo:
        half = abs(lo) * 0.05 if lo else 1.0
        half = max(half, 1.0) if integer else half
        lo, hi = lo - half, hi + half
    step = nice_step(hi - lo, integer=integer)
    start, stop = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    places = _decimals(step)
    n = round((stop - start) / step)
    ticks = tuple((start + i * step, _format(start + i * step, places)) for i in range(n + 1))
    return Axis(Scale(start, stop, a, b), ticks)


def time_axis(seconds: Sequence[float], a: float, b: float) -> Axis:
    """Axis over POSIX times, labelled in UTC on round minutes or hours inside the data range.

    The range is the data's own: a night does not start on a round hour.
    """
    lo, hi = min(seconds), max(seconds)
    if hi - lo < 60:
        lo, hi = lo - 300, hi + 300
    step = next((s for s in _TIME_STEPS if (hi - lo) / s <= 6), _TIME_STEPS[-1])
    with_date = hi - lo > 20 * 3600
    ticks = []
    tick = math.ceil(lo / step) * step
    while tick <= hi:
        when = dt.datetime.fromtimestamp(tick, dt.UTC)
        ticks.append((tick, when.strftime("%m-%d %H:%M" if with_date else "%H:%M")))
        tick += step
    return Axis(Scale(lo, hi, a, b), tuple(ticks), is_time=True)


def plot_axes(points: Sequence[Point], *, width: int = WIDTH, height: int = HEIGHT,
              integer: bool = False) -> tuple[Axis, Axis]:
    """The x and y axes a plot of ``points`` uses (needs at least one plottable point)."""
    shown = plotted(points)
    if not shown:
        raise ValueError("no plottable points")
    xs = [_x_value(p.x) for p in shown]
    x_a, x_b = MARGIN_LEFT + PAD, width - MARGIN_RIGHT - PAD
    y_a, y_b = height - MARGIN_BOTTOM - PAD, MARGIN_TOP + PAD
    is_time = isinstance(shown[0].x, dt.datetime)
    x_axis = time_axis(xs, x_a, x_b) if is_time else value_axis(xs, x_a, x_b, integer=True)
    y_axis = value_axis([float(p.y) for p in shown], y_a, y_b, integer=integer)
    return x_axis, y_axis


def _hover_text(p: Point, y_label: str, unit: str, places: int) -> str:
    lines = [p.label] if p.label else []
    if isinstance(p.x, dt.datetime):
        lines.append(p.x.strftime("%Y-%m-%d %H:%M:%S UTC"))
    lines.append(f"{y_label}: {p.y:.{places}f}{' ' + unit if unit else ''}")
    lines.append(p.status + (f": {p.reason}" if p.reason else ""))
    return "\n".join(lines)


def _n(value: float) -> str:
    return f"{value:.1f}"


def _title(title: str, note: str = "") -> str:
    extra = (f'<tspan dx="12" font-size="12" font-weight="400" fill="{COLOURS["accepted"]}">'
             f"{escape(note)}</tspan>") if note else ""
    return (f'<text class="title" x="{MARGIN_LEFT}" y="20" font-size="14" font-weight="600" '
            f'fill="#1b1f24">{escape(title)}{extra}</text>')


def _axes(x_axis: Axis, y_axis: Axis, box: tuple[float, float, float, float], x_title: str,
          y_title: str, height: int) -> list[str]:
    """Plot frame, grid lines, ticks with labels and the two axis titles."""
    left, right, top, bottom = box
    out = [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
           'fill="#fbfcfd" stroke="#c5ccd5"/>']
    for value, text in y_axis.ticks:
        y = _n(y_axis.scale(value))
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}" '
                   'stroke="#e6e9ee"/>')
        out.append(f'<text class="ytick" x="{left - 6}" y="{y}" text-anchor="end" '
                   f'dominant-baseline="middle" fill="#444c56">{escape(text)}</text>')
    for value, text in x_axis.ticks:
        x = _n(x_axis.scale(value))
        out.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}" '
                   'stroke="#eef0f3"/>')
        out.append(f'<line x1="{x}" x2="{x}" y1="{bottom}" y2="{bottom + 4}" stroke="#8b949e"/>')
        out.append(f'<text class="xtick" x="{x}" y="{bottom + 16}" text-anchor="middle" '
                   f'fill="#444c56">{escape(text)}</text>')
    middle = (top + bottom) / 2
    out.append(f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle" '
               f'fill="#57606a">{escape(x_title)}</text>')
    out.append(f'<text x="14" y="{middle}" text-anchor="middle" fill="#57606a" '
               f'transform="rotate(-90 14 {middle})">{escape(y_title)}</text>')
    return out


def scatter_svg(points: Sequence[Point], *, title: str, y_label: str, unit: str = "",
                x_label: str | None = None, places: int = 2, integer: bool = False,
                width: int = WIDTH, height: int = HEIGHT, median: bool = True) -> str:
    """An SVG plot of ``points``: axes, ticks, labels, a legend, one circle per frame.

    Points without a finite x or y are left out; with none left, the SVG says "no data".
    A dashed line marks the median of the accepted frames (its value is in the title row).
    """
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}"'
            f' width="{width}" height="{height}" role="img" aria-label="{escape(title)}"'
            ' font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">'
            f'<rect class="bg" x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>')
    shown = plotted(points)
    left, right = MARGIN_LEFT, width - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, height - MARGIN_BOTTOM
    if not shown:
        return (head + _title(title) +
                f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
                'fill="#f6f7f9" stroke="#d0d5dc"/>'
                f'<text class="nodata" x="{(left + right) / 2}" y="{(top + bottom) / 2}" '
                'text-anchor="middle" fill="#6a737d" font-size="13">'
                f"no data: no frame has a {escape(y_label)} value yet</text></svg>")

    x_axis, y_axis = plot_axes(shown, width=width, height=height, integer=integer)
    sx, sy = x_axis.scale, y_axis.scale
    parts = _axes(x_axis, y_axis, (left, right, top, bottom),
                  x_label or ("time (UTC)" if x_axis.is_time else "frame"),
                  f"{y_label} ({unit})" if unit else y_label, height)
    ordered = sorted(shown, key=lambda p: _x_value(p.x) or 0.0)
    trail = " ".join(f"{_n(sx(_x_value(p.x) or 0.0))},{_n(sy(float(p.y)))}" for p in ordered)
    parts.append(f'<polyline points="{trail}" fill="none" stroke="#aab4c0" stroke-width="1"/>')
    good = [float(p.y) for p in shown if p.status == "accepted"]
    note = ""
    if median and good:
        mid = statistics.median(good)
        y = _n(sy(mid))
        parts.append(f'<line class="median" x1="{left}" x2="{right}" y1="{y}" y2="{y}" '
                     f'stroke="{COLOURS["accepted"]}" stroke-dasharray="5 4" '
                     'stroke-opacity="0.6"/>')
        value = f"{mid:g}" if integer else f"{mid:.{places}f}"
        note = f"- - median {value}" + (f" {unit}" if unit else "")
    # rejected frames last so they sit on top
    for p in sorted(ordered, key=lambda p: p.status == "accepted", reverse=True):
        colour = COLOURS.get(p.status, COLOURS["failed"])
        r = 4.0 if p.status == "accepted" else 5.0
        parts.append(f'<circle class="pt {escape(p.status)}" cx="{_n(sx(_x_value(p.x) or 0.0))}" '
                     f'cy="{_n(sy(float(p.y)))}" r="{r}" fill="{colour}" stroke="#ffffff" '
                     f'stroke-width="1"><title>{escape(_hover_text(p, y_label, unit, places))}'
                     '</title></circle>')
    return head + _title(title, note) + "".join(parts) + _legend(shown, right) + "</svg>"


def _legend(points: Sequence[Point], right: float) -> str:
    """Status swatches with counts, top right (squares, so circles stay one per frame)."""
    counts = {s: sum(1 for p in points if p.status == s) for s in STATUS_ORDER}
    items = [(s, n) for s, n in counts.items() if n or s == "accepted"]
    out, x = [], right
    for status, n in reversed(items):
        text = f"{status} {n}"
        x -= 7 * len(text) + 18
        out.append(f'<rect x="{x:.0f}" y="11" width="10" height="10" rx="5" '
                   f'fill="{COLOURS.get(status, COLOURS["failed"])}"/>'
                   f'<text x="{x + 14:.0f}" y="20" fill="#444c56">{escape(text)}</text>')
    return "".join(out)


__all__ = ["Axis", "Point", "Scale", "nice_step", "plot_axes", "plotted", "scatter_svg",
           "time_axis", "value_axis"]
