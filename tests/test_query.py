"""The frame selection language over a tiny library: SQL and the Python matcher must agree."""

from __future__ import annotations

import datetime as dt
import shlex

import pytest
from sqlalchemy import func, select, update

from oscdeep.db.engine import open_library
from oscdeep.db.models import Frame, Session, Target
from oscdeep.errors import QueryError
from oscdeep.query import (
    FIELDS,
    all_of,
    parse_query,
    per_field_options,
    query_from_options,
    select_frames,
)
from oscdeep.query.parse import parse_date_span

D = dt.datetime

# id: session, kind, status, exposure, temperature, fwhm, stars, date_obs, extra columns
ROWS: dict[int, tuple] = {
    1: ("a", "light", "accepted", 300.0, -10.0, 2.5, 120, D(2026, 11, 20, 21, 0), {}),
    2: ("a", "light", "accepted", 300.0, -10.2, 3.1, 95, D(2026, 11, 20, 22, 30), {"filter": "L-eXtreme"}),
    3: ("a", "light", "rejected", 300.0, -9.8, 4.6, 40, D(2026, 11, 20, 23, 59, 59), {"reason": "fwhm > 4 px"}),
    4: ("a", "light", "accepted", 300.0, -10.1, None, None, D(2026, 11, 21, 0, 10), {}),
    5: ("a", "dark", "accepted", 300.0, -10.0, None, None, D(2026, 11, 21, 1, 0), {}),
    6: ("a", "flat", "accepted", 0.5, -10.0, None, None, D(2026, 11, 21, 2, 0), {}),
    7: ("a", "bias", "accepted", 0.0001, None, None, None, None, {"path": "/astro/night-a/BIAS_50%_a_1.fits"}),
    8: ("b", "light", "accepted", 180.0, -12.5, 3.9, 60, D(2026, 11, 21, 20, 0), {"iso": 800}),
    9: ("b", "light", "failed", 180.0, None, None, None, D(2026, 11, 21, 20, 5), {"reason": "cannot read"}),
    10: ("b", "light", "accepted", 180.0, -8.0, 4.0, 50, D(2026, 11, 22, 3, 0), {}),
    11: ("b", "dark", "accepted", 180.0, -12.0, None, None, None, {"path": "/astro/night-b/BIAS_50x_b_11.cr2"}),
    12: ("b", "light", "accepted", 120.0, -11.0, 2.0, 200, D(2026, 11, 22, 21, 0), {"object": "M 94", "bayer_pattern": "GRBG"}),
}
SESSION_A = set(range(1, 8))
ALL = set(ROWS)


def _columns(fid: int) -> dict:
    sess, kind, status, exposure, temp, fwhm, stars, date, extra = ROWS[fid]
    dslr = sess == "b"
    columns = dict(
        id=fid,
        kind=kind,
        status=status,
        exposure=exposure,
        temperature=temp,
        fwhm=fwhm,
        star_count=stars,
        date_obs=date,
        path=f"/astro/night-{sess}/{kind.upper()}_{fid:03d}." + ("cr2" if dslr else "fits"),
        content_hash=f"{fid:02d}" + "ab" * 31,
        file_size=1000,
        file_format="raw" if dslr else "fits",
        width=6000 if dslr else 3008,
        height=4000 if dslr else 3008,
        bayer_pattern="RGGB",
        instrument=None if dslr else "ZWO ASI2600MC Pro",
        camera_make="Canon" if dslr else None,
        camera_model="EOS 6D" if dslr else None,
        gain=None if dslr else 100.0,
        xbinning=2 if fid == 6 else 1,
        object="NGC 7000" if dslr else "M31",
        roundness=None if fwhm is None else 0.9 - 0.05 * fid,
    )
    columns.update(extra)
    return columns


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = open_library(tmp_path_factory.mktemp("query") / "lib.db")
    with lib.session() as orm:
        m31, ngc = Target(id=1, name="M31"), Target(id=2, name="NGC 7000")
        sessions = {
            "a": Session(id=1, name="2026-11-20 M31", target=m31),
            "b": Session(id=2, name="2026-11-21 NGC7000", target=ngc),
        }
        orm.add_all([m31, ngc, *sessions.values()])
        orm.flush()
        for fid in ROWS:
            columns = _columns(fid)
            sess = sessions[ROWS[fid][0]]
            light = columns["kind"] == "light"
            orm.add(Frame(session=sess, target=sess.target if light else None, **columns))
    yield lib
    lib.close()


@pytest.fixture(scope="module")
def frames(library):
    """Every frame with its session and target loaded, detached for the Python matcher."""
    with library.session() as orm:
        rows = orm.scalars(select_frames()).unique().all()
        orm.expunge_all()
    return rows


def sql_ids(library, query) -> set[int]:
    with library.session() as orm:
        return {f.id for f in orm.scalars(select_frames(query)).unique()}


def py_ids(frames, query) -> set[int]:
    return {f.id for f in frames if query.matches(f)}


CASES: list[tuple[str | list[str], set[int]]] = [
    ("", ALL),
    (["fwhm:4.."], {3, 10}),
    (["fwhm:4..", ",", "kind:dark"], {3, 5, 10, 11}),
    ("fwhm:4.., kind:dark", {3, 5, 10, 11}),
    ("fwhm:4.. ,kind:bias", {3, 7, 10}),
    (["fwhm:4..", "stars:..50"], {3, 10}),
    ("fwhm:3..4", {2, 8, 10}),
    ("fwhm:..3", {1, 12}),
    ("fwhm:>4", {3}),
    ("fwhm:>=4", {3, 10}),
    ("fwhm:<3.1", {1, 12}),
    ("fwhm:<=3.1", {1, 2, 12}),
    ("fwhm:=4", {10}),
    ("fwhm:4", {10}),
    ("fwhm:!=4", {1, 2, 3, 8, 12}),
    ("^fwhm:>4", {1, 2, 8, 10, 12}),  # frames not yet measured are never matched
    ("^fwhm:..3", {2, 3, 8, 10}),
    ("^^fwhm:>4", {3}),
    ("stars:50", {10}),
    ("star_count:>100", {1, 12}),
    ("temp:-12..-8", {1, 2, 3, 4, 5, 6, 10, 11, 12}),
    ("temp:..-10", {1, 2, 4, 5, 6, 8, 11, 12}),
    ("temp:<-10", {2, 4, 8, 11, 12}),
    ("ccd-temp:-10", {1, 5, 6}),
    ("^temp:-10", {2, 3, 4, 8, 10, 11, 12}),
    ("exposure:300", {1, 2, 3, 4, 5}),
    ("exp:<1", {6, 7}),
    ("exptime:1e-4", {7}),
    ("exposure:120..180", {8, 9, 10, 11, 12}),
    ("iso:800", {8}),
    ("gain:100 kind:light", {1, 2, 3, 4}),
    ("binning:2", {6}),
    ("width:>4000", {8, 9, 10, 11, 12}),
    ("id:3..5", {3, 4, 5}),
    ("roundness:>=0.7", {1, 2, 3}),
    ("session_id:1", SESSION_A),
    ("date:2026-11-20", {1, 2, 3}),
    ("date:2026-11-21", {4, 5, 6, 8, 9}),
    ("date:2026-11-20..", ALL - {7, 11}),
    ("date:..2026-11-21", {1, 2, 3, 4, 5, 6, 8, 9}),
    ("date:2026-11-21..2026-11-22", {4, 5, 6, 8, 9, 10, 12}),
    ("date:>2026-11-21", {10, 12}),
    ("date:<2026-11-21", {1, 2, 3}),
    ("date:<=2026-11-20", {1, 2, 3}),
    ("date:2026-11-20T22:00..2026-11-21T00:30", {2, 3, 4}),
    ("date:2026-11-21T01", {5}),
    ("date:2026-11-20T23:59:59", {3}),
    ("date:2026-11-21T02:00+01:00", {5}),  # 01:00 UTC
    ("date:2026-11", ALL - {7, 11}),
    ("^date:2026-11-20", {4, 5, 6, 8, 9, 10, 12}),  # no date: never matched
    ("date:!=2026-11-20", {4, 5, 6, 8, 9, 10, 12}),
    ("kind:light", {1, 2, 3, 4, 8, 9, 10, 12}),
    ("kind:LIGHT , kind:dark", {1, 2, 3, 4, 5, 8, 9, 10, 11, 12}),
    ("kind:dark*", {5, 11}),
    ("status:rejected", {3}),
    ("^status:rejected kind:light", {1, 2, 4, 8, 9, 10, 12}),
    ("status:!=accepted", {3, 9}),
    ("pattern:GRBG", {12}),
    ("bayer:rggb", ALL - {12}),
    ("format:raw", {8, 9, 10, 11, 12}),
    ("target:M3*", {1, 2, 3, 4}),
    ("target:m31", {1, 2, 3, 4}),
    ("target:'NGC 7000'", {8, 9, 10, 12}),
    ("^target:M31", ALL - {1, 2, 3, 4}),  # text negation includes frames with no target
    ("session:*NGC*", {8, 9, 10, 11, 12}),
    ("object:'M 94'", {12}),
    (["object:M 94"], {12}),
    ("object:m31", SESSION_A),
    ("camera:*ZWO*", SESSION_A),
    ("camera:'canon eos 6d'", {8, 9, 10, 11, 12}),
    ("camera:*6?", {8, 9, 10, 11, 12}),
    ("filter:l-*", {2}),
    ("^filter:l-extreme", ALL - {2}),
    ("reason:*fwhm*", {3}),
    ("telescope:*", set()),
    ("path:*.CR2", {8, 9, 10, 11, 12}),
    ("night-a", SESSION_A),
    ("DARK", {5}),
    ("bias_50%", {7}),  # % and _ are literal characters, not LIKE wildcards
    ("^night-a", {8, 9, 10, 11, 12}),
    ("hash:03ab", {3}),
    (["--fwhm>4"], {3}),
    (["--fwhm>=4"], {3, 10}),
    (["--exposure=300", "kind:light"], {1, 2, 3, 4}),
    (["--temp<-10"], {2, 4, 8, 11, 12}),
    (["--fwhm", ">4"], {3}),
    ("'--stars<=50' , status:failed", {3, 9, 10}),
    ("kind:light fwhm:..3 , kind:light stars:>=100", {1, 12}),
    ("kind:flat , kind:bias , ^exposure:>1", {6, 7}),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_sql_and_python_agree(library, frames, query, expected):
    parsed = parse_query(query)
    assert sql_ids(library, parsed) == expected
    assert py_ids(frames, parsed) == expected
    reparsed = parse_query(parsed.text())  # terms() spell the same query back
    assert reparsed == parsed
    assert sql_ids(library, reparsed) == expected


def test_case_table_is_big_enough():
    assert len(CASES) >= 30
    assert {f.name for f in FIELDS} >= {"fwhm", "stars", "temp", "date", "camera", "target", "hash"}


def test_where_works_in_update_and_with_joins(library):
    """``where()`` needs no joins, and stays correct when the caller joins Session or Target."""
    query = parse_query("target:M31 fwhm:>3")
    with library.sessionmaker() as orm:
        joined = select(Frame.id).join(Frame.session).join(Session.target).where(query.where())
        assert set(orm.scalars(joined)) == {2, 3}
        count = orm.scalar(select(func.count()).select_from(Frame).where(query.where()))
        assert count == 2
        orm.execute(update(Frame).where(query.where()).values(reason=query.describe()))
        reasons = dict(orm.execute(select(Frame.id, Frame.reason).where(Frame.id.in_([2, 3]))).all())
        assert reasons == {2: "target is M31 and fwhm > 3 px", 3: "target is M31 and fwhm > 3 px"}
        orm.rollback()


def test_values_are_bound_parameters():
    clause = parse_query("object:\"x'); DROP TABLE frames; --\"").where()
    compiled = clause.compile()
    assert "DROP" not in str(compiled)
    assert any("drop table" in str(v) for v in compiled.params.values())


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("fwhm:>4 stars:<50", "fwhm > 4 px and stars < 50"),
        ("kind:light , kind:dark", "kind is light or kind is dark"),
        ("^status:rejected", "not (status is rejected)"),
        ("", "all frames"),
        ("fwhm:2..4", "fwhm between 2 and 4 px"),
        ("fwhm:4..", "fwhm >= 4 px"),
        ("temp:..-10", "temp <= -10 °C"),
        ("--exposure=300", "exposure = 300 s"),
        ("fwhm:2.5", "fwhm = 2.5 px"),
        ("date:2026-11-20", "date on 2026-11-20"),
        ("date:2026-11-20..2026-11-22", "date from 2026-11-20 to 2026-11-22"),
        ("date:>2026-11-20", "date after 2026-11-20"),
        ("date:..2026-11-21", "date until 2026-11-21"),
        ("target:M3*", "target matches M3*"),
        ("object:'M 94'", "object is 'M 94'"),
        ("hash:03ab", "hash starts with 03ab"),
        ("subs", "path contains subs"),
        ("kind:dark* , fwhm:>4 stars:<50", "kind is dark or darkflat or (fwhm > 4 px and stars < 50)"),
    ],
)
def test_describe(query, words):
    assert parse_query(query).describe() == words


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("fwmh:>4", "unknown field 'fwmh' in 'fwmh:>4'; did you mean fwhm?"),
        ("kind:ligth", "unknown kind 'ligth' in 'kind:ligth'; did you mean light?"),
        ("pattern:RGBG", "RGGB"),
        ("kind:light,dark", "to OR values write kind:a , kind:b"),
        ("fwhm:", "empty value in 'fwhm:'"),
        ("fwhm:5..3", "bad range '5..3' in 'fwhm:5..3'"),
        ("fwhm:..", "bad range '..'"),
        ("fwhm:1..2..3", "bad range"),
        ("fwhm:abc", "bad number 'abc' in 'fwhm:abc'"),
        ("fwhm:4px", "(in px)"),
        ("fwhm:>", "missing number after '>'"),
        ("date:2026-13-01", "bad date '2026-13-01' in 'date:2026-13-01'"),
        ("date:yesterday", "bad date 'yesterday'"),
        ("date:2026-11-22..2026-11-20", "bad range"),
        ("target:>M31", "'>' compares numbers and dates, but target is text"),
        ("^", "'^' must be followed by a term"),
        ("--fwhm", "empty value for --fwhm"),
        ("--fwmh>4", "unknown field 'fwmh' in '--fwmh>4'; did you mean fwhm?"),
        ("'unbalanced", "cannot split query"),
    ],
)
def test_errors_name_the_bad_part(query, message):
    with pytest.raises(QueryError) as info:
        parse_query(query)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_empty_value_explains_the_shell_redirection():
    for call in (lambda: parse_query(["fwhm:"]), lambda: query_from_options({"fwhm": ""})):
        with pytest.raises(QueryError) as info:
            call()
        text = str(info.value)
        assert "redirection" in text and "--fwhm '>4'" in text and "fwhm:4.." in text


def test_options_give_the_same_query_as_terms(library):
    options = {"fwhm": ">4", "stars": "<50", "exposure": "300", "temp": "-12..-8", "kind": None}
    terms = parse_query(["fwhm:>4", "stars:<50", "exposure:300", "temp:-12..-8"])
    assert query_from_options(options) == terms
    assert query_from_options({"fwhm": ">4", "stars": "<50"}).describe() == "fwhm > 4 px and stars < 50"
    assert query_from_options({"ccd-temp": "<-10", "session_id": "2"}) == parse_query("temp:<-10 session_id:2")
    assert query_from_options({"fwhm": ["2..", "<=3"]}) == parse_query("fwhm:2.. fwhm:<=3")
    assert query_from_options({}).is_all
    combined = all_of([parse_query("kind:light"), query_from_options({"fwhm": "..3"})])
    assert sql_ids(library, combined) == {1, 12}
    with pytest.raises(QueryError, match="unknown field 'fwmh' in --fwmh; did you mean fwhm"):
        query_from_options({"fwmh": ">4"})
    with pytest.raises(QueryError, match="bad number 'x' in --stars '<x'"):
        query_from_options({"stars": "<x"})


def test_per_field_options_cover_the_registry():
    options = {o.field: o for o in per_field_options()}
    assert options["fwhm"].flag == "--fwhm" and options["fwhm"].metavar == "EXPR"
    assert "px" in options["fwhm"].help and options["fwhm"].unit == "px"
    assert options["session_id"].flag == "--session-id" and options["session_id"].dest == "session_id"
    assert options["kind"].choices == ("light", "dark", "flat", "bias", "darkflat")
    assert options["temp"].unit == "°C"
    numeric = {o.field for o in per_field_options(("float", "int"), exclude=["id"])}
    assert "id" not in numeric and {"fwhm", "stars", "exposure", "temp"} <= numeric
    assert not numeric & {"kind", "target", "date"}
    # every option's value grammar parses through query_from_options
    samples = {"float": "2..4", "int": ">3", "enum": None, "text": "x*", "date": "2026-11-20.."}
    for option in options.values():
        value = option.choices[0] if option.kind == "enum" else samples[option.kind]
        assert not query_from_options({option.dest: value}).is_all


def test_date_spans():
    assert parse_date_span("2026-11-20") == (D(2026, 11, 20), D(2026, 11, 21))
    assert parse_date_span("2026-02") == (D(2026, 2, 1), D(2026, 3, 1))
    assert parse_date_span("2026-12") == (D(2026, 12, 1), D(2027, 1, 1))
    assert parse_date_span("2026") == (D(2026, 1, 1), D(2027, 1, 1))
    assert parse_date_span("2026-11-20T21:30") == (D(2026, 11, 20, 21, 30), D(2026, 11, 20, 21, 31))
    assert parse_date_span("2026-11-20 21:30:05.5Z")[0] == D(2026, 11, 20, 21, 30, 5, 500000)
    assert parse_date_span("2026-11-20T23:30-02:00")[0] == D(2026, 11, 21, 1, 30)


def test_null_quality_never_matches_a_numeric_term(library, frames):
    unmeasured = {f.id for f in frames if f.fwhm is None}
    assert unmeasured == {4, 5, 6, 7, 9, 11}
    for text in ("fwhm:>4", "fwhm:..4", "^fwhm:>4", "^fwhm:..4", "fwhm:!=4", "^fwhm:!=4"):
        query = parse_query(text)
        assert not sql_ids(library, query) & unmeasured, text
        assert not py_ids(frames, query) & unmeasured, text


def test_operators_compose():
    a, b = parse_query("fwhm:>4"), parse_query("kind:dark")
    assert (a | b) == parse_query("fwhm:>4 , kind:dark")
    assert (a & b) == parse_query("fwhm:>4 kind:dark")
    assert shlex.split((~(a & b)).text()) == ["^fwhm:>4", ",", "^kind:dark"]
