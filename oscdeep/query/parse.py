"""Parse the frame selection language: argv tokens (or one string) into a ``Query``.

Grammar (each term is one token; the field's kind picks the value parser)::

    query  := group ("," group)*          groups are ORed
    group  := term*                       terms are ANDed
    term   := "^"* (field ":" value       negated once per "^"
                   | "--" field op value  the option card's spelling, e.g. --fwhm>4
                   | "--" field value     two tokens, e.g. "--fwhm" ">4"
                   | word)                a bare word: a substring of the path (any case)
    value  := number | lo ".." hi | lo ".." | ".." hi | op number      (float, int)
            | date | lo ".." hi | ... | op date                         (date: ISO, whole units)
            | text | glob with * ?                                     (text, enum; any case)
    op     := ">" | ">=" | "<" | "<=" | "=" | "!="

A ``,`` is a token of its own or sticks to the end of a term (``fwhm:4.., kind:dark``).
Ranges are inclusive. A date names the whole unit it spells: ``date:2026-11-20`` is that day
(UTC, like ``date_obs``), ``date:2026-11`` that month, ``date:..2026-11-21`` up to the end of
the 21st. ``!=`` on text, enum and date terms is the same as ``^``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence

from oscdeep.errors import QueryError
from oscdeep.query.fields import Field, find_field, get_field, suggest
from oscdeep.query.nodes import (
    CompareQuery,
    DateQuery,
    EnumQuery,
    NotQuery,
    Query,
    RangeQuery,
    TextQuery,
    all_of,
    any_of,
    glob_to_fnmatch,
    is_glob,
)

_NAME = r"[A-Za-z_][\w-]*"
_FIELD_TERM = re.compile(rf"({_NAME}):(.*)", re.S)
_CARD_TERM = re.compile(rf"--({_NAME})(>=|<=|!=|>|<|=)(.*)", re.S)
_CARD_FLAG = re.compile(rf"\^*--({_NAME})")
_OP = re.compile(r"(>=|<=|!=|>|<|=)(.*)", re.S)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_INTEGER = re.compile(r"[-+]?\d+")
_DATE = re.compile(
    r"(?P<Y>\d{4})(?:-(?P<m>\d{1,2})(?:-(?P<d>\d{1,2})"
    r"(?:[T ](?P<H>\d{1,2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d{1,6})?)?)?)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?",
    re.I,
)

# the length of the smallest unit a date spelling gives, finest first
_STEPS = [
    ("f", dt.timedelta(microseconds=1)),
    ("S", dt.timedelta(seconds=1)),
    ("M", dt.timedelta(minutes=1)),
    ("H", dt.timedelta(hours=1)),
    ("d", dt.timedelta(days=1)),
]

SHELL_HINT = (
    "an unquoted > or < is taken by the shell as a redirection (`--{name} >4` creates a file "
    "named 4): quote it, --{name} '>4', or use the range form {name}:4.."
)


def tokenize(query: str | Sequence[str] | None) -> list[str]:
    """Tokens of a query: a list as given (argv from click), or a string split like a shell."""
    if query is None:
        return []
    if isinstance(query, str):
        try:
            return shlex.split(query)
        except ValueError as exc:
            raise QueryError(f"cannot split query {query!r}: {exc}") from exc
    return [str(t) for t in query]


def parse_query(query: str | Sequence[str] | None) -> Query:
    """The ``Query`` for argv tokens or a query string; no tokens selects every frame."""
    groups: list[list[Query]] = [[]]
    items = _items(tokenize(query))
    for item in items:
        if item is None:
            groups.append([])
            continue
        flag = _CARD_FLAG.fullmatch(item)
        if flag:
            # "--fwhm" ">4": the option spelling split over two tokens
            value = next(items, None)
            if value is None:
                raise QueryError(f"empty value for {item}: " + SHELL_HINT.format(name=flag[1]))
            item = f"{item}={value}"
        groups[-1].append(parse_term(item))
    return any_of([all_of(g) for g in groups if g])


def _items(tokens: list[str]) -> Iterator[str | None]:
    """Terms in order, with None for each OR comma (standalone, leading or trailing)."""
    for token in tokens:
        body = token.strip()
        while body.startswith(","):
            yield None
            body = body[1:].lstrip()
        trailing = 0
        while body.endswith(","):
            trailing += 1
            body = body[:-1].rstrip()
        if body:
            yield body
        yield from [None] * trailing


def parse_term(token: str) -> Query:
    """One term: ``^`` negations, then ``field:value``, ``--field>value`` or a bare path word."""
    body = token.strip()
    negations = len(body) - len(body.lstrip("^"))
    body = body[negations:]
    if not body:
        raise QueryError(f"'^' must be followed by a term (no space) in {token!r}")
    where = f"'{token}'"
    card = _CARD_TERM.fullmatch(body)
    term = _FIELD_TERM.fullmatch(body)
    if card:
        name, op, rest = card.groups()
        query = parse_value(get_field(name, where=where), rest if op == "=" else op + rest, where)
    elif body.startswith("--"):
        raise QueryError(f"cannot read {where}: write --field>value or field:value, e.g. fwhm:4..")
    elif term and not _looks_like_drive(term[1], term[2]):
        query = parse_value(get_field(term[1], where=where), term[2], where)
    else:
        query = TextQuery(get_field("path"), body, "contains")
    for _ in range(negations):
        query = NotQuery(query)
    return query


def _looks_like_drive(name: str, value: str) -> bool:
    """``C:\\astro`` is a Windows path (a bare word), not field ``c``."""
    return len(name) == 1 and value[:1] in ("\\", "/") and find_field(name) is None


def parse_value(field: Field, value: str, where: str) -> Query:
    """A field's value in the grammar of its kind (``where`` names the term in errors)."""
    value = _unquote(value.strip())
    if not value:
        raise QueryError(f"empty value in {where}: " + SHELL_HINT.format(name=field.name))
    if field.numeric:
        return _parse_numeric(field, value, where)
    if field.kind == "date":
        return _parse_date_value(field, value, where)
    op, rest = _split_op(value)
    if op not in ("", "=", "!="):
        raise QueryError(
            f"'{op}' compares numbers and dates, but {field.name} is {field.kind}, in {where}"
        )
    if not rest:
        hint = SHELL_HINT.format(name=field.name)
        raise QueryError(f"empty value after '{op}' in {where}: {hint}")
    query = _parse_enum(field, rest, where) if field.kind == "enum" else _parse_text(field, rest)
    return NotQuery(query) if op == "!=" else query


def query_from_options(mapping: Mapping[str, str | Sequence[str] | None]) -> Query:
    """AND of per-field option values, e.g. ``{'fwhm': '>4', 'stars': '<50'}``.

    Keys are field names or aliases (``-`` or ``_``); None values are skipped; a sequence of
    values (an option given several times) ANDs them. Values use the term value grammar.
    """
    parts: list[Query] = []
    for key, given in mapping.items():
        if given is None:
            continue
        flag = "--" + key.replace("_", "-")
        field = get_field(key, where=flag)
        for value in [given] if isinstance(given, str) else list(given):
            if not str(value).strip():
                raise QueryError(f"empty value for {flag}: " + SHELL_HINT.format(name=field.name))
            parts.append(parse_value(field, str(value), f"{flag} {shlex.quote(str(value))}"))
    return all_of(parts)


def _unquote(value: str) -> str:
    """Drop one pair of matching outer quotes left in a token (``object:'M 94'``)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _split_op(value: str) -> tuple[str, str]:
    match = _OP.fullmatch(value)
    return (match[1], match[2].strip()) if match else ("", value)


# --- numbers --------------------------------------------------------------------------------


def _number(text: str, field: Field, where: str) -> int | float:
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    unit = f" (in {field.unit})" if field.unit else ""
    raise QueryError(f"bad number {text!r} in {where}: {field.name} takes a plain number{unit}")


def _parse_numeric(field: Field, value: str, where: str) -> Query:
    op, rest = _split_op(value)
    if op:
        if not rest:
            raise QueryError(f"missing number after '{op}' in {where}")
        return CompareQuery(field, op, _number(rest, field, where))
    if ".." not in value:
        return CompareQuery(field, "=", _number(value, field, where))
    low_text, _, high_text = value.partition("..")
    if ".." in high_text or not (low_text.strip() or high_text.strip()):
        raise QueryError(f"bad range {value!r} in {where}: write low..high, low.. or ..high")
    low = _number(low_text, field, where) if low_text.strip() else None
    high = _number(high_text, field, where) if high_text.strip() else None
    if low is not None and high is not None and low > high:
        raise QueryError(f"bad range {value!r} in {where}: the low end is above the high end")
    return RangeQuery(field, low, high)


# --- dates ----------------------------------------------------------------------------------


def parse_date_span(text: str) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` in naive UTC of the year, month, day... that ``text`` spells.

    ``2026-11-20`` is that day, ``2026-11-20T21:30`` that minute; a trailing ``Z`` or
    ``+01:00`` gives the zone (none means UTC, like the stored ``date_obs``).
    """
    match = _DATE.fullmatch(text.strip())
    if not match:
        raise ValueError("not an ISO date")
    g = match.groupdict()
    year = int(g["Y"])
    month, day, hour, minute, second = (int(g[k]) if g[k] else None for k in "mdHMS")
    micro = int(g["f"][1:].ljust(6, "0")) if g["f"] else 0
    start = dt.datetime(year, month or 1, day or 1, hour or 0, minute or 0, second or 0, micro)
    step = next((size for unit, size in _STEPS if g[unit]), None)
    if step is not None:
        end = start + step
    elif month is not None:
        end = start.replace(year=year + month // 12, month=month % 12 + 1)
    else:
        end = start.replace(year=year + 1)
    if g["tz"]:
        zone = "+0000" if g["tz"].upper() == "Z" else g["tz"].replace(":", "")
        offset = dt.datetime.strptime(zone, "%z").utcoffset() or dt.timedelta()
        start, end = start - offset, end - offset
    return start, end


def _span(text: str, where: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        return parse_date_span(text)
    except (ValueError, OverflowError):
        raise QueryError(
            f"bad date {text.strip()!r} in {where}: write YYYY-MM-DD, YYYY-MM or an ISO date-time "
            "like 2026-11-20T21:30"
        ) from None


def _parse_date_value(field: Field, value: str, where: str) -> Query:
    op, rest = _split_op(value)
    if op:
        if not rest:
            raise QueryError(f"missing date after '{op}' in {where}")
        start, end = _span(rest, where)
        if op in ("=", "!="):
            query = _date_exact(field, rest, start, end)
            return NotQuery(query) if op == "!=" else query
        bounds = {">": (end, None, "after"), ">=": (start, None, "from"),
                  "<": (None, start, "before"), "<=": (None, end, "until")}[op]  # fmt: skip
        return DateQuery(field, bounds[0], bounds[1], value, f"{bounds[2]} {rest}")
    if ".." not in value:
        start, end = _span(value, where)
        return _date_exact(field, value, start, end)
    low_text, _, high_text = (s.strip() for s in value.partition(".."))
    if ".." in high_text or not (low_text or high_text):
        raise QueryError(f"bad range {value!r} in {where}: write start..end, start.. or ..end")
    start = _span(low_text, where)[0] if low_text else None
    end = _span(high_text, where)[1] if high_text else None
    if start is not None and end is not None and start >= end:
        raise QueryError(f"bad range {value!r} in {where}: the start is after the end")
    if start is not None and end is not None:
        words = f"from {low_text} to {high_text}"
    else:
        words = f"from {low_text}" if start is not None else f"until {high_text}"
    return DateQuery(field, start, end, value, words)


def _date_exact(field: Field, text: str, start: dt.datetime, end: dt.datetime) -> DateQuery:
    day = dt.timedelta(days=1)
    preposition = "on" if end - start == day else "at" if end - start < day else "in"
    return DateQuery(field, start, end, text, f"{preposition} {text}")


# --- text and enum --------------------------------------------------------------------------


def _parse_text(field: Field, value: str) -> TextQuery:
    if is_glob(value):
        return TextQuery(field, value, "glob")
    return TextQuery(field, value, "prefix" if field.prefix else "exact")


def _parse_enum(field: Field, value: str, where: str) -> EnumQuery:
    lowered = {c.lower(): c for c in field.choices}
    if is_glob(value):
        pattern = glob_to_fnmatch(value.lower())
        found = tuple(c for c in field.choices if fnmatch.fnmatchcase(c.lower(), pattern))
        if found:
            return EnumQuery(field, found, value)
    elif value.lower() in lowered:
        choice = lowered[value.lower()]
        return EnumQuery(field, (choice,), choice)
    close = [lowered[c] for c in suggest(value, lowered)]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    if "," in value:
        hint += f"; to OR values write {field.name}:a , {field.name}:b"
    raise QueryError(
        f"unknown {field.name} {value!r} in {where}{hint} (one of {', '.join(field.choices)})"
    )


__all__ = [
    "SHELL_HINT",
    "parse_date_span",
    "parse_query",
    "parse_term",
    "parse_value",
    "query_from_options",
    "tokenize",
]
