"""Reading ``Prefer: respond-async`` (RFC 7240) from request headers."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from producer_api.async_requests import wants_async


def request_with(*prefer: str) -> Request:
    headers = [(b"prefer", value.encode()) for value in prefer]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


@pytest.mark.parametrize(
    "headers",
    [
        ("respond-async",),
        ("Respond-Async",),
        ("  respond-async  ",),
        ("wait=10, respond-async",),
        ("respond-async; x=1",),
        ("return=minimal", "respond-async"),
    ],
)
def test_respond_async_is_seen(headers: tuple[str, ...]) -> None:
    assert wants_async(request_with(*headers))


@pytest.mark.parametrize(
    "headers",
    [(), ("",), ("wait=10",), ("respond-async-later",), ("return=respond-async",), ("x; respond-async",)],
)
def test_other_preferences_are_not_async(headers: tuple[str, ...]) -> None:
    assert not wants_async(request_with(*headers))
