"""What the consumer publishes: replies to callers and result events, as records to produce."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context

from shared.inbox import StoredResult
from shared.kafka import is_topic_name
from shared.messages import (
    Headers,
    RefreshChunk,
    RefreshReply,
    record_headers,
    status_location,
)
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    # The trace context it was published in (the unit of work notes it): its
    # send span is a child of that, and its traceparent header that span
    # (consumer/message_spans.py). Not part of the record.
    trace_parent: Context | None = field(default=None, compare=False, repr=False)
    # For a reply: the request id it answers (consumer/caller_replies.py gives
    # up an undeliverable reply for that request alone). Not part of the record.
    caller: str | None = field(default=None, compare=False, repr=False)


def reply(settings: Settings, reply_to: str | None, correlation_id: str, status: int, body: dict[str, Any]) -> Outgoing:
    """The answer to a request: on the caller's ``reply_to``, under the caller's
    ``correlation_id`` (header, key and the body's ``request_id``), so that any
    client following docs/design.md#topics-and-messages finds it."""
    if reply_to is not None and not is_topic_name(reply_to):
        # Not a topic anyone can read: answer on our own reply topic (the API
        # replicas drop ids they do not wait for) rather than never moving on.
        log.warning("request %s: reply_to is not a valid topic name, replying on %s", correlation_id, settings.reply_topic)
        reply_to = None
    value = RefreshReply(correlation_id, status, body).to_json()
    if len(value) > settings.reply_inline_max_bytes and status == 200:
        # Too large for the reply topic (a big company's report): a claim
        # check. The full body is in the inbox (every 200 is stored), where our
        # API reads it and where the async result path serves it.
        summary = {name: v for name, v in body.items() if name != "details"}
        value = RefreshReply(correlation_id, status, summary, result_location=status_location(correlation_id)).to_json()
    return Outgoing(
        reply_to or settings.reply_topic,
        correlation_id.encode(),
        value,
        record_headers(correlation_id),
        caller=correlation_id,
    )


def work(settings: Settings, chunk: RefreshChunk) -> Outgoing:
    """A chunk of a refresh job, for the work lanes."""
    return Outgoing(settings.work_topic, chunk.key, chunk.to_json(), record_headers())


def refresh_events(settings: Settings, stored: StoredResult, correlation_id: str) -> list[Outgoing]:
    """``assessment.refreshed`` events (keyed by oid) and ``refresh.completed``
    summaries, under the id of what caused them (as encoded for the inbox)."""
    return [
        Outgoing(
            settings.refresh_events_topic,
            # An assessment's events by oid; a fan-out's summary by its question.
            str(e["oid"] if "oid" in e else e["trigger"].get("qid", correlation_id)).encode(),
            value,
            record_headers(correlation_id),
        )
        for e, value in zip(stored.events, stored.encoded_events, strict=True)
    ]
