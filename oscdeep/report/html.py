"""One self-contained HTML5 page from a ReportData: inline CSS, inline SVG, data: URI images.

Every piece of text that comes from the library (names, paths, reasons, parameters) goes
through ``html.escape``; the page loads nothing from anywhere, so it can be mailed or archived.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from oscdeep.report.model import (
    FrameRow,
    IntegrationLine,
    MasterRow,
    ProductSection,
    ReportData,
    SessionSection,
    StackSection,
)
from oscdeep.report.plots import Point, scatter_svg

PLOTS: tuple[tuple[str, str, str, int, bool], ...] = (
    # (FrameRow attribute, label, unit, decimals, integer axis)
    ("fwhm", "FWHM", "px", 2, False),
    ("roundness", "roundness", "", 3, False),
    ("background", "background", "ADU", 1, False),
    ("n_stars", "stars", "", 0, True),
)

STACK_STATS: dict[str, str] = {
    "total_exposure_s": "integration",
    "noise_per_channel": "background noise R, G, B (ADU)",
    "star_count": "stars detected",
    "fwhm_px": "FWHM (px)",
    "roundness": "roundness",
    "max_coverage": "most frames on a pixel",
}

CSS = """
:root { --ink:#1b1f24; --muted:#57606a; --line:#d8dee4; --soft:#f6f8fa; --accent:#2166ac;
        --bad:#d6452a; --bad-soft:#fdf0ed; --good:#2166ac; }
* { box-sizing: border-box; }
html { background: #eef1f4; }
body { margin: 0; color: var(--ink); font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { max-width: 1240px; margin: 0 auto; padding: 24px 28px 40px; background: #fff;
        min-height: 100vh; box-shadow: 0 0 0 1px #dfe3e8; }
header.top { border-bottom: 3px solid var(--accent); padding-bottom: 10px; margin-bottom: 14px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 22px; margin: 0 0 4px; padding-top: 6px; }
h3 { font-size: 16px; margin: 18px 0 6px; color: #24292f; }
.meta, .sub { color: var(--muted); margin: 0; }
.sub { margin-bottom: 10px; }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 10px; font-size: 14px; margin: 0 0 18px; }
nav.toc a { color: var(--accent); text-decoration: none; border: 1px solid var(--line);
            border-radius: 14px; padding: 2px 10px; background: var(--soft); }
nav.toc a:hover { background: #e7eef6; }
section { border-top: 1px solid var(--line); padding: 14px 0 8px; margin-top: 14px; }
section.final { border-top: 0; margin-top: 0; padding-top: 0; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; border-radius: 4px;
             background: #000; box-shadow: 0 1px 4px rgba(0,0,0,.25); }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.final figure img { margin: 0 auto; max-height: 720px; }
.final figcaption { text-align: center; }
.plots { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px 16px; }
.plots svg { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
@media (max-width: 860px) { .plots { grid-template-columns: 1fr; } }
svg .pt { cursor: pointer; }
svg .pt:hover { stroke: #000; stroke-width: 2; r: 7px; }
.hint { color: var(--muted); font-size: 13px; margin: 4px 0 0; }
table { border-collapse: collapse; font-size: 13.5px; margin: 4px 0 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e8ebef; text-align: left;
         vertical-align: top; }
th { background: var(--soft); font-weight: 600; color: #24292f; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.rejected td, tr.failed td { background: var(--bad-soft); }
table.kv th { text-align: left; background: none; color: var(--muted); font-weight: 500; }
.wide { overflow-x: auto; }
.pill { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px;
        font-weight: 600; color: #fff; background: var(--good); }
.pill.rejected { background: var(--bad); }
.pill.failed { background: #8c8c8c; }
.reason { color: #8a2a17; }
.nowrap, .path.nowrap { white-space: nowrap; word-break: normal; }
.stack-body { display: grid; grid-template-columns: minmax(0, 3fr) minmax(280px, 2fr);
              gap: 18px; align-items: start; }
.stack-body figure img { width: 100%; }
.side h3:first-child { margin-top: 0; }
@media (max-width: 860px) { .stack-body { grid-template-columns: 1fr; } }
.missing { border: 1px dashed #c9a227; background: #fffbea; color: #6b5200; border-radius: 6px;
           padding: 14px 16px; font-size: 14px; }
.product { margin-top: 14px; }
.note { color: #6b5200; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); font-weight: 600; }
code, .path { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
              font-size: 12.5px; word-break: break-all; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 28px; border-top: 1px solid
         var(--line); padding-top: 10px; }
@media print { html { background: #fff; } .page { box-shadow: none; } details { display: block; } }
"""


# ---------------------------------------------------------------- formatting helpers

def fmt(value: Any, places: int = 2) -> str:
    """A value for a table cell: numbers rounded, lists joined, None as a dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 10 ** -places):
            return f"{value:.3g}"
        return f"{value:.{places}f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, places) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt(v, places)}" for k, v in value.items())
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    """'2 h 04 min', '12 min 30 s', '45 s'."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min" + (f" {secs:02d} s" if secs else "")
    return f"{secs} s"


def _e(value: Any, places: int = 2) -> str:
    return escape(fmt(value, places))


def _anchor(kind: str, ident: int) -> str:
    return f"{kind}-{ident}"


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _img(data: bytes, alt: str) -> str:
    mime = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{encoded}" alt="{escape(alt)}"{dims}>'


def _table(head: Sequence[str | tuple[str, str]], rows: Iterable[Sequence[str]],
           row_classes: Iterable[str] | None = None, cls: str = "") -> str:
    """A table; cells are already-escaped HTML. A head item (label, 'num') right-aligns."""
    labels = [(h, "") if isinstance(h, str) else h for h in head]
    out = [f'<div class="wide"><table class="{cls}"><thead><tr>']
    out += [f'<th class="{c}">{escape(label)}</th>' for label, c in labels]
    out.append("</tr></thead><tbody>")
    classes = iter(row_classes) if row_classes is not None else None
    for row in rows:
        tr_class = next(classes, "") if classes is not None else ""
        out.append(f'<tr class="{escape(tr_class)}">' if tr_class else "<tr>")
        out += [f'<td class="{c}">{cell}</td>' for (_, c), cell in zip(labels, row, strict=True)]
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _kv_table(pairs: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _pill(status: str) -> str:
    return f'<span class="pill {escape(status)}">{escape(status)}</span>'


# ---------------------------------------------------------------- sections

def _frame_points(frames: Sequence[FrameRow], attr: str) -> list[Point]:
    timed = all(f.time is not None for f in frames)
    return [Point(x=f.time if timed else float(i + 1), y=getattr(f, attr), status=f.status,
                  label=f.name, reason=f.reason)
            for i, f in enumerate(frames)]


def session_plots(frames: Sequence[FrameRow]) -> str:
    """The quality plots of one night's lights, in a grid."""
    svgs = [scatter_svg(_frame_points(frames, attr), title=f"{label} ({unit})" if unit else label,
                        y_label=label, unit=unit, places=places, integer=integer)
            for attr, label, unit, places, integer in PLOTS]
    return '<div class="plots">' + "".join(svgs) + "</div>"


def _kinds_table(session: SessionSection) -> str:
    rows = [[escape(k.kind), str(k.total), str(k.accepted), str(k.rejected), str(k.failed),
             escape(fmt_duration(k.exposure_s)) if k.kind == "light" else "—"]
            for k in session.kinds]
    return _table(["kind", ("frames", "num"), ("accepted", "num"), ("rejected", "num"),
                   ("failed", "num"), ("integration", "num")], rows)


def _time(value: dt.datetime | None) -> str:
    return value.strftime("%H:%M:%S") if value else "—"


def _frames_table(frames: Sequence[FrameRow]) -> str:
    rows = [[str(f.id), f'<span class="path nowrap">{escape(f.name)}</span>', _time(f.time),
             _e(f.exposure, 1), _e(f.fwhm), _e(f.roundness, 3), _e(f.background, 1),
             _e(f.noise, 2), _e(f.n_stars), escape(f"{f.weight:.4g}") if f.weight else "—",
             _pill(f.status),
             f'<span class="reason">{escape(f.reason or "")}</span>']
            for f in frames]
    return _table([("id", "num"), "file", "time (UTC)", ("exposure s", "num"),
                   ("FWHM px", "num"), ("roundness", "num"), ("background", "num"),
                   ("noise", "num"), ("stars", "num"), ("weight", "num"), "status", "reason"],
                  rows, row_classes=[f.status for f in frames])


def _masters_table(masters: Sequence[MasterRow]) -> str:
    rows = []
    for m in masters:
        setting = f"gain {fmt(m.gain, 0)}" if m.gain is not None else (
            f"ISO {m.iso}" if m.iso is not None else "—")
        name = f'<span class="path">{escape(m.file_name)}</span>' + (
            "" if m.exists else ' <span class="note">(file missing)</span>')
        rows.append([escape(m.kind), f"#{m.id} v{m.version}", str(m.n_frames),
                     _e(m.exposure, 1), _e(m.temperature, 1),
                     f'<span class="nowrap">{escape(setting)}</span>', escape(m.filter or "—"),
                     _e(m.median, 1), _e(m.noise, 2), _e(m.hot_pixels), str(m.used_by),
                     f'<span class="nowrap">{_e(m.created)}</span>', name])
    return _table(["kind", "master", ("frames", "num"), ("exposure s", "num"),
                   ("temp °C", "num"), "setting", "filter", ("median", "num"),
                   ("noise", "num"), ("hot px", "num"), ("lights", "num"), "built", "file"],
                  rows)


def render_session(session: SessionSection) -> str:
    """A night: counts, quality plots, rejected frames with reasons, masters, all lights."""
    frames = list(session.frames)
    accepted = sum(1 for f in frames if f.status == "accepted")
    exposure = sum(f.exposure or 0.0 for f in frames if f.status == "accepted")
    sub = [f"target {escape(session.target)}" if session.target else "no target",
           f"night of {session.night.isoformat()}" if session.night else None,
           f"{len(frames)} lights, {accepted} accepted, {len(frames) - accepted} left out",
           f"{escape(fmt_duration(exposure))} accepted integration" if exposure else None]
    out = [f'<section class="session" id="{_anchor("session", session.id)}">',
           f"<h2>Session {escape(session.name)}</h2>",
           '<p class="sub">' + " · ".join(s for s in sub if s) + "</p>"]
    if session.notes:
        out.append(f'<p class="hint">{escape(session.notes)}</p>')
    if session.kinds:
        out.append(_kinds_table(session))
    out.append("<h3>Quality of the lights through the night</h3>")
    if frames:
        out.append(session_plots(frames))
        out.append('<p class="hint">Blue: accepted, red: rejected. Hover over a point for the '
                   "frame, its value and why it was rejected; the dashed line is the median of "
                   "the accepted frames.</p>")
    else:
        out.append('<p class="missing">This session has no lights.</p>')
    left_out = [f for f in frames if f.status != "accepted"]
    if left_out:
        out.append(f"<h3>Frames left out ({len(left_out)})</h3>")
        out.append(_table([("id", "num"), "file", "time (UTC)", "status", "reason"],
                          [[str(f.id), f'<span class="path nowrap">{escape(f.name)}</span>',
                            _time(f.time), _pill(f.status),
                            f'<span class="reason">{escape(f.reason or "no reason given")}'
                            "</span>"] for f in left_out]))
    out.append("<h3>Calibration masters</h3>")
    if session.masters:
        out.append(_masters_table(session.masters))
    else:
        out.append('<p class="hint">No master calibration is recorded or matched for these '
                   "lights.</p>")
    if session.masters_note:
        out.append(f'<p class="hint">{escape(session.masters_note)}</p>')
    if frames:
        out.append(f"<details><summary>All {len(frames)} lights with their measurements"
                   f"</summary>{_frames_table(frames)}</details>")
    out.append("</section>")
    return "".join(out)


def _stack_stats(stack: StackSection) -> list[tuple[str, str]]:
    pairs = [("frames", escape(str(stack.n_frames))),
             ("integration", escape(fmt_duration(stack.integration_s)))]
    for key, label in STACK_STATS.items():
        if key in stack.stats and key != "total_exposure_s":
            places = 3 if key == "roundness" else 2
            pairs.append((label, _e(stack.stats[key], places)))
    pairs += [(key.replace("_", " "), _e(value, 3)) for key, value in stack.stats.items()
              if key not in STACK_STATS]
    return pairs


def _stack_options(stack: StackSection) -> list[tuple[str, str]]:
    o = dict(stack.options)
    pairs = []
    if "rejection" in o:
        pairs.append(("rejection", escape(f"{o.pop('rejection')} "
                                          f"{fmt(o.pop('low', None), 1)} / "
                                          f"{fmt(o.pop('high', None), 1)} σ")))
    if not o.get("drizzle"):
        o.pop("pixfrac", None)
        o.pop("cfa_drizzle", None)
    pairs += [(k.replace("_", " "), _e(v, 3)) for k, v in o.items() if v is not None]
    return pairs


def _preview(data: bytes | None, alt: str, note: str | None, caption: str) -> str:
    if data:
        return f"<figure>{_img(data, alt)}<figcaption>{escape(caption)}</figcaption></figure>"
    return f'<div class="missing">No preview: {escape(note or "no image file")}</div>'


def render_product(product: ProductSection) -> str:
    """A finished picture: its preview, parameters and statistics."""
    out = [f'<div class="product" id="{_anchor("product", product.id)}">',
           f"<h3>Picture {escape(product.file_name)}</h3>", '<div class="stack-body">',
           _preview(product.preview, product.file_name, product.note,
                    f"{product.format.upper()}, made {fmt(product.created)}"), '<div class="side">']
    if product.params:
        out.append("<h3>Parameters</h3>" + _kv_table((k.replace("_", " "), _e(v, 3))
                                                     for k, v in product.params.items()))
    if product.stats:
        out.append("<h3>Statistics</h3>" + _kv_table((k.replace("_", " "), _e(v, 3))
                                                      for k, v in product.stats.items()))
    out.append(_kv_table([("file", f'<span class="path">{escape(product.path)}</span>')]))
    out.append("</div></div></div>")
    return "".join(out)


def render_stack(stack: StackSection) -> str:
    """A stack: preview, statistics, options, then the pictures made from it."""
    sub = [f"target {escape(stack.target)}" if stack.target else None,
           f"{stack.n_frames} lights",
           escape(fmt_duration(stack.integration_s)) if stack.integration_s else None,
           f"built {escape(fmt(stack.created))}" if stack.created else None,
           f"in {stack.wall_time_s:.1f} s" if stack.wall_time_s else None]
    out = [f'<section class="stack" id="{_anchor("stack", stack.id)}">',
           f"<h2>Stack {escape(stack.name)}</h2>",
           '<p class="sub">' + " · ".join(s for s in sub if s) + "</p>",
           '<div class="stack-body">',
           _preview(stack.preview, f"stack {stack.name}", stack.note,
                    "Linear stack with an automatic stretch (a preview, not the final picture)."),
           '<div class="side"><h3>Statistics</h3>', _kv_table(_stack_stats(stack))]
    options = _stack_options(stack)
    if options:
        out.append("<h3>Options</h3>" + _kv_table(options))
    extra = []
    if stack.selection:
        extra.append(("selection", f"<code>{escape(stack.selection)}</code>"))
    if stack.output_path:
        extra.append(("file", f'<span class="path">{escape(stack.output_path)}</span>'))
    if extra:
        out.append(_kv_table(extra))
    out.append("</div></div>")
    out += [render_product(p) for p in stack.products]
    out.append("</section>")
    return "".join(out)


def _integration_table(lines: Sequence[IntegrationLine]) -> str:
    rows = [[escape(i.target), escape(i.filter or "—"), str(i.frames), str(i.sessions),
             escape(fmt_duration(i.exposure_s))] for i in lines]
    return _table(["target", "filter", ("lights", "num"), ("sessions", "num"),
                   ("integration", "num")], rows)


def _toc(report: ReportData) -> str:
    links = [f'<a href="#{_anchor("session", s.id)}">Session {escape(s.name)}</a>'
             for s in report.sessions]
    links += [f'<a href="#{_anchor("stack", s.id)}">Stack {escape(s.name)}</a>'
              for s in report.stacks]
    return f'<nav class="toc">{"".join(links)}</nav>' if len(links) > 1 else ""


def render(report: ReportData) -> str:
    """The whole report as one HTML5 document."""
    meta = [escape(report.subtitle) if report.subtitle else None,
            f"generated {escape(report.generated.strftime('%Y-%m-%d %H:%M UTC'))}",
            f"oscdeep {escape(report.software_version)}"]
    body = ['<header class="top">', f"<h1>{escape(report.title)}</h1>",
            '<p class="meta">' + " · ".join(m for m in meta if m) + "</p></header>",
            _toc(report)]
    final = report.final_image()
    if final:
        caption, data = final
        body.append('<section class="final" id="final"><h2>Final image</h2>'
                    f"<figure>{_img(data, caption)}<figcaption>{escape(caption)}</figcaption>"
                    "</figure></section>")
    if report.integration:
        body.append('<section class="overview" id="overview"><h2>Integration by target</h2>'
                    + _integration_table(report.integration) + "</section>")
    body += [render_session(s) for s in report.sessions]
    body += [render_stack(s) for s in report.stacks]
    if not report.sessions and not report.stacks:
        body.append('<section><p class="missing">Nothing to show yet: add a night with '
                    "<code>oscdeep session add PATH</code>.</p></section>")
    footer = f"oscdeep {escape(report.software_version)}"
    if report.location:
        footer += f" · library <span class=\"path\">{escape(report.location)}</span>"
    body.append(f"<footer>{footer}</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="generator" content="oscdeep">'
            f"<title>{escape(report.title)}</title><style>{CSS}</style></head>"
            f'<body><div class="page">{"".join(body)}</div></body></html>\n')


__all__ = ["fmt", "fmt_duration", "render", "render_product", "render_session", "render_stack",
           "session_plots"]
