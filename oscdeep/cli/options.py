"""Options shared by several commands: the frame selection (terms + one option per field)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click

OPTION_PREFIX = "sel_"
QUERY_CONTEXT = {"ignore_unknown_options": True}
"""Lets the card spelling '--fwhm>4' through to QUERY, where the query parser reads it."""


def query_options(exclude: Iterable[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding the QUERY argument and one ``--FIELD EXPR`` option per queryable field.

    The options come from the query field registry, so every field the language knows is also
    an option (``--fwhm '>4'`` is the same as the term ``fwhm:>4``). ``exclude`` drops fields
    whose option name a command uses for something else.
    """
    from oscdeep.query.fields import per_field_options

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(per_field_options(exclude=exclude)):
            func = click.option(opt.flag, OPTION_PREFIX + opt.dest, metavar=opt.metavar,
                                multiple=True, help=opt.help)(func)
        return click.argument("query", nargs=-1)(func)

    return decorate


def selection(query: tuple[str, ...], kwargs: dict[str, Any]):  # noqa: ANN201 (-> Query)
    """The Query of the QUERY terms ANDed with the per-field options; pops those options."""
    from oscdeep.query import all_of, parse_query, query_from_options

    values = {k[len(OPTION_PREFIX):]: kwargs.pop(k)
              for k in [k for k in kwargs if k.startswith(OPTION_PREFIX)]}
    given = {k: list(v) for k, v in values.items() if v}
    parts = [parse_query(list(query))]
    if given:
        parts.append(query_from_options(given))
    return all_of(parts)
