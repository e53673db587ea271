"""The per-key token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from producer_api.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_the_next_call_waits_for_one_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("k") == 0.0


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=FakeClock())
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_tokens_refill_up_to_the_burst_only() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=10.0, burst=2, clock=clock)
    limiter.acquire("k")
    clock.now += 3600
    assert [limiter.acquire("k") for _ in range(3)][-1] > 0, "an hour idle still allows only the burst"


def test_rate_zero_turns_limiting_off() -> None:
    limiter = RateLimiter(rate_per_s=0.0, burst=1, clock=FakeClock())
    assert not limiter.enabled
    assert all(limiter.acquire("k") == 0.0 for _ in range(1000))


def test_idle_buckets_are_pruned_so_random_keys_cannot_grow_memory() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=100.0, burst=10, clock=clock)
    for i in range(1000):
        limiter.acquire(f"random-{i}")
    clock.now += 1.0
    limiter.acquire("fresh")
    assert len(limiter._buckets) == 1


def test_wait_tells_how_long_until_a_token_without_taking_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=2, clock=clock)
    assert limiter.wait("never-seen") == 0.0
    assert limiter.wait("never-seen") == 0.0 and not limiter._buckets, "a peek creates no bucket"
    limiter.acquire("k")
    assert limiter.wait("k") == 0.0
    limiter.acquire("k")
    assert limiter.wait("k") == pytest.approx(0.5)
    assert limiter.wait("k") == pytest.approx(0.5), "waiting took nothing"
    clock.now += 0.5
    assert limiter.wait("k") == 0.0
    assert limiter.acquire("k") == 0.0
