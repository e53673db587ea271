"""Request body rules of POST /assessments/refresh-assessments (docs/design.md#rest-contract)."""

from __future__ import annotations

from shared import strict_fields

# The only field of a refresh body: anything else (a typo such as
# "assesment_ids") must be an error, never "refresh everything".
FIELDS = frozenset({"assessment_ids"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# RFC 8259 section 2: the only insignificant whitespace in JSON. bytes.strip()
# with no argument would also drop \x0b and \x0c, which JSON does not allow.
JSON_WHITESPACE = b" \t\n\r"


class BadRequest(ValueError):
    """A 400 with this message as the error."""


def parse_assessment_ids(body: bytes, max_ids: int) -> list[int] | None:
    """The requested ids without duplicates, in first-seen order; None means all.

    An empty body (no bytes), ``{}``, a missing, null or empty ``assessment_ids``
    all mean "every assessment of the company". Anything else, whitespace alone
    included, must parse as a JSON object (docs/design.md#rest-contract; the OpenAPI
    document says the same). A field other than ``assessment_ids``, or a field
    given twice, is an error (shared/strict_fields.py).
    """
    if body == b"":
        return None
    if not body.strip(JSON_WHITESPACE):
        raise BadRequest("Request body must be a JSON object")
    try:
        payload = strict_fields.loads(body, parse_int=_parse_int)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, or absurd nesting/number size
        raise BadRequest("Request body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise BadRequest("Request body must be a JSON object")
    problem = strict_fields.field_problem(payload, FIELDS)
    if problem is not None:
        raise BadRequest(problem)
    ids = payload.get("assessment_ids")
    if ids is None:
        return None
    if not isinstance(ids, list):
        raise BadRequest("assessment_ids must be a list")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise BadRequest("assessment_ids must be a list of integers")
    if len(ids) > max_ids:
        raise BadRequest(f"assessment_ids may hold at most {max_ids} ids")
    if any(not INT64_MIN <= i <= INT64_MAX for i in ids):
        raise BadRequest("assessment_ids must be 64-bit integers")
    return list(dict.fromkeys(ids)) or None


def _parse_int(digits: str) -> int:
    # Python refuses to convert more than 4300 digits; any id that long is out of range anyway.
    return int(digits) if len(digits) <= 40 else INT64_MAX + 1
