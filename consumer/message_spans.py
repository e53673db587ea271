"""The consumer's spans, after OpenTelemetry's messaging conventions for Kafka.

- ``process <topic>`` (CONSUMER): the handling of one record, or of a run of
  records sharing one unit of work (consumer/bus.py), database work and all.
  It links to the creation context of every record it handles (their
  ``traceparent`` headers); it is the child of the first one's, so that one
  record's span is in the trace of whoever sent it: the API's request, the
  question bank's event.
- ``send <topic>`` (PRODUCER): the delivery of what one handling published
  to one topic (the reply, the refresh events, a dead-letter copy), a child
  of that handling; each of those records carries this span as its
  ``traceparent``, so whoever reads it continues the same trace.

With tracing off these are the API's no-op spans: a record's trace context
then passes through unchanged to what its handling publishes, and nothing is
rewritten when there is none.

Handlers need no code of their own for any of it: the bus opens the span
around them, the unit of work notes it on what they publish.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from consumer.outgoing import Outgoing
from consumer.ports import Record
from shared.messages import (
    HEADER_CORRELATION_ID,
    MessageError,
    correlation_id_of,
    header,
    trace_context_of,
    with_trace_context,
)
from shared.tracing import messaging_attributes, tracer


@contextmanager
def processing(records: Sequence[Record], consumer_group: str | None) -> Iterator[Span]:
    """The span of handling ``records`` (one, or a run), current inside."""
    first, topic = records[0], str(records[0].topic())
    creation = [trace.get_current_span(trace_context_of(r.headers())).get_span_context() for r in records]
    links = [Link(context, _position(r)) for r, context in zip(records, creation, strict=True) if context.is_valid]
    if len(records) == 1:
        attributes = messaging_attributes("process", topic, key=first.key(), partition=first.partition(),
                                          offset=first.offset(), conversation_id=_conversation_id(first),
                                          consumer_group=consumer_group)
    else:
        attributes = messaging_attributes("process", topic, consumer_group=consumer_group, batch_size=len(records))
    # A record without a valid context starts a trace of its own (never a child of whatever is current).
    parent = trace.set_span_in_context(trace.NonRecordingSpan(creation[0])) if creation[0].is_valid else Context()
    with tracer.start_as_current_span(f"process {topic}", context=parent, kind=SpanKind.CONSUMER,
                                      attributes=attributes, links=links, record_exception=False,
                                      set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", type(exc).__name__)
            raise


def failed(span: Span, error: Exception, reason: str) -> None:
    """Mark a handling given up; ``reason`` is the public message (no SQL, no values)."""
    span.set_status(Status(StatusCode.ERROR, reason))
    span.set_attribute("error.type", type(error).__name__)


@contextmanager
def sending(outgoing: list[Outgoing]) -> Iterator[list[Outgoing]]:
    """The send spans of ``outgoing``, open until the block ends (delivery,
    retries included); inside, the records with their span's context in their headers."""
    groups: dict[tuple[int, int, str], list[int]] = {}
    for i, message in enumerate(outgoing):
        parent = trace.get_current_span(message.trace_parent).get_span_context()
        groups.setdefault((parent.trace_id, parent.span_id, message.topic), []).append(i)
    traced, spans = list(outgoing), []
    for (_, _, topic), indexes in groups.items():
        single = outgoing[indexes[0]] if len(indexes) == 1 else None
        attributes = (messaging_attributes("send", topic, key=single.key, conversation_id=header(single.headers, HEADER_CORRELATION_ID))
                      if single else messaging_attributes("send", topic, batch_size=len(indexes)))
        span = tracer.start_span(f"send {topic}", context=outgoing[indexes[0]].trace_parent, kind=SpanKind.PRODUCER,
                                 attributes=attributes)
        spans.append(span)
        if span.get_span_context().is_valid:  # else (tracing off, no parent) the headers stay as they are
            context = trace.set_span_in_context(span)
            for i in indexes:
                traced[i] = replace(outgoing[i], headers=with_trace_context(outgoing[i].headers, context))
    try:
        yield traced
    except BaseException as exc:
        for span in spans:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        for span in spans:
            span.end()


def _position(record: Record) -> dict[str, AttributeValue]:
    partition, offset = record.partition(), record.offset()
    return {**({"messaging.destination.partition.id": str(partition)} if partition is not None else {}),
            **({"messaging.kafka.offset": offset} if offset is not None else {})}


def _conversation_id(record: Record) -> str | None:
    try:
        return correlation_id_of(record.headers())
    except MessageError:  # a bad header is the handler's to report, not the span's
        return None
