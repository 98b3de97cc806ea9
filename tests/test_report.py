"""HTML reports: gathering a small real library, SVG plots, escaping, a real headless browser."""

from __future__ import annotations

import datetime as dt
import html
import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from oscdeep.report import plots
from oscdeep.report.html import PLOTS, render
from oscdeep.report.model import FrameRow, ReportData, SessionSection, StackSection
from oscdeep.synth import NightConfig

SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = Path("/usr/bin/chromium")
NIGHT = NightConfig(width=320, height=240, n_lights=8, n_darks=3, n_flats=3, n_bias=3, seed=5,
                    n_bad_seeing=1, cloud=True, satellite=False)
PICTURE = (600, 1000)  # (H, W) of the finished picture: wider than a preview


def _picture() -> np.ndarray:
    """A magenta-to-cyan 16-bit RGB gradient, easy to find again in a screenshot."""
    h, w = PICTURE
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :].repeat(h, 0)
    rgb = np.stack([1.0 - 0.8 * ramp, 0.15 + 0.7 * ramp, np.full_like(ramp, 0.9)], axis=-1)
    return np.rint(rgb * 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real small library: a night with two outliers rejected, masters, one stack with a
    finished picture, and a stack whose file has gone missing."""
    import cv2

    from oscdeep.db.models import Frame, Product, Stack
    from oscdeep.pipeline.autoreject import find_outliers
    from oscdeep.pipeline.build import StackOptions, build_stack

    from .conftest import prepare_night

    root = tmp_path_factory.mktemp("report")
    library, ids, _ = prepare_night(root, NIGHT, register=True)
    with library.session() as orm:
        frames = [orm.get(Frame, i) for i in ids]
        for frame, why in find_outliers(frames):
            frame.status, frame.reason = "rejected", why
        accepted = [f.id for f in frames if f.status == "accepted"]
    assert 0 < len(accepted) < len(ids)
    report = build_stack(library, accepted, name="M42 all", output=root / "m42.fits",
                         options=StackOptions(workers=1))
    picture = root / "m42_final.png"
    cv2.imwrite(str(picture), _picture()[..., ::-1])
    with library.session() as orm:
        orm.add(Product(stack_id=report.stack_id, path=str(picture), format="png",
                        params={"stretch": "ghs", "target_background": 0.2},
                        stats={"background": [0.2, 0.21, 0.19]}, software_version="test"))
        orm.add(Stack(name="lost <stack>", output_path=str(root / "gone.fits"), n_frames=3,
                      options={}, stats={}, software_version="test"))
    yield library, ids, root
    library.close()


def test_gather_the_whole_library(lib) -> None:  # noqa: ANN001
    import cv2

    from oscdeep.db.models import Frame
    from oscdeep.pipeline.report import gather

    library, ids, _ = lib
    data = gather(library)
    assert data.scope == "library" and data.title == "oscdeep library report"
    (session,) = data.sessions
    assert [f.id for f in session.frames] == ids  # lights in time order
    with library.session() as orm:
        truth = {f.id: (f.status, f.reason, f.fwhm) for f in
                 orm.scalars(select(Frame).where(Frame.id.in_(ids)))}
    assert {f.id: (f.status, f.reason, f.fwhm) for f in session.frames} == truth
    assert sum(f.status == "rejected" for f in session.frames) >= 1
    assert all(f.reason.startswith("auto: ") for f in session.frames if f.status == "rejected")
    assert {m.kind: m.used_by for m in session.masters} == {"bias": 8, "dark": 8, "flat": 8}
    assert {m.kind: m.n_frames for m in session.masters} == {"bias": 3, "dark": 3, "flat": 3}
    assert all(m.exists for m in session.masters)
    assert {k.kind: k.total for k in session.kinds} == {"light": 8, "dark": 3, "flat": 3,
                                                       "bias": 3}

    stacks = {s.name: s for s in data.stacks}
    good, lost = stacks["M42 all"], stacks["lost <stack>"]
    assert good.n_frames == len([f for f in session.frames if f.status == "accepted"])
    assert good.stats["max_coverage"] == good.n_frames and good.note is None
    preview = cv2.imdecode(np.frombuffer(good.preview, np.uint8), cv2.IMREAD_UNCHANGED)
    assert preview.shape == (NIGHT.height, NIGHT.width, 3) and preview.dtype == np.uint8
    assert preview.std() > 5  # a stretched sky with stars, not a flat field
    (product,) = good.products
    small = cv2.imdecode(np.frombuffer(product.preview, np.uint8), cv2.IMREAD_UNCHANGED)
    assert small.shape == (480, 800, 3)  # 1000 x 600 picture shrunk to 800 wide
    # left edge magenta (R high, G low), right edge cyan-ish: colour order kept (BGR on disk)
    assert small[240, 5, 2] > 200 and small[240, 5, 1] < 60
    assert small[240, -5, 2] < 70 and small[240, -5, 1] > 200
    assert lost.preview is None and "file not found" in lost.note
    assert data.final_image()[0].startswith("m42_final.png")
    (line,) = data.integration
    assert line.target == "M42" and line.frames == good.n_frames


def test_references_resolve_to_session_target_or_stack(lib) -> None:  # noqa: ANN001
    from oscdeep.errors import NotFoundError
    from oscdeep.pipeline.report import gather

    library, ids, _ = lib
    whole = gather(library)
    name = whole.sessions[0].name
    by_name = gather(library, name)
    assert by_name.scope == "session" and by_name.title == f"Session {name}"
    assert [s.name for s in by_name.stacks] == ["M42 all"]  # the stack holding its frames
    assert gather(library, str(whole.sessions[0].id)).scope == "session"
    target = gather(library, "m42")  # any case
    assert target.scope == "target" and [s.name for s in target.stacks] == ["M42 all"]
    assert len(target.sessions[0].frames) == len(ids)
    stack = gather(library, "lost <stack>")
    assert stack.scope == "stack" and stack.sessions == () and stack.stacks[0].preview is None
    explicit = gather(library, "stack:M42 all")
    assert explicit.scope == "stack" and [s.name for s in explicit.sessions] == [name]
    with pytest.raises(NotFoundError, match="no session, target or stack 'M31'.*M42 all"):
        gather(library, "M31")


@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyWarning")
def test_previews_downsample_and_survive_bad_files(tmp_path: Path) -> None:
    import cv2

    from oscdeep.io.fits import write_fits_image
    from oscdeep.pipeline.report import downsample, stack_preview

    rng = np.random.default_rng(3)
    image = (100 + rng.normal(0, 2, (1000, 1600, 3))).astype(np.float32)
    image[400:420, 700:720] = np.nan  # a hole: a block of exactly 10 x 10 output pixels
    small = downsample(image, 800)
    assert small.shape == (500, 800, 3)
    assert np.isnan(small[200:210, 350:360]).all()
    assert np.isfinite(small[195:200, 345:365]).all()  # the hole does not bleed
    assert abs(float(np.nanmean(small)) - 100) < 0.05
    write_fits_image(tmp_path / "big.fits", image)
    png, note = stack_preview(str(tmp_path / "big.fits"))
    assert note is None
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).shape == (500, 800, 3)
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  =    T" + bytes(300))
    png, note = stack_preview(str(tmp_path / "bad.fits"))
    assert png is None and note.startswith("cannot make a preview of bad.fits")
    assert stack_preview(None) == (None, "the stack has no output file")


# ---------------------------------------------------------------- plots

def _circles(svg: str) -> list[ET.Element]:
    return ET.fromstring(svg).findall(f".//{SVG}circle")


def test_points_land_where_the_axes_say() -> None:
    points = [plots.Point(x, y, label=f"f{x}") for x, y in [(0, 0), (10, 100), (2.5, 40),
                                                            (7, 65)]]
    svg = plots.scatter_svg(points, title="test", y_label="value")
    left, right = plots.MARGIN_LEFT + plots.PAD, plots.WIDTH - plots.MARGIN_RIGHT - plots.PAD
    top, bottom = plots.MARGIN_TOP + plots.PAD, plots.HEIGHT - plots.MARGIN_BOTTOM - plots.PAD
    got = sorted((float(c.get("cx")), float(c.get("cy"))) for c in _circles(svg))
    want = sorted((left + x / 10 * (right - left), bottom - y / 100 * (bottom - top))
                  for x, y in [(0, 0), (10, 100), (2.5, 40), (7, 65)])
    assert np.allclose(got, want, atol=0.051)
    root = ET.fromstring(svg)
    yticks = {t.text: float(t.get("y")) for t in root.iter(f"{SVG}text")
              if t.get("class") == "ytick"}
    assert yticks["0"] == pytest.approx(bottom, abs=0.051)
    assert yticks["100"] == pytest.approx(top, abs=0.051)
    assert yticks["40"] == pytest.approx(bottom - 0.4 * (bottom - top), abs=0.051)
    xticks = {t.text: float(t.get("x")) for t in root.iter(f"{SVG}text")
              if t.get("class") == "xtick"}
    assert xticks["10"] == pytest.approx(right, abs=0.051)


def test_hover_titles_carry_name_value_and_reason() -> None:
    start = dt.datetime(2026, 11, 20, 21, 30)
    why = 'auto: fwhm 6.14 px > 5.07 & "windy" <gusts>'
    points = [plots.Point(start + dt.timedelta(minutes=2 * i), 3.0 + 0.1 * i, label=f"L{i}.fits")
              for i in range(5)]
    points.append(plots.Point(start + dt.timedelta(minutes=11), 6.14, "rejected",
                              "L5.fits", why))
    svg = plots.scatter_svg(points, title="FWHM", y_label="FWHM", unit="px")
    circles = _circles(svg)  # parses as XML, so every piece of text was escaped
    rejected = [c for c in circles if "rejected" in c.get("class")]
    assert len(circles) == 6 and len(rejected) == 1
    title = rejected[0].find(f"{SVG}title").text
    assert title.splitlines() == ["L5.fits", "2026-11-20 21:41:00 UTC", "FWHM: 6.14 px",
                                  f"rejected: {why}"]
    assert rejected[0].get("fill") != circles[0].get("fill")
    ticks = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text") if t.get("class") == "xtick"]
    assert ticks == ["21:30", "21:32", "21:34", "21:36", "21:38", "21:40"]
    median = ET.fromstring(svg).find(f".//{SVG}line[@class='median']")
    x_axis, y_axis = plots.plot_axes(points)
    assert float(median.get("y1")) == pytest.approx(y_axis.scale(3.2), abs=0.051)


def test_missing_values_are_skipped_and_empty_plots_say_so() -> None:
    t = dt.datetime(2026, 11, 20, 22, 0)
    points = [plots.Point(t, 1.0), plots.Point(t, None), plots.Point(t, math.nan),
              plots.Point(None, 2.0), plots.Point(t + dt.timedelta(minutes=5), 3.0)]
    assert len(_circles(plots.scatter_svg(points, title="x", y_label="x"))) == 2
    empty = plots.scatter_svg([plots.Point(t, None)], title="stars", y_label="stars")
    assert _circles(empty) == []
    note = ET.fromstring(empty).find(f".//{SVG}text[@class='nodata']").text
    assert note.startswith("no data")


def test_nice_steps_and_constant_series() -> None:
    assert [plots.nice_step(s) for s in (10, 7.3, 0.013, 1200)] == [2, 2, 0.005, 250]
    axis = plots.value_axis([25, 25, 25], 0, 100, integer=True)
    assert axis.scale.lo < 25 < axis.scale.hi
    assert all(float(label) == value for value, label in axis.ticks)


# ---------------------------------------------------------------- html

def _evil_report() -> ReportData:
    evil = '<M42 & "x">'
    frame = FrameRow(1, "<img src=x onerror=alert(1)>.fits", dt.datetime(2026, 1, 1, 22), 3.0,
                     0.9, 400.0, 20, "rejected", "</title><script>alert(1)</script>")
    return ReportData(title=f"Target {evil}", scope="target",
                      generated=dt.datetime(2026, 1, 2), software_version="1.0",
                      sessions=(SessionSection(7, f"night {evil}", evil, None,
                                               frames=(frame,)),),
                      stacks=(StackSection(3, f"stack {evil}", evil, 1, 60.0,
                                           stats={"note": evil}, note=f"file {evil} gone"),))


def test_user_text_is_escaped_and_the_page_loads_nothing() -> None:
    page = render(_evil_report())
    assert '<M42 & "x">' not in page and "<script" not in page and "<img src=x" not in page
    assert html.escape('<M42 & "x">') in page  # &lt;M42 &amp; &quot;x&quot;&gt;
    assert not re.search(r'(src|href)="(https?:)?//', page)

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ARG002
            self.tags.append(tag)

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    parser = Tags()
    parser.feed(page)
    assert "script" not in parser.tags and parser.tags.count("img") == 0
    assert "Target <M42 & \"x\">" in "".join(parser.text)
    assert parser.tags.count("circle") == len(PLOTS)  # one frame, measured in every plot
    svg = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svg) == len(PLOTS)
    for one in svg:
        ET.fromstring(one)  # each plot is well-formed XML after escaping


def test_report_modules_stay_off_the_database_and_cli() -> None:
    code = ("import sys, oscdeep.report, oscdeep.report.plots, oscdeep.report.html; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'click', 'rich') "
            "or m.startswith(('oscdeep.db', 'oscdeep.pipeline', 'oscdeep.cli'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- a real browser

ONLOAD = ("<script>addEventListener('load', () => document.body.setAttribute('data-images', "
          "[...document.images].map(i => i.complete && i.naturalWidth).join(',')));</script>")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True, text=True, timeout=90, check=True)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no headless browser at {CHROMIUM} "
                    "(apt-get install chromium)")
def test_the_page_in_a_real_browser(lib, tmp_path: Path) -> None:  # noqa: ANN001
    import cv2

    from oscdeep.pipeline.report import gather

    library, ids, root = lib
    data = gather(library)
    page = render(data)
    report = tmp_path / "report.html"
    report.write_text(page)
    shutil.copy(report, root / "report.html")  # kept beside the library for a look by hand

    # The DOM as Chromium parsed it; a test-only copy reports how its images decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", ONLOAD + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri()).stdout
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", dom)
    session = data.sessions[0]
    assert headings == ["Final image", "Integration by target",
                        f"Session {html.escape(session.name)}", "Stack M42 all",
                        "Stack lost &lt;stack&gt;"]
    plotted = sum(getattr(f, attr) is not None for f in session.frames for attr, *_ in PLOTS)
    assert plotted == 4 * len(ids)
    assert dom.count("<circle") == plotted
    assert dom.count("<title>") == plotted + 1  # + the page title
    widths = re.search(r'data-images="([^"]*)"', dom).group(1).split(",")
    # final image, stack preview, the picture's preview: all decoded at their sizes
    assert widths == ["800", str(NIGHT.width), "800"]
    assert "No preview: file not found" in dom

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    shutil.copy(shot, root / "shot.png")
    image = cv2.imread(str(shot))
    assert image.shape[:2] == (2000, 1280)
    colours = np.unique(image.reshape(-1, 3) // 4, axis=0)
    assert len(colours) > 300  # pictures, plots, text: far from a blank page
    assert (image.min(axis=-1) < 200).mean() > 0.05
    # the final picture (a magenta-to-cyan ramp) is on screen near the top
    bgr = image[:900].astype(int)
    magenta = (bgr[..., 2] > 190) & (bgr[..., 1] < 80) & (bgr[..., 0] > 190)
    assert magenta.sum() > 5000
    # accepted (blue #2166ac) and rejected (red #d6452a) points are drawn
    assert _pixels_near(image, 0x2166AC) > 40 * len(ids)
    assert _pixels_near(image, 0xD6452A) > 40


def _pixels_near(image: np.ndarray, rgb: int, tol: int = 12) -> int:
    """Pixels of a BGR screenshot within ``tol`` of colour 0xRRGGBB in every channel."""
    want = np.array([rgb & 0xFF, (rgb >> 8) & 0xFF, rgb >> 16])
    return int((np.abs(image.astype(int) - want) < tol).all(axis=-1).sum())
