"""The API process's cache of valid keys (producer_api.auth.KeyCache)."""

from __future__ import annotations

import time

import pytest

from producer_api import auth
from producer_api.auth import KeyCache


def test_a_cached_key_expires_after_its_ttl() -> None:
    cache = KeyCache(0.05)
    cache.put("h1", 7)
    assert cache.get("h1") == 7
    time.sleep(0.06)
    assert cache.get("h1") is None


def test_a_zero_ttl_caches_nothing() -> None:
    cache = KeyCache(0)
    cache.put("h1", 7)
    assert cache.get("h1") is None


def test_the_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_CACHED_KEYS", 3)
    cache = KeyCache(60)
    for n in range(10):
        cache.put(f"h{n}", n)
    assert len(cache._entries) <= 3
    assert cache.get("h9") == 9
