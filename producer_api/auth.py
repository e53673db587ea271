"""Who is calling: the API key, its rate limit, and the company that owns it.

Failures raise HTTPException; producer_api.errors renders them as
``{"error": ...}`` with their headers (Retry-After on 429).
"""

from __future__ import annotations

import logging
import math
import time

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from producer_api.ratelimit import RateLimiter
from shared.apikeys import company_for_key, hash_key

log = logging.getLogger(__name__)

INVALID_KEY = "Invalid or missing API key"


def admit_key(request: Request, limiter: RateLimiter) -> str:
    """The presented key (header ``apiKey``, or ``X-API-Key``), within its rate limit.

    Limited by the presented key (its hash: keys never sit in memory maps or
    logs), before the database lookup, so guessing keys is throttled too.
    """
    key = request.headers.get("apikey") or request.headers.get("x-api-key")
    if not key:
        raise HTTPException(401, INVALID_KEY)
    wait = limiter.acquire(hash_key(key))
    if wait > 0:
        raise HTTPException(429, "Too many requests for this API key", headers={"Retry-After": str(math.ceil(wait))})
    return key


class KeyCache:
    """Valid keys seen in the last ``ttl_s`` seconds, by hash, with their company.

    Saves a database round trip (and a thread hop) per request; the price is
    that a revoked key keeps working for up to ``ttl_s`` on a replica that saw
    it. Unknown keys are never cached: a key created a moment ago works at once.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[int, float]] = {}

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


MAX_CACHED_KEYS = 10_000


async def company_of_key(engine: Engine, key: str, cache: KeyCache | None = None) -> int:
    key_hash = hash_key(key)
    cached = cache.get(key_hash) if cache is not None else None
    if cached is not None:
        return cached
    try:
        company_id = await run_in_threadpool(_lookup, engine, key)
    except SQLAlchemyError:
        log.exception("API key lookup failed")
        raise HTTPException(503, "Database unavailable, try again later") from None
    if company_id is None:
        raise HTTPException(401, INVALID_KEY)
    if cache is not None:
        cache.put(key_hash, company_id)
    return company_id


def _lookup(engine: Engine, key: str) -> int | None:
    with engine.connect() as conn:
        return company_for_key(conn, key)
