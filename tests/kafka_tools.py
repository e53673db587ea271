"""Produce and read records the way any Kafka client would, for black-box checks."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from shared.messages import QuestionEvent, encode, new_id, utc_now_iso


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    timestamp_ms: int


def produce(bootstrap: str, topic: str, value: bytes, key: bytes | None = None,
            headers: list[tuple[str, bytes]] | None = None) -> None:
    # Partitioned as the Java client (and the service) does: a key's records
    # from the tests and from the service share a partition, in order.
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    producer.produce(topic, value, key, headers=headers or [])
    assert producer.flush(10) == 0, "record not delivered"


def deleted_event(qid: int, event_id: str | None = None, occurred_at: str | None = None) -> QuestionEvent:
    return QuestionEvent(event_id or new_id(), "question.deleted", occurred_at or utc_now_iso(), qid=qid)


def upserted_event(question: dict[str, Any], occurred_at: str | None = None) -> QuestionEvent:
    return QuestionEvent(new_id(), "question.upserted", occurred_at or utc_now_iso(), question=question)


def publish_event(bootstrap: str, topic: str, event: QuestionEvent) -> None:
    produce(bootstrap, topic, event.to_json(), event.key())


def read_topic(bootstrap: str, topic: str, *, at_least: int = 0, timeout: float = 30.0, idle: float = 1.5) -> list[Record]:
    """Every record of a topic from the beginning: waits until ``at_least`` have
    arrived (or the timeout passes), then until nothing new arrives for ``idle`` s."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        metadata = None
        while time.monotonic() < deadline:
            metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if metadata is not None and metadata.error is None and metadata.partitions:
                break
            time.sleep(0.2)
        if metadata is None or not metadata.partitions:
            return records
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        last_arrival = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                                      {k: (v or b"").decode() for k, v in (msg.headers() or [])},
                                      msg.timestamp()[1]))
                last_arrival = time.monotonic()
            elif len(records) >= at_least and time.monotonic() - last_arrival > idle:
                break
    finally:
        consumer.close()
    return records


def json_values(records: list[Record]) -> list[dict[str, Any]]:
    import json

    return [json.loads(r.value or b"null") for r in records]


__all__ = ["Record", "produce", "read_topic", "json_values", "deleted_event", "upserted_event",
           "publish_event", "encode"]
