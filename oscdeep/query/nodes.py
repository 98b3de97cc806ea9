"""Query nodes: each compiles to SQL, matches a ``Frame`` in Python and describes itself in words.

NULL semantics (the same in SQL and in Python):

* A numeric or date term never matches a frame whose value is empty (NULL): not ``fwhm:>4``,
  not ``fwhm:..4`` and not the negation ``^fwhm:>4`` either, so a frame that has not been
  analysed is never selected (or rejected) by a quality threshold. Its negation compiles to
  ``col IS NOT NULL AND NOT (...)``.
* A text or enum term does not match an empty value, and its negation does: ``^filter:L``
  selects frames whose filter is anything but L, including frames with no filter.

Every term clause is NULL-free (``col IS NOT NULL AND ...``), so ``NOT``, ``AND`` and ``OR``
behave in SQL exactly as they do in Python. Values are always bound parameters.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, literal, not_, or_, select, true
from sqlalchemy.orm import joinedload

from oscdeep.db.models import Frame
from oscdeep.query.fields import Field

Clause = ColumnElement[bool]


class Query:
    """A frame selection: SQL by ``where()``, Python by ``matches()``, words by ``describe()``."""

    def where(self) -> Clause:
        """Boolean SQL expression over ``Frame`` (related names are correlated subqueries)."""
        raise NotImplementedError

    def to_sql(self) -> Clause:
        """Same as ``where()``."""
        return self.where()

    def matches(self, frame: Frame) -> bool:
        """Whether ``frame`` (with ``.session`` and ``.target`` loadable) is selected."""
        raise NotImplementedError

    def negated_where(self) -> Clause:
        return not_(self.where())

    def negated_matches(self, frame: Frame) -> bool:
        return not self.matches(frame)

    def describe(self) -> str:
        """The query in words with units, e.g. ``"fwhm > 4 px and stars < 50"``."""
        raise NotImplementedError

    def terms(self) -> list[str]:
        """Tokens that ``parse_query`` turns back into an equal query."""
        raise NotImplementedError

    def text(self) -> str:
        """The query as one shell-quoted string (for storing a stack's selection)."""
        return shlex.join(self.terms())

    def fields(self) -> frozenset[str]:
        """Names of the fields the query looks at."""
        return frozenset()

    @property
    def is_all(self) -> bool:
        """True for the empty query, which selects every frame."""
        return False

    def __str__(self) -> str:
        return self.describe()

    def __and__(self, other: Query) -> Query:
        return all_of([self, other])

    def __or__(self, other: Query) -> Query:
        return any_of([self, other])

    def __invert__(self) -> Query:
        return NotQuery(self)


@dataclass(frozen=True)
class AllQuery(Query):
    """The empty query: every frame."""

    def where(self) -> Clause:
        return true()

    def matches(self, frame: Frame) -> bool:
        return True

    def describe(self) -> str:
        return "all frames"

    def negated_where(self) -> Clause:
        return false()

    def negated_matches(self, frame: Frame) -> bool:
        return False

    def terms(self) -> list[str]:
        return []

    @property
    def is_all(self) -> bool:
        return True


@dataclass(frozen=True)
class AndQuery(Query):
    """Every part matches. Its negation follows De Morgan, so NULL rules hold term by term."""

    parts: tuple[Query, ...]

    def where(self) -> Clause:
        return and_(*(p.where() for p in self.parts))

    def matches(self, frame: Frame) -> bool:
        return all(p.matches(frame) for p in self.parts)

    def describe(self) -> str:
        return " and ".join(p.describe() for p in self.parts)

    def negated_where(self) -> Clause:
        return or_(*(p.negated_where() for p in self.parts))

    def negated_matches(self, frame: Frame) -> bool:
        return any(p.negated_matches(frame) for p in self.parts)

    def terms(self) -> list[str]:
        return [t for p in self.parts for t in p.terms()]

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(p.fields() for p in self.parts))


@dataclass(frozen=True)
class OrQuery(Query):
    """At least one part matches."""

    parts: tuple[Query, ...]

    def where(self) -> Clause:
        return or_(*(p.where() for p in self.parts))

    def matches(self, frame: Frame) -> bool:
        return any(p.matches(frame) for p in self.parts)

    def describe(self) -> str:
        words = (p.describe() for p in self.parts)
        return " or ".join(f"({w})" if " and " in w else w for w in words)

    def negated_where(self) -> Clause:
        return and_(*(p.negated_where() for p in self.parts))

    def negated_matches(self, frame: Frame) -> bool:
        return all(p.negated_matches(frame) for p in self.parts)

    def terms(self) -> list[str]:
        out: list[str] = []
        for i, part in enumerate(self.parts):
            out += ([","] if i else []) + part.terms()
        return out

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(p.fields() for p in self.parts))


@dataclass(frozen=True)
class NotQuery(Query):
    """The part does not match (numeric and date parts: and the value is not empty)."""

    part: Query

    def where(self) -> Clause:
        return self.part.negated_where()

    def matches(self, frame: Frame) -> bool:
        return self.part.negated_matches(frame)

    def negated_where(self) -> Clause:
        return self.part.where()

    def negated_matches(self, frame: Frame) -> bool:
        return self.part.matches(frame)

    def describe(self) -> str:
        return f"not ({self.part.describe()})"

    def terms(self) -> list[str]:
        inner = self.part.terms()
        if len(inner) == 1:
            return ["^" + inner[0]]
        # De Morgan keeps the output in the term grammar, which has no parentheses.
        if isinstance(self.part, AndQuery):
            return any_of([NotQuery(p) for p in self.part.parts]).terms()
        if isinstance(self.part, OrQuery):
            return all_of([NotQuery(p) for p in self.part.parts]).terms()
        raise ValueError(f"cannot write {self.describe()!r} as terms")

    def fields(self) -> frozenset[str]:
        return self.part.fields()


def all_of(parts: list[Query]) -> Query:
    """AND of ``parts``, flattened; the empty AND is ``AllQuery``."""
    flat: list[Query] = []
    for p in parts:
        if isinstance(p, AndQuery):
            flat.extend(p.parts)
        elif not p.is_all:
            flat.append(p)
    if not flat:
        return AllQuery()
    return flat[0] if len(flat) == 1 else AndQuery(tuple(flat))


def any_of(parts: list[Query]) -> Query:
    """OR of ``parts``, flattened; any empty part makes the whole query select everything."""
    flat: list[Query] = []
    for p in parts:
        if p.is_all:
            return AllQuery()
        flat.extend(p.parts if isinstance(p, OrQuery) else [p])
    if not flat:
        return AllQuery()
    return flat[0] if len(flat) == 1 else OrQuery(tuple(flat))


# --- field terms ---------------------------------------------------------------------------


def fmt_number(value: float) -> str:
    """Shortest spelling that reads back as the same number: ``4``, ``2.5``, ``-12``."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class FieldQuery(Query):
    """A test on one field; the field's values are tried in turn (any may match)."""

    field: Field

    #: Empty values match the negation (text, enum) or never match (numbers, dates).
    null_matches_negation = False

    def _sql_test(self, expr: ColumnElement[Any]) -> Clause:
        raise NotImplementedError

    def _py_test(self, value: Any) -> bool:
        raise NotImplementedError

    def where(self) -> Clause:
        tests = [and_(e.is_not(None), self._sql_test(e)) for e in self.field.sql()]
        return or_(*tests) if len(tests) > 1 else tests[0]

    def matches(self, frame: Frame) -> bool:
        return any(v is not None and self._py_test(v) for v in self.field.values(frame))

    def negated_where(self) -> Clause:
        if self.null_matches_negation:
            return not_(self.where())
        present = [e.is_not(None) for e in self.field.sql()]
        return and_(or_(*present) if len(present) > 1 else present[0], not_(self.where()))

    def negated_matches(self, frame: Frame) -> bool:
        if self.null_matches_negation:
            return not self.matches(frame)
        return any(v is not None for v in self.field.values(frame)) and not self.matches(frame)

    def fields(self) -> frozenset[str]:
        return frozenset({self.field.name})

    def _unit(self) -> str:
        return f" {self.field.unit}" if self.field.unit and self.field.kind != "date" else ""


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class CompareQuery(FieldQuery):
    """``fwhm:>4``, ``exposure:300``: a number compared with ``op`` (one of ``= != < <= > >=``)."""

    op: str
    value: float | int

    def _sql_test(self, expr: ColumnElement[Any]) -> Clause:
        return _OPS[self.op](expr, literal(self.value))

    def _py_test(self, value: Any) -> bool:
        return bool(_OPS[self.op](value, self.value))

    def describe(self) -> str:
        return f"{self.field.name} {self.op} {fmt_number(self.value)}{self._unit()}"

    def terms(self) -> list[str]:
        op = "" if self.op == "=" else self.op
        return [f"{self.field.name}:{op}{fmt_number(self.value)}"]


@dataclass(frozen=True)
class RangeQuery(FieldQuery):
    """``fwhm:2..4``, ``fwhm:4..``, ``fwhm:..4``: a number within inclusive bounds."""

    low: float | int | None
    high: float | int | None

    def _sql_test(self, expr: ColumnElement[Any]) -> Clause:
        tests = []
        if self.low is not None:
            tests.append(expr >= literal(self.low))
        if self.high is not None:
            tests.append(expr <= literal(self.high))
        return and_(*tests)

    def _py_test(self, value: Any) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        name, unit = self.field.name, self._unit()
        if self.low is None:
            return f"{name} <= {fmt_number(self.high)}{unit}"  # type: ignore[arg-type]
        if self.high is None:
            return f"{name} >= {fmt_number(self.low)}{unit}"
        return f"{name} between {fmt_number(self.low)} and {fmt_number(self.high)}{unit}"

    def terms(self) -> list[str]:
        low = "" if self.low is None else fmt_number(self.low)
        high = "" if self.high is None else fmt_number(self.high)
        return [f"{self.field.name}:{low}..{high}"]


@dataclass(frozen=True)
class DateQuery(FieldQuery):
    """A date-time in ``[start, end)`` (either end open), naive UTC like ``Frame.date_obs``.

    ``value`` is the spelling after ``date:`` and ``words`` the description after the field
    name (``"on 2026-11-20"``), both kept from the parser.
    """

    start: dt.datetime | None
    end: dt.datetime | None
    value: str
    words: str

    def _sql_test(self, expr: ColumnElement[Any]) -> Clause:
        tests = []
        if self.start is not None:
            tests.append(expr >= self.start)
        if self.end is not None:
            tests.append(expr < self.end)
        return and_(*tests) if tests else true()

    def _py_test(self, value: Any) -> bool:
        after_start = self.start is None or value >= self.start
        return after_start and (self.end is None or value < self.end)

    def describe(self) -> str:
        return f"{self.field.name} {self.words}"

    def terms(self) -> list[str]:
        return [f"{self.field.name}:{self.value}"]


def glob_to_like(pattern: str) -> str:
    """SQL LIKE pattern (escape character ``\\``) for a ``*``/``?`` glob."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_to_fnmatch(pattern: str) -> str:
    """fnmatch pattern with the same meaning as ``glob_to_like``: ``[`` is an ordinary character."""
    return pattern.replace("[", "[[]")


def is_glob(value: str) -> bool:
    return "*" in value or "?" in value


@dataclass(frozen=True)
class TextQuery(FieldQuery):
    """Case-insensitive text match.

    ``mode``: ``exact`` (the whole value), ``glob`` (``*`` any run, ``?`` one character),
    ``prefix`` (the value starts with the text, e.g. a hash) or ``contains`` (a bare word
    matched anywhere in the path).
    """

    value: str
    mode: str = "exact"

    null_matches_negation = True

    @property
    def pattern(self) -> str:
        """The value as a glob, whatever the mode."""
        if self.mode == "prefix":
            return self.value + "*"
        if self.mode == "contains":
            return f"*{self.value}*"
        return self.value

    def _sql_test(self, expr: ColumnElement[Any]) -> Clause:
        if self.mode == "exact":
            return func.lower(expr) == literal(self.value.lower())
        return func.lower(expr).like(literal(glob_to_like(self.pattern.lower())), escape="\\")

    def _py_test(self, value: Any) -> bool:
        text = str(value).lower()
        if self.mode == "exact":
            return text == self.value.lower()
        return fnmatch.fnmatchcase(text, glob_to_fnmatch(self.pattern.lower()))

    def describe(self) -> str:
        shown = shlex.quote(self.value) if " " in self.value else self.value
        verb = {"exact": "is", "glob": "matches", "prefix": "starts with", "contains": "contains"}
        return f"{self.field.name} {verb[self.mode]} {shown}"

    def terms(self) -> list[str]:
        if self.mode == "contains":
            return [self.value] if _bare_safe(self.value) else [f"{self.field.name}:{self.pattern}"]
        value = self.value
        if self.mode == "exact" and (is_glob(value) or value.startswith(("=", "!="))):
            raise ValueError(f"cannot write {self.describe()!r} as a term")
        return [f"{self.field.name}:{value}"]


def _bare_safe(word: str) -> bool:
    """Whether ``word`` alone parses back as a bare path word."""
    return bool(word) and ":" not in word and word[0] not in "^-," and not word.endswith(",")


@dataclass(frozen=True)
class EnumQuery(FieldQuery):
    """One of a field's fixed values (any case); ``values`` are the matching choices."""

    values: tuple[str, ...]
    value: str

    null_matches_negation = True

    def _sql_test(self, expr: ColumnElement[Any]) -> Clause:
        wanted = [v.lower() for v in self.values]
        if not wanted:
            return false()
        if len(wanted) == 1:
            return func.lower(expr) == literal(wanted[0])
        return func.lower(expr).in_(wanted)

    def _py_test(self, value: Any) -> bool:
        return str(value).lower() in {v.lower() for v in self.values}

    def describe(self) -> str:
        return f"{self.field.name} is {' or '.join(self.values)}"

    def terms(self) -> list[str]:
        return [f"{self.field.name}:{self.value}"]


def select_frames(query: Query | None = None, *, load_related: bool = True) -> Select[Frame]:
    """``SELECT`` of the frames ``query`` selects, ordered by id.

    ``where()`` needs no joins (related names are correlated subqueries); with ``load_related``
    the session and target are outer-joined and loaded, so ``Query.matches`` and listings need
    no further queries.
    """
    stmt = select(Frame).order_by(Frame.id)
    if query is not None and not query.is_all:
        stmt = stmt.where(query.where())
    if load_related:
        stmt = stmt.options(joinedload(Frame.session), joinedload(Frame.target))
    return stmt


__all__ = [
    "AllQuery",
    "AndQuery",
    "CompareQuery",
    "DateQuery",
    "EnumQuery",
    "FieldQuery",
    "NotQuery",
    "OrQuery",
    "Query",
    "RangeQuery",
    "TextQuery",
    "all_of",
    "any_of",
    "fmt_number",
    "glob_to_like",
    "select_frames",
]
