"""Who is calling: the API key, its rate limit, and the company that owns it.

Checked before anything else of a request is read (its body included), by
``Gate.company``. Failures raise HTTPException; producer_api.errors renders
them as ``{"error": ...}`` with their headers (Retry-After on 429).

Guessing keys is bounded twice: each presented key has its own rate limit
(by hash), and failed authentications are limited per client address, so a
client making up a new key per request gets ``AUTH_FAILURE_BURST`` answers
401 and then 429 without a database look-up. The client address is the TCP
peer's, or the one a trusted proxy names (producer_api/client_address.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from producer_api.api_metrics import API_KEY_LOOKUPS, AUTH_REFUSED
from producer_api.client_address import client_address
from producer_api.ratelimit import RateLimiter
from shared.apikeys import company_for_key, hash_key

log = logging.getLogger(__name__)

INVALID_KEY = "Invalid or missing API key"
TOO_MANY_FOR_KEY = "Too many requests for this API key"
TOO_MANY_FAILURES = "Too many failed authentications from this address"


def presented_key(request: Request) -> str | None:
    """The key in header ``apiKey``, or ``X-API-Key`` (never the query string)."""
    return request.headers.get("apikey") or request.headers.get("x-api-key") or None


class KeyCache:
    """Keys looked up in the last few seconds, by hash: the valid ones with
    their company (for ``ttl_s``), the unknown ones (for ``unknown_ttl_s``).

    Saves a database round trip (and a thread hop) per request; the price is
    that a revoked key keeps working for up to ``ttl_s`` on a replica that saw
    it, and a key created right after a failed try with it works
    ``unknown_ttl_s`` later. Each map is bounded on its own, so a flood of
    made-up keys cannot push the valid ones out.
    """

    def __init__(self, ttl_s: float, unknown_ttl_s: float = 0.0) -> None:
        self.ttl_s, self.unknown_ttl_s = ttl_s, unknown_ttl_s
        self._entries: dict[str, tuple[int, float]] = {}
        self._unknown: dict[str, float] = {}

    def get(self, key_hash: str) -> int | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: str, company_id: int) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= MAX_CACHED_KEYS:
            self._entries.clear()  # bounded memory; the next lookups refill it
        self._entries[key_hash] = (company_id, time.monotonic() + self.ttl_s)

    def is_unknown(self, key_hash: str) -> bool:
        expires = self._unknown.get(key_hash)
        return expires is not None and expires >= time.monotonic()

    def put_unknown(self, key_hash: str) -> None:
        if self.unknown_ttl_s <= 0:
            return
        if len(self._unknown) >= MAX_CACHED_KEYS:
            self._unknown.clear()
        self._unknown[key_hash] = time.monotonic() + self.unknown_ttl_s


MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True)
class Gate:
    """The checks every authenticated endpoint runs first."""

    engine: Engine
    per_key: RateLimiter  # requests per presented key
    failures: RateLimiter  # failed authentications per client address
    keys: KeyCache

    async def company(self, request: Request) -> int:
        """The company of the request's key; 401, 429 or 503 otherwise."""
        key = presented_key(request)
        key_hash = hash_key(key) if key else None
        if key_hash is not None:
            wait = self.per_key.acquire(key_hash)
            if wait > 0:
                raise HTTPException(429, TOO_MANY_FOR_KEY, headers=_retry_after(wait))
            cached = self.keys.get(key_hash)
            if cached is not None:
                return cached  # a known key is served even from an address that failed a lot
        address = client_address(request)
        wait = self.failures.wait(address)
        if wait > 0:
            AUTH_REFUSED.inc()
            raise HTTPException(429, TOO_MANY_FAILURES, headers=_retry_after(wait))
        company_id = None
        if key is not None and key_hash is not None and not self.keys.is_unknown(key_hash):
            company_id = await _company_of_key(self.engine, key)
            API_KEY_LOOKUPS.labels("unknown" if company_id is None else "found").inc()
            if company_id is None:
                self.keys.put_unknown(key_hash)
            else:
                self.keys.put(key_hash, company_id)
        if company_id is None:
            self._failed(address)
            raise HTTPException(401, INVALID_KEY)
        return company_id

    def _failed(self, address: str) -> None:
        self.failures.acquire(address)
        if self.failures.wait(address) > 0:
            # Once per exhausted allowance (at most AUTH_FAILURE_RATE_PER_S lines a
            # second per address), not once per refused request.
            log.warning("too many failed authentications from %s: answering 429 until its allowance refills",
                        address)


def _retry_after(wait: float) -> dict[str, str]:
    return {"Retry-After": str(math.ceil(wait))}


async def _company_of_key(engine: Engine, key: str) -> int | None:
    try:
        return await run_in_threadpool(_lookup, engine, key)
    except SQLAlchemyError:
        log.exception("API key lookup failed")
        raise HTTPException(503, "Database unavailable, try again later") from None


def _lookup(engine: Engine, key: str) -> int | None:
    with engine.connect() as conn:
        return company_for_key(conn, key)
