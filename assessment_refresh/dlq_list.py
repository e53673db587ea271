"""`assessment-refresh dlq`: what is in a dead-letter topic, and why.

Lists the records of a ``<topic>.dlq`` with the headers the consumer wrote
(shared/dlq.py: original topic, partition and offset, the error, the
attempts) and the time each was dead-lettered, counts them by error type, and
prints text or JSON. It only looks: it reads with ``assign()`` under a group
id nobody else uses, with auto-commit off, and commits nothing, so no
consumer group's offsets move and a replay (`assessment-refresh replay`,
which does re-process) finds the topic as it was.

Which offsets it reads is planned as a replay plans them (consumer/replay.py:
from the beginning, from an offset of one partition, from a time, up to a
time); on the Tansu profile, whose end offsets are reported low, it reads to
end-of-partition and filters by record time instead, as replay does.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.replay import PartitionPlan, StartPoint, plan_replay
from shared import dlq
from shared.broker_profile import profile_named
from shared.kafka import consumer_config
from shared.messages import header
from shared.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    """One record of a DLQ topic, as an operator reads it."""

    partition: int
    offset: int
    dead_lettered_at: str  # the DLQ record's timestamp, ISO 8601 UTC
    key: str | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    error_type: str | None
    error_message: str | None
    attempts: int | None
    replay_id: str | None
    value_bytes: int
    value_dropped_bytes: int | None  # set when the copy was too large and went without its value


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def dead_letter(partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None,
                headers: Any) -> DeadLetter:
    """A record's fields and dlq.* headers (pure: no client involved)."""
    return DeadLetter(
        partition=partition,
        offset=offset,
        dead_lettered_at=datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        key=key.decode("utf-8", "replace") if key is not None else None,
        original_topic=header(headers, dlq.H_TOPIC),
        original_partition=_number(header(headers, dlq.H_PARTITION)),
        original_offset=_number(header(headers, dlq.H_OFFSET)),
        error_type=header(headers, dlq.H_ERROR_TYPE),
        error_message=header(headers, dlq.H_ERROR_MESSAGE),
        attempts=_number(header(headers, dlq.H_ATTEMPTS)),
        replay_id=header(headers, dlq.H_REPLAY_ID),
        value_bytes=len(value or b""),
        value_dropped_bytes=_number(header(headers, dlq.H_VALUE_DROPPED)),
    )


def by_error(letters: list[DeadLetter]) -> dict[str, int]:
    """How many records per error type, most frequent first."""
    counts = Counter(letter.error_type or "(no dlq.error.type header)" for letter in letters)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def as_json(topic: str, letters: list[DeadLetter]) -> dict[str, Any]:
    return {"topic": topic, "count": len(letters), "by_error": by_error(letters),
            "records": [asdict(letter) for letter in letters]}


def as_lines(topic: str, letters: list[DeadLetter]) -> list[str]:
    lines = []
    for d in letters:
        origin = f"{d.original_topic} [{d.original_partition}] @{d.original_offset}"
        dropped = f" (value dropped: {d.value_dropped_bytes} bytes)" if d.value_dropped_bytes is not None else ""
        # The message is the error's public text, which names its type already (shared/safe_errors.py).
        error = d.error_message if (d.error_message or "").startswith(f"{d.error_type}:") else f"{d.error_type}: {d.error_message}"
        lines.append(f"[{d.partition}] @{d.offset} {d.dead_lettered_at} from {origin}, attempts {d.attempts}: {error}{dropped}")
    lines.append(f"{len(letters)} dead letters in {topic}")
    lines += [f"{count:>6}  {error}" for error, count in by_error(letters).items()]
    return lines


def read_dead_letters(settings: Settings, topic: str, start: StartPoint, until: datetime | None = None,
                      timeout_s: float = 30.0) -> list[DeadLetter]:
    """Every record of ``topic`` in the planned window, in partition and offset order.
    Commits no offset, of any group."""
    group = f"{settings.consumer_group}-dlq-reader-{int(time.time() * 1000)}"
    consumer = Consumer(consumer_config(settings, group, **{
        "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True,
    }))
    try:
        plans = [p for p in plan_replay(consumer, topic, start, until) if p.count]
        to_eof = profile_named(settings.broker_profile).replay_reads_to_partition_eof
        letters = _read(consumer, topic, plans, to_eof, timeout_s)
    finally:
        consumer.close()
    if to_eof:  # the Tansu profile: planned by record time, not offsets_for_times
        letters = [d for d in letters if _in_window(d, start.since, until)]
    return sorted(letters, key=lambda d: (d.partition, d.offset))


def _read(consumer: Consumer, topic: str, plans: list[PartitionPlan], to_eof: bool,
          timeout_s: float) -> list[DeadLetter]:
    remaining: dict[int, int | None] = {p.partition: (None if to_eof else p.end) for p in plans}
    consumer.assign([TopicPartition(topic, p.partition, p.start or OFFSET_BEGINNING) for p in plans])
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {topic}: partitions {sorted(remaining)} not read to their end in {timeout_s:.0f} s")
        msg: Message | None = consumer.poll(1.0)
        if msg is None:
            continue
        err = msg.error()
        partition, offset = msg.partition() or 0, msg.offset()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)
            remaining.pop(partition, None)
            continue
        if partition not in remaining or offset is None:
            continue
        end = remaining[partition]
        if end is not None and offset >= end:
            remaining.pop(partition)
            continue
        letters.append(dead_letter(partition, offset, msg.timestamp()[1], msg.key(), msg.value(), msg.headers()))
        if end is not None and offset + 1 >= end:
            remaining.pop(partition)
    return letters


def _in_window(letter: DeadLetter, since: datetime | None, until: datetime | None) -> bool:
    moment = datetime.fromisoformat(letter.dead_lettered_at.replace("Z", "+00:00"))
    return (since is None or moment >= since) and (until is None or moment <= until)
