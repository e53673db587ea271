"""An independent model of POST /assessments/refresh-assessments (docs/design.md#rest-contract),
written from the contract (not from producer_api), for the bad-input tests.

``expect(headers, body, world)`` says what the API must answer to a request,
``check(response, expectation)`` asserts it, whatever the request was.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

UNAUTHORIZED = "Invalid or missing API key"
NOT_OBJECT = "Request body must be a JSON object"
NOT_LIST = "assessment_ids must be a list"
NOT_INTS = "assessment_ids must be a list of integers"
NOT_64BIT = "assessment_ids must be 64-bit integers"
FORBIDDEN_PREFIX = "Assessment IDs do not belong to company or do not exist: "
UNKNOWN_FIELDS = "Unknown field(s): "
DUPLICATE_FIELDS = "Duplicate field(s): "

# docs/design.md#rest-contract: only an empty body (no bytes) means {}; whitespace
# alone, JSON's or not, must parse as a JSON object, so it is a 400.


@dataclass(frozen=True)
class World:
    """Who owns what, as loaded by the test."""

    keys: dict[str, int]  # plain key -> company id
    assessments: dict[int, list[int]]  # company id -> its oids
    max_body_bytes: int
    max_ids: int

    def owner(self, oid: int) -> int | None:
        for company, oids in self.assessments.items():
            if oid in oids:
                return company
        return None


@dataclass
class Expectation:
    status: int
    error: str | None = None  # exact error text of a 4xx
    error_prefix: str | None = None  # or a prefix (413, too many ids)
    company: int | None = None  # for a 200
    oids: list[int] = field(default_factory=list)  # for a 200: the details, ordered by oid
    known_deviation: str | None = None  # the oracle accepts a documented product deviation


def effective_key(headers: list[tuple[str, bytes]]) -> str | None:
    """The key the request presents: the first ``apiKey`` header when it is not
    empty, else the first ``X-API-Key`` (header names are case-insensitive;
    values travel as bytes and are read as Latin-1, as HTTP prescribes)."""
    by_name: dict[str, str] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), value.decode("latin-1"))
    return by_name.get("apikey") or by_name.get("x-api-key") or None


def _bounded_int(digits: str) -> int:
    # Python refuses int() of more than 4300 digits; anything that long is beyond 64 bits.
    return int(digits) if len(digits) <= 4000 else INT64_MAX + 1


class _Pairs(dict[str, Any]):
    repeated: list[str]


def _pairs(items: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs(items)
    names = [name for name, _ in items]
    obj.repeated = sorted({name for name in names if names.count(name) > 1})
    return obj


def parse_json(body: bytes) -> tuple[bool, Any]:
    """(parsed?, value) with the standard library's JSON reader; an object
    keeps the names it was given more than once in ``repeated``."""
    try:
        return True, json.loads(body, parse_int=_bounded_int, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return False, None


def expect_body(body: bytes, company: int, world: World) -> Expectation:
    """The answer for an authenticated caller of ``company`` sending ``body``."""
    everything = Expectation(200, company=company, oids=sorted(world.assessments.get(company, [])))
    if body == b"":
        return everything
    parsed, value = parse_json(body)
    if not parsed or not isinstance(value, dict):
        return Expectation(400, NOT_OBJECT)
    # A misspelled or repeated field must never mean "all": named, sorted, before any other rule.
    unknown = sorted(set(value) - {"assessment_ids"})
    if unknown:
        return Expectation(400, UNKNOWN_FIELDS + json.dumps(unknown))
    if value.repeated:
        return Expectation(400, DUPLICATE_FIELDS + json.dumps(value.repeated))
    ids = value.get("assessment_ids")
    if ids is None:
        return everything
    if not isinstance(ids, list):
        return Expectation(400, NOT_LIST)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return Expectation(400, NOT_INTS)
    if len(ids) > world.max_ids:
        return Expectation(400, error_prefix="assessment_ids may hold at most")
    if any(not INT64_MIN <= i <= INT64_MAX for i in ids):
        return Expectation(400, NOT_64BIT)
    if not ids:
        return everything
    own = set(world.assessments.get(company, []))
    bad = sorted(set(ids) - own)
    if bad:
        return Expectation(403, FORBIDDEN_PREFIX + json.dumps(bad))
    return Expectation(200, company=company, oids=sorted(set(ids)))


def expect(headers: list[tuple[str, bytes]], body: bytes, world: World) -> Expectation:
    # The key is checked before the body is read: a caller without a valid
    # key learns nothing about the body, not even its size limit.
    key = effective_key(headers)
    company = None if key is None else world.keys.get(key)
    if company is None:
        return Expectation(401, UNAUTHORIZED)
    if len(body) > world.max_body_bytes:
        return Expectation(413, error_prefix="Request body exceeds")
    return expect_body(body, company, world)


def forbidden_ids(message: str) -> list[int]:
    assert message.startswith(FORBIDDEN_PREFIX), message
    return json.loads(message[len(FORBIDDEN_PREFIX):])


def check(response: httpx.Response, expected: Expectation, world: World) -> None:
    """The response is well-formed for any input, and is what the contract says."""
    status = response.status_code
    assert status < 500 or status in (503, 504), f"server error {status}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    if status in (503, 504):
        # Infrastructure trouble is allowed to happen; it is answered cleanly.
        assert set(body) <= {"error", "request_id"} and isinstance(body["error"], str), body
        return
    if status != 200:
        assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert status == expected.status, f"expected {expected}, got {status} {response.text[:500]}"
    if expected.error is not None:
        assert body["error"] == expected.error
    if expected.error_prefix is not None:
        assert body["error"].startswith(expected.error_prefix), body
    if status == 403:
        assert re.fullmatch(re.escape(FORBIDDEN_PREFIX) + r"\[(-?\d+)(, -?\d+)*\]", body["error"]), body
    if status == 200:
        assert body["company_id"] == expected.company
        oids = [d["oid"] for d in body["details"]]
        assert oids == expected.oids
        assert all(world.owner(oid) == expected.company for oid in oids), "only the caller's assessments"
        assert body["assessments_updated"] == len(oids)
        assert body["message"] == f"Successfully refreshed {len(oids)} assessment{'' if len(oids) == 1 else 's'}"
