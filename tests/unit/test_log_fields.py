"""Log ids read from a record must never fail on what a record can hold."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.log_fields import record_fields


class Fake:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def topic(self) -> str:
        return "question.events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Any:
        return None


@pytest.mark.parametrize("value", [
    b"[" * 100_000 + b"]" * 100_000,  # deeper than the recursion limit
    b"\xff\xfe not utf-8",
    b"9" * 5000,  # more digits than int() accepts
    None,
    b'{"event_id": {"nested": "object"}}',
], ids=["deep", "not-utf8", "huge-int", "none", "odd-id"])
def test_odd_values_give_no_event_id_and_no_error(value: bytes | None) -> None:
    fields = record_fields(Fake(value), question_event=True)
    assert fields["event_id"] is None and fields["offset"] == 7
