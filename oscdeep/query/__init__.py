"""The frame selection language (beets-style): ``fwhm:..3 kind:light , ^status:rejected``.

``parse_query(tokens)`` and ``query_from_options({'fwhm': '>4'})`` give a ``Query``;
``select_frames(query)`` is the SQL; ``Query.matches(frame)`` the same test in Python;
``Query.describe()`` the words. ``FIELDS`` (in ``fields``) lists what can be queried.
"""

from oscdeep.query.fields import (
    FIELDS,
    Field,
    FieldOption,
    find_field,
    get_field,
    per_field_options,
)
from oscdeep.query.nodes import AllQuery, Query, all_of, any_of, select_frames
from oscdeep.query.parse import parse_query, parse_term, query_from_options, tokenize

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
