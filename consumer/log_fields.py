"""The ids a consumer log line about one record carries (bound by the bus, consumer/bus.py).

``correlation_id`` (the request id, from the header) for refresh requests, and
``event_id`` for question events, read from the value without validating it:
a record that does not decode simply has none, and its lines still carry
``topic``/``partition``/``offset``.
"""

from __future__ import annotations

import json
from typing import Any

from consumer.ports import Record
from shared.messages import HEADER_CORRELATION_ID, header


def record_fields(msg: Record, *, question_event: bool) -> dict[str, Any]:
    """``question_event``: the record is (or, in a DLQ, was) a question event."""
    fields: dict[str, Any] = {
        "correlation_id": header(msg.headers(), HEADER_CORRELATION_ID),
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
    }
    if question_event:
        fields["event_id"] = _event_id(msg.value())
    return fields


def _event_id(value: bytes | None) -> str | None:
    try:
        decoded = json.loads(value) if value else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, or absurdly nested
        return None
    event_id = decoded.get("event_id") if isinstance(decoded, dict) else None
    # Only a plausible id (an upstream uuid), never an arbitrary value of the record.
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 64 else None
