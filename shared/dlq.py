"""Dead-letter topics on the wire: ``<topic>.dlq``, and the headers that say
where a record came from and why it failed.

Names follow Spring Kafka's DeadLetterPublishingRecoverer in spirit: original
topic, partition, offset, the error's type and message, attempts. The consumer
writes them (consumer/dead_letters.py), replay reads them, and the AsyncAPI
document (shared/asyncapi.py) describes them from the table below.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.messages import Headers

DLQ_SUFFIX = ".dlq"
H_TOPIC = "dlq.original.topic"
H_PARTITION = "dlq.original.partition"
H_OFFSET = "dlq.original.offset"
H_ERROR_TYPE = "dlq.error.type"
H_ERROR_MESSAGE = "dlq.error.message"
H_ATTEMPTS = "dlq.attempts"
H_VALUE_DROPPED = "dlq.value.dropped.bytes"
H_REPLAY_ID = "dlq.replay.id"
MAX_ERROR_MESSAGE_CHARS = 1000


class DlqHeader(NamedTuple):
    always: bool  # every DLQ copy carries it
    decimal: bool  # its value is a decimal number
    meaning: str


HEADERS: dict[str, DlqHeader] = {
    H_TOPIC: DlqHeader(True, False, "The topic the record was first read from (a record replayed from a DLQ "
                                    "keeps its first origin)."),
    H_PARTITION: DlqHeader(True, True, "Its partition there."),
    H_OFFSET: DlqHeader(True, True, "Its offset there: the original stays readable at that position."),
    H_ERROR_TYPE: DlqHeader(True, False, "The error's class name, e.g. `MessageError` for a record that breaks "
                                         "the contract."),
    H_ERROR_MESSAGE: DlqHeader(True, False, "Why it failed: the error's public text (shared/safe_errors.py), "
                                            f"at most {MAX_ERROR_MESSAGE_CHARS} characters."),
    H_ATTEMPTS: DlqHeader(True, True, "How many times the consumer tried it (1 for a record that cannot be decoded)."),
    H_REPLAY_ID: DlqHeader(False, False, "The replay that dead-lettered it again, if a replay did."),
    H_VALUE_DROPPED: DlqHeader(False, True, "Present when the copy was too large for the broker: the value is "
                                            "empty and this is the original's size in bytes."),
}
OWN = frozenset(HEADERS)


def dlq_topic(topic: str) -> str:
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


def dlq_headers(
    kept: Headers, *, topic: str, partition: str, offset: str, error_type: str, reason: str, attempts: int,
    replay_id: str | None = None,
) -> Headers:
    """A DLQ copy's headers: the original's (``kept``, without earlier DLQ
    headers), then where it came from and why it failed."""
    headers: Headers = [(k, v) for k, v in kept if k not in OWN]
    headers += [
        (H_TOPIC, topic.encode()),
        (H_PARTITION, partition.encode()),
        (H_OFFSET, offset.encode()),
        (H_ERROR_TYPE, error_type.encode()),
        (H_ERROR_MESSAGE, reason[:MAX_ERROR_MESSAGE_CHARS].encode("utf-8", "replace")),
        (H_ATTEMPTS, str(attempts).encode()),
    ]
    if replay_id is not None:
        headers.append((H_REPLAY_ID, replay_id.encode()))
    return headers
