"""Dead-letter topics: ``<topic>.dlq`` with the original record and why it failed.

Header names follow Spring Kafka's DeadLetterPublishingRecoverer in spirit:
original topic, partition, offset, the error's type and message, attempts.
"""

from __future__ import annotations

from consumer.outgoing import Outgoing
from consumer.ports import Record
from shared.messages import Headers, header, header_pairs

DLQ_SUFFIX = ".dlq"
H_TOPIC = "dlq.original.topic"
H_PARTITION = "dlq.original.partition"
H_OFFSET = "dlq.original.offset"
H_ERROR_TYPE = "dlq.error.type"
H_ERROR_MESSAGE = "dlq.error.message"
H_ATTEMPTS = "dlq.attempts"
H_VALUE_DROPPED = "dlq.value.dropped.bytes"
H_REPLAY_ID = "dlq.replay.id"
_OWN = {H_TOPIC, H_PARTITION, H_OFFSET, H_ERROR_TYPE, H_ERROR_MESSAGE, H_ATTEMPTS, H_VALUE_DROPPED, H_REPLAY_ID}


def dlq_topic(topic: str) -> str:
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


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
    kept: Headers = [(k, v) for k, v in header_pairs(msg.headers()) if k not in _OWN]
    # A record replayed from a DLQ keeps its first origin, so it goes back to
    # the same DLQ and can be replayed again after the next fix.
    origin_partition = header(msg.headers(), H_PARTITION) or str(msg.partition())
    origin_offset = header(msg.headers(), H_OFFSET) or str(msg.offset())
    kept += [
        (H_TOPIC, source.encode()),
        (H_PARTITION, origin_partition.encode()),
        (H_OFFSET, origin_offset.encode()),
        (H_ERROR_TYPE, type(error).__name__.encode()),
        (H_ERROR_MESSAGE, (reason if reason is not None else str(error))[:1000].encode("utf-8", "replace")),
        (H_ATTEMPTS, str(attempts).encode()),
    ]
    if replay_id is not None:
        kept.append((H_REPLAY_ID, replay_id.encode()))
    return Outgoing(dlq_topic(source), msg.key(), msg.value() or b"", kept)


def truncated(dead: Outgoing) -> Outgoing:
    """A DLQ copy too large for the broker, without its value: the headers
    still say where the original is and why it failed, and the original
    record stays readable in its own topic at that offset."""
    return Outgoing(dead.topic, dead.key, b"", [*dead.headers, (H_VALUE_DROPPED, str(len(dead.value)).encode())])
