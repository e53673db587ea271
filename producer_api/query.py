"""Query parameters of the API's endpoints: each parsed once, each bad value a 400 with its name."""

from __future__ import annotations

from datetime import datetime

from starlette.datastructures import QueryParams

from producer_api.validation import BadRequest


def flag(params: QueryParams, name: str) -> bool:
    """``?name=true`` or ``?name=false`` (any case); absent is false. A value
    that is neither is refused rather than guessed: a typo must not turn a
    preview into a refresh."""
    value = params.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"{name} must be true or false")


def bounded_int(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 9 and low <= int(value) <= high):
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(value)


def timestamp(params: QueryParams, name: str) -> datetime | None:
    """An ISO 8601 time with a time zone (``2026-12-08T10:00:00Z``)."""
    value = params.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise BadRequest(f"{name} must be an ISO 8601 time with a time zone, e.g. 2026-12-08T10:00:00Z")
    return parsed
