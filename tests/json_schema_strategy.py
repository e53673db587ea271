"""Hypothesis strategies for the JSON Schema subset of shared/message_schemas.py.

hypothesis-jsonschema would be the library for this, but its last release
(0.23.1) fails on current Hypothesis ("'many' object has no attribute
'more'"), and schemathesis's generator is internal. So: a small builder that
knows the keywords our schemas use and refuses any other, and every drawn
value is filtered through jsonschema against the whole schema, so a value the
schema does not allow can never reach a test.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft7Validator, FormatChecker

INT64 = (-(2**63), 2**63 - 1)
ANNOTATIONS = {"description", "title", "default", "examples", "example"}
KNOWN = ANNOTATIONS | {
    "type", "const", "enum", "properties", "required", "additionalProperties", "items", "minLength", "maxLength",
    "pattern", "format", "minimum", "maximum", "oneOf", "if", "then", "else", "not",
}

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUES = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _timestamps() -> st.SearchStrategy[str]:
    offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
    moments = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets)
    fraction = st.sampled_from(["", ".5", ".123", ".123456", ".123456789"])

    def text(moment: datetime, fraction: str, zulu: bool) -> str:
        if zulu:
            moment = moment.astimezone(UTC)
        base = moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction
        offset = moment.strftime("%z")  # +0530
        return base + "Z" if zulu else f"{base}{offset[:3]}:{offset[3:]}"

    return st.builds(text, moments, fraction, st.booleans())


FORMATS: dict[str, st.SearchStrategy[Any]] = {
    "date-time": _timestamps(),
    "uuid": st.uuids().map(str),
}


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "format" in schema and schema["format"] in FORMATS:
        return FORMATS[schema["format"]]
    if "pattern" in schema:
        base = st.from_regex(schema["pattern"])
    else:
        base = st.text(st.characters(), min_size=schema.get("minLength", 0)) | st.text(string.printable, min_size=1)
    return base.filter(lambda s: schema.get("minLength", 0) <= len(s) <= schema.get("maxLength", 10**6))


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    fixed = st.fixed_dictionaries(
        {name: _build(sub) for name, sub in properties.items() if name in required},
        optional={name: _build(sub) for name, sub in properties.items() if name not in required},
    )
    if schema.get("additionalProperties", True) is False:
        return fixed
    extra = st.dictionaries(st.text(max_size=10).filter(lambda k: k not in properties), JSON_VALUES, max_size=2)
    return st.builds(lambda known, more: {**more, **known}, fixed, extra)


def _typed(schema: dict[str, Any], kind: str) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = (INT64 if schema.get("format") == "int64" else (None, None))
        return st.integers(schema.get("minimum", low), schema.get("maximum", high))
    if kind == "string":
        return _string(schema)
    if kind == "array":
        return st.lists(_build(schema.get("items", {})), max_size=5)
    if kind == "object":
        return _object(schema)
    raise ValueError(f"type {kind!r} is not supported")


def _build(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError(f"keywords {sorted(unknown)} are not supported: extend tests/json_schema_strategy.py")
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "oneOf" in schema:
        return st.one_of([_build(sub) for sub in schema["oneOf"]])
    if "if" in schema:
        # Either branch, merged into the rest; the final filter keeps what the schema allows.
        rest = {k: v for k, v in schema.items() if k not in ("if", "then", "else")}
        return st.one_of([_build(_merged(rest, schema[branch])) for branch in ("then", "else") if branch in schema])
    kinds = schema.get("type")
    if kinds is None:
        return JSON_VALUES
    return st.one_of([_typed(schema, kind) for kind in ([kinds] if isinstance(kinds, str) else kinds)])


def _merged(base: dict[str, Any], branch: dict[str, Any]) -> dict[str, Any]:
    return {**base, **branch, "properties": {**base.get("properties", {}), **branch.get("properties", {})}}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the (reference-free) ``schema`` allows."""
    validator = Draft7Validator(schema, format_checker=FormatChecker())
    return _build(schema).filter(validator.is_valid)
