"""Dead-lettering: the ``<topic>.dlq`` copy of a record, with where it came
from and why it failed in its headers (names and meanings: shared/dlq.py)."""

from __future__ import annotations

from consumer.outgoing import Outgoing
from consumer.ports import Record
from shared.dlq import H_OFFSET, H_PARTITION, H_TOPIC, H_VALUE_DROPPED, dlq_headers, dlq_topic
from shared.messages import header, header_pairs

__all__ = ["dead_letter", "dlq_topic", "original_topic", "truncated"]


def original_topic(msg: Record) -> str:
    """Where a record really comes from: itself, or what its DLQ headers name."""
    return header(msg.headers(), H_TOPIC) or str(msg.topic())


def dead_letter(
    msg: Record, error: BaseException, attempts: int, reason: str | None = None, *, replay_id: str | None = None
) -> Outgoing:
    """The DLQ copy of ``msg``; ``reason`` is the error text to record (the
    caller's sanitized message; by default ``str(error)``); ``replay_id``
    names the replay that dead-lettered it, if one did."""
    source = original_topic(msg)
    # A record replayed from a DLQ keeps its first origin, so it goes back to
    # the same DLQ and can be replayed again after the next fix.
    headers = dlq_headers(
        header_pairs(msg.headers()),
        topic=source,
        partition=header(msg.headers(), H_PARTITION) or str(msg.partition()),
        offset=header(msg.headers(), H_OFFSET) or str(msg.offset()),
        error_type=type(error).__name__,
        reason=reason if reason is not None else str(error),
        attempts=attempts,
        replay_id=replay_id,
    )
    return Outgoing(dlq_topic(source), msg.key(), msg.value() or b"", headers)


def truncated(dead: Outgoing) -> Outgoing:
    """A DLQ copy too large for the broker, without its value: the headers
    still say where the original is and why it failed, and the original
    record stays readable in its own topic at that offset."""
    return Outgoing(dead.topic, dead.key, b"", [*dead.headers, (H_VALUE_DROPPED, str(len(dead.value)).encode())])
