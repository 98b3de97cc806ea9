"""The field registry of the frame selection language: one entry per queryable property.

A field's ``kind`` picks how its values are parsed and which query node matches it:

* ``float`` / ``int``: numbers, ranges ``4..6``, comparisons ``>4``;
* ``date``: ISO dates or date-times, whole days (months, hours...) as given;
* ``text``: case-insensitive exact value or ``*``/``?`` glob;
* ``enum``: one of a fixed set of values, checked when the query is parsed.

Each field knows its SQL expressions (correlated to ``Frame``, so they work in any ``SELECT``,
``UPDATE`` or ``DELETE`` over frames without extra joins) and how to read the same values from a
``Frame`` object in Python. A field with two expressions (``camera``) matches when either does.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from oscdeep.errors import QueryError
from oscdeep.types import BAYER_PATTERNS, FileFormat, FrameKind, FrameStatus

if TYPE_CHECKING:  # SQLAlchemy is imported when SQL is built, so the CLI starts fast
    from sqlalchemy import ColumnElement

    from oscdeep.db.models import Frame

FieldKind = Literal["float", "int", "text", "enum", "date"]
NUMERIC_KINDS: frozenset[str] = frozenset({"float", "int"})


@dataclass(frozen=True)
class Field:
    """One queryable property of a frame.

    ``column`` names where the value lives: a ``Frame`` attribute (``"fwhm"``), a related name
    (``"session.name"``, ``"target.name"``) or ``"camera"`` (instrument, or make and model).
    ``prefix`` makes a text value match the start of the column (content hashes).
    """

    name: str
    column: str
    kind: FieldKind
    unit: str = ""
    help: str = ""
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    prefix: bool = False

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC_KINDS

    def sql(self) -> list[ColumnElement[Any]]:
        """SQL expressions holding the field's value (NULL where there is none)."""
        from oscdeep.db.models import Frame

        return _SQL[self.column]() if self.column in _SQL else [getattr(Frame, self.column)]

    def values(self, frame: Frame) -> list[Any]:
        """The same values read from a ``Frame`` object (related rows loaded)."""
        if self.column in _PY:
            raw = _PY[self.column](frame)
        else:
            raw = [getattr(frame, self.column)]
        return [_clean(v) for v in raw]


def _clean(value: Any) -> Any:
    """Python value as the database would give it back: NaN is NULL, datetimes naive UTC."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _related_name(model_name: str, fk_name: str) -> Callable[[], list[Any]]:
    def build() -> list[ColumnElement[Any]]:
        from sqlalchemy import select
        from sqlalchemy.orm import aliased

        from oscdeep.db import models

        # An alias of its own keeps the subquery correct when the caller has joined the table.
        other = aliased(getattr(models, model_name))
        fk = getattr(models.Frame, fk_name)
        sub = select(other.name).where(other.id == fk).correlate_except(other)
        return [sub.scalar_subquery()]

    return build


def _camera_sql() -> list[ColumnElement[Any]]:
    from sqlalchemy import func, literal

    from oscdeep.db.models import Frame

    make = func.coalesce(Frame.camera_make, literal(""))
    model = func.coalesce(Frame.camera_model, literal(""))
    make_model = func.nullif(func.trim(make + literal(" ") + model), literal(""))
    return [Frame.instrument, make_model]


def _camera_py(frame: Frame) -> list[Any]:
    make_model = " ".join(p for p in (frame.camera_make, frame.camera_model) if p).strip()
    return [frame.instrument, make_model or None]


_SQL: dict[str, Callable[[], list[ColumnElement[Any]]]] = {
    "session.name": _related_name("Session", "session_id"),
    "target.name": _related_name("Target", "target_id"),
    "camera": _camera_sql,
}
_PY: dict[str, Callable[[Frame], list[Any]]] = {
    "session.name": lambda f: [f.session.name if f.session is not None else None],
    "target.name": lambda f: [f.target.name if f.target is not None else None],
    "camera": _camera_py,
}


def _f(
    name: str,
    column: str,
    kind: FieldKind,
    unit: str,
    help: str,
    *aliases: str,
    choices: Iterable[str] = (),
    prefix: bool = False,
) -> Field:
    return Field(name, column, kind, unit, help, aliases, tuple(str(c) for c in choices), prefix)


FIELDS: tuple[Field, ...] = (
    _f("id", "id", "int", "", "frame id"),
    # quality, filled by analysis (NULL until then)
    _f("fwhm", "fwhm", "float", "px", "median star FWHM"),
    _f("roundness", "roundness", "float", "", "median star roundness (1 = round)"),
    _f("eccentricity", "eccentricity", "float", "", "median star eccentricity (0 = round)"),
    _f("stars", "star_count", "int", "", "number of stars detected", "star_count"),
    _f("background", "background", "float", "ADU", "sky background level"),
    _f("noise", "noise", "float", "ADU", "background noise (standard deviation)"),
    _f("snr", "snr", "float", "", "signal-to-noise ratio"),
    _f("weight", "weight", "float", "", "stacking weight"),
    # acquisition
    _f("exposure", "exposure", "float", "s", "exposure time", "exp", "exptime"),
    _f("iso", "iso", "int", "", "ISO speed (DSLR)"),
    _f("gain", "gain", "float", "", "sensor gain"),
    _f("offset", "offset", "float", "", "sensor offset"),
    _f("temp", "temperature", "float", "°C", "sensor temperature", "temperature", "ccd-temp"),
    _f("settemp", "set_temperature", "float", "°C", "cooler set point", "set-temp"),
    _f("binning", "xbinning", "int", "", "pixel binning", "bin", "xbinning"),
    _f("width", "width", "int", "px", "image width"),
    _f("height", "height", "int", "px", "image height"),
    _f("kind", "kind", "enum", "", "frame kind", "type", "imagetyp", choices=list(FrameKind)),
    _f("status", "status", "enum", "", "frame status", choices=list(FrameStatus)),
    _f("reason", "reason", "text", "", "why a frame was rejected or failed"),
    _f("pattern", "bayer_pattern", "enum", "", "Bayer pattern", "bayer", "bayerpat",
       "bayer_pattern", choices=BAYER_PATTERNS),  # fmt: skip
    _f("filter", "filter", "text", "", "filter name"),
    _f("object", "object", "text", "", "object name in the header"),
    _f("camera", "camera", "text", "", "camera (instrument, or make and model)", "instrument"),
    _f("telescope", "telescope", "text", "", "telescope", "scope"),
    _f("path", "path", "text", "", "file path"),
    _f("format", "file_format", "enum", "", "file format", choices=list(FileFormat)),
    _f("date", "date_obs", "date", "UTC", "observation start", "date_obs"),
    _f("session", "session.name", "text", "", "session name"),
    _f("target", "target.name", "text", "", "target name"),
    _f("session_id", "session_id", "int", "", "session id"),
    _f("target_id", "target_id", "int", "", "target id"),
    _f("hash", "content_hash", "text", "", "content hash (a prefix is enough)", "content_hash",
       prefix=True),  # fmt: skip
)


def normalize_name(name: str) -> str:
    """Spelling-insensitive key of a field name: lower case, ``-`` same as ``_``."""
    return name.strip().lower().replace("-", "_")


_INDEX: dict[str, Field] = {}
for _field in FIELDS:
    for _name in (_field.name, *_field.aliases):
        _key = normalize_name(_name)
        assert _key not in _INDEX, f"duplicate field name {_name}"
        _INDEX[_key] = _field


def find_field(name: str) -> Field | None:
    """The field called ``name`` (or one of its aliases), None if there is none."""
    return _INDEX.get(normalize_name(name))


def suggest(word: str, options: Iterable[str]) -> list[str]:
    """Close spellings of ``word`` among ``options``, best first."""
    return difflib.get_close_matches(word.lower(), list(options), n=3, cutoff=0.6)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"; did you mean a or b?"`` for close spellings, else the empty string."""
    close = suggest(word, options)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def get_field(name: str, *, where: str = "") -> Field:
    """The field called ``name``; a ``QueryError`` suggesting close names if there is none."""
    found = find_field(name)
    if found is not None:
        return found
    names = [f.name for f in FIELDS] + [a for f in FIELDS for a in f.aliases]
    context = f" in {where}" if where else ""
    hint = did_you_mean(normalize_name(name), names) or "; `oscdeep frames fields` lists them"
    raise QueryError(f"unknown field {name!r}{context}{hint}")


@dataclass(frozen=True)
class FieldOption:
    """What a CLI needs to offer one field as an option ``--fwhm EXPR``.

    ``dest`` is the Python name of the option's value; pass ``{dest: value}`` (or
    ``{field: value}``) to ``query_from_options``.
    """

    field: str
    flag: str
    dest: str
    metavar: str
    help: str
    unit: str
    kind: FieldKind
    choices: tuple[str, ...] = ()


_METAVAR = {"float": "EXPR", "int": "EXPR", "date": "DATES", "text": "GLOB", "enum": "VALUE"}
_EXAMPLES = {
    "float": "e.g. 3, 2..4, 4.. or '>4'",
    "int": "e.g. 50, 20..80, ..50 or '<50'",
    "date": "e.g. 2026-11-20, 2026-11-20.. or ..2026-11-21",
    "text": "exact or a glob like 'M3*' (any case)",
}


def option_help(field: Field) -> str:
    """One-line option help: what the field is, its unit and the value grammar."""
    unit = f" ({field.unit})" if field.unit else ""
    if field.kind == "enum":
        return f"{field.help}: {', '.join(field.choices)}"
    return f"{field.help}{unit}; {_EXAMPLES[field.kind]}"


def per_field_options(
    kinds: Iterable[str] = ("float", "int", "enum", "text", "date"),
    *,
    exclude: Iterable[str] = (),
) -> list[FieldOption]:
    """One option per field of the given kinds, in registry order, minus ``exclude`` names."""
    wanted = set(kinds)
    skip = {normalize_name(n) for n in exclude}
    return [
        FieldOption(
            field=f.name,
            flag="--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=_METAVAR[f.kind],
            help=option_help(f),
            unit=f.unit,
            kind=f.kind,
            choices=f.choices,
        )
        for f in FIELDS
        if f.kind in wanted and normalize_name(f.name) not in skip
    ]


__all__ = [
    "FIELDS",
    "Field",
    "FieldKind",
    "FieldOption",
    "did_you_mean",
    "find_field",
    "get_field",
    "normalize_name",
    "option_help",
    "per_field_options",
    "suggest",
]
