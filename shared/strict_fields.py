"""A request names only the fields it may, once each: one rule for a REST
body and a request record on Kafka.

Python's JSON reader ignores nothing it is given but forgets a repeated key
(the last one wins), and the readers around it ignore fields they do not
know. For a refresh both mean "refresh everything": ``{"assesment_ids": [11]}``
and ``{"assessment_ids": [1], "assessment_ids": []}`` read as ``{}``. So a
request's JSON is parsed with ``loads`` below, which keeps the repeated keys
of the top-level object, and ``field_problem`` names what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

# At most this many names in an error, each at most this long: the names come
# from the client, and an error (and a DLQ header) should stay a line.
MAX_NAMES = 20
MAX_NAME_CHARS = 100


class _Object(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once."""

    duplicates: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated: set[str] = set()
        for key, _ in pairs:
            (repeated if key in seen else seen).add(key)
        obj.duplicates = frozenset(repeated)
    return obj


def loads(text: str | bytes, parse_int: Callable[[str], Any] | None = None) -> Any:
    """``json.loads``; an object it returns knows its repeated keys (``field_problem``)."""
    return json.loads(text, object_pairs_hook=_object, parse_int=parse_int)


def field_problem(payload: dict[str, Any], allowed: Collection[str]) -> str | None:
    """What is wrong with the top-level object's field names, or None.

    Unknown names first (a typo is the likelier mistake), each list sorted
    and written as a JSON list: ``Unknown field(s): ["assesment_ids"]``."""
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        return f"Unknown field(s): {_names(unknown)}"
    duplicates = sorted(getattr(payload, "duplicates", ()))
    if duplicates:
        return f"Duplicate field(s): {_names(duplicates)}"
    return None


def _names(names: list[str]) -> str:
    shown = [n if len(n) <= MAX_NAME_CHARS else n[:MAX_NAME_CHARS] + "..." for n in names[:MAX_NAMES]]
    rest = len(names) - len(shown)
    return json.dumps(shown) + (f" and {rest} more" if rest else "")
