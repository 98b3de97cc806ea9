"""The frame selection language (beets-style): ``fwhm:..3 kind:light , ^status:rejected``.

``parse_query(tokens)`` and ``query_from_options({'fwhm': '>4'})`` give a ``Query``;
``select_frames(query)`` is the SQL; ``Query.matches(frame)`` the same test in Python;
``Query.describe()`` the words. ``FIELDS`` (in ``fields``) lists what can be queried.
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "FIELDS": "fields", "Field": "fields", "FieldOption": "fields", "find_field": "fields",
    "get_field": "fields", "per_field_options": "fields",
    "AllQuery": "nodes", "Query": "nodes", "all_of": "nodes", "any_of": "nodes",
    "select_frames": "nodes",
    "parse_query": "parse", "parse_term": "parse", "query_from_options": "parse",
    "tokenize": "parse",
}


def __getattr__(name: str) -> Any:
    # Loaded on first use: the field registry alone must not pull in SQLAlchemy (CLI start-up).
    if name in _HOMES:
        return getattr(import_module(f"oscdeep.query.{_HOMES[name]}"), name)
    raise AttributeError(name)


__all__ = [
    "FIELDS",
    "AllQuery",
    "Field",
    "FieldOption",
    "Query",
    "all_of",
    "any_of",
    "find_field",
    "get_field",
    "parse_query",
    "parse_term",
    "per_field_options",
    "query_from_options",
    "select_frames",
    "tokenize",
]
