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


def test_an_unknown_key_is_remembered_briefly_apart_from_the_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = KeyCache(60, unknown_ttl_s=0.05)
    cache.put("valid", 7)
    cache.put_unknown("made-up")
    assert cache.is_unknown("made-up") and not cache.is_unknown("valid")
    assert cache.get("made-up") is None
    time.sleep(0.06)
    assert not cache.is_unknown("made-up"), "asked again after the short TTL"
    monkeypatch.setattr(auth, "MAX_CACHED_KEYS", 3)
    for n in range(50):
        cache.put_unknown(f"flood-{n}")
    assert cache.get("valid") == 7, "a flood of made-up keys does not push a valid key out"
    assert len(cache._unknown) <= 3


def test_a_zero_unknown_ttl_remembers_no_unknown_key() -> None:
    cache = KeyCache(60, unknown_ttl_s=0)
    cache.put_unknown("made-up")
    assert not cache.is_unknown("made-up")
