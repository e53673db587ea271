"""Token buckets in this process's memory: per API key (requests), and per
client address (failed authentications, producer_api/auth.py).

With N API replicas a key may get up to N times the rate; the limit guards the
service against a runaway client, it is not a billing meter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._next_prune = clock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key_id: str) -> float:
        """Take a token for this key: 0.0 when allowed, else seconds until one is free."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        self._prune(now)
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
        self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def wait(self, key_id: str) -> float:
        """Seconds until this key has a token (0.0: it has one now), taking none."""
        bucket = self._buckets.get(key_id) if self.enabled else None
        if bucket is None:
            return 0.0
        self._refill(bucket, self.clock())
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now

    def _prune(self, now: float) -> None:
        # A bucket idle long enough to be full again holds no information: drop it,
        # so keys that come and go (or random invalid keys) cannot grow memory.
        if now < self._next_prune:
            return
        full_after = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after}
        self._next_prune = now + full_after
