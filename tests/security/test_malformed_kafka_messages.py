"""Malformed records on every topic the consumer reads (issue 4, "bad input"):
the request topic and the upstream question-events topic.

Each malformed record is followed, on the same partition, by a valid one. Every
malformed record must land in ``<topic>.dlq`` with the ``dlq.*`` headers
naming its origin, the consumer process must stay alive, the valid record
behind it must be processed, and the group's committed offset must move past
all of them (the partition is not blocked). A request that fails still answers
its caller (an error reply on the reply topic) instead of leaving it to time out.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import Engine, text

from consumer.dead_letters import dlq_topic
from shared.messages import RefreshRequested, new_id
from shared.settings import Settings
from tests.conftest import unique_settings
from tests.kafka_tools import Record, json_values, read_topic, upserted_event
from tests.processes import ServiceProcess, start_consumer
from tests.security.conftest import Running
from tests.waiting import eventually
from tests.worlds import question

pytestmark = pytest.mark.e2e

NOW = "2026-11-28T10:00:00Z"
DLQ_HEADERS = {"dlq.original.topic", "dlq.original.partition", "dlq.original.offset", "dlq.error.type",
               "dlq.error.message", "dlq.attempts"}
HUGE = 900_000  # about 1 MB, within what a default-configured producer may send


@dataclass(frozen=True)
class Poison:
    id: str
    value: bytes | None
    attempts: str = "1"  # undecodable: dead-lettered at once; failing handlers: after 3 attempts
    answer: tuple[int, str] | None = None  # the caller's status and exact error; None: a 500 "Error refreshing ..."


def obj(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def deletion(**overrides: Any) -> bytes:
    fields = {"schema_version": 1, "event_id": new_id(), "type": "question.deleted", "qid": 101, "occurred_at": NOW}
    fields.update(overrides)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def upsert(question_value: Any, **overrides: Any) -> bytes:
    fields = {"schema_version": 1, "event_id": new_id(), "type": "question.upserted", "occurred_at": NOW,
              "question": question_value}
    fields.update(overrides)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def request(**overrides: Any) -> bytes:
    fields = {"schema_version": 1, "request_id": new_id(), "company_id": 7, "assessment_ids": [11],
              "requested_at": NOW}
    fields.update(overrides)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


COMMON = [
    Poison("not-utf8", b"\xff\xfe\x80 not utf-8 \xc3\x28"),
    Poison("not-json", b"hello, world"),
    Poison("empty-value", b""),
    Poison("json-array", b'[{"schema_version": 1}]'),
    Poison("json-string", b'"question.deleted"'),
    Poison("json-number", b"42"),
    Poison("json-null", b"null"),
    Poison("deep-nesting", b'{"schema_version": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    Poison("5000-digit-number", b'{"schema_version": 1' + b"0" * 5000 + b"}"),
    Poison("huge-value", b'{"schema_version": 1, "pad": "' + b"x" * HUGE + b'", '),
    Poison("tombstone", None),
]

QUESTION_EVENT_POISONS = [
    *COMMON,
    Poison("schema-version-2", deletion(schema_version=2)),
    Poison("schema-version-string", deletion(schema_version="1")),
    Poison("schema-version-true", deletion(schema_version=True)),
    Poison("schema-version-missing", deletion(schema_version=...)),
    Poison("missing-event-id", deletion(event_id=...)),
    Poison("missing-type", deletion(type=...)),
    Poison("missing-occurred-at", deletion(occurred_at=...)),
    Poison("deleted-without-qid", deletion(qid=...)),
    Poison("upserted-without-question", upsert(...)),
    Poison("unknown-type", deletion(type="question.exploded")),
    Poison("qid-string", deletion(qid="101")),
    Poison("qid-float", deletion(qid=101.5)),
    Poison("qid-true", deletion(qid=True)),
    Poison("event-id-number", deletion(event_id=7)),
    Poison("event-id-empty", deletion(event_id="")),
    Poison("occurred-at-not-a-time", deletion(occurred_at="yesterday")),
    Poison("occurred-at-without-zone", deletion(occurred_at="2026-11-28T10:00:00")),
    Poison("question-is-a-list", upsert([101])),
    # A question the import rules refuse is a bad message: the DLQ at once.
    Poison("question-without-skill", upsert({k: v for k, v in question(9901).items() if k != "skill"})),
    Poison("question-qid-string", upsert({**question(9902), "qid": "9902"})),
    Poison("question-content-nul", upsert({**question(9904), "content": {"text": "nul \u0000 inside"}})),
    # Decodable, but the database refuses it: three attempts, then the DLQ.
    Poison("question-unknown-owner", upsert(question(9903, company_id=424242)), "3"),
]

REQUEST_POISONS = [
    *COMMON,
    Poison("schema-version-2", request(schema_version=2)),
    Poison("schema-version-true", request(schema_version=True)),
    Poison("schema-version-missing", request(schema_version=...)),
    # No request_id in the body is not malformed: the correlation_id header is
    # the request's identity (tests/e2e/test_foreign_client.py).
    Poison("missing-company-id", request(company_id=...)),
    Poison("request-id-number", request(request_id=5)),
    Poison("request-id-empty", request(request_id="")),
    Poison("company-id-string", request(company_id="seven")),
    Poison("company-id-true", request(company_id=True)),
    Poison("company-id-float", request(company_id=7.0)),
    Poison("ids-not-a-list", request(assessment_ids="11")),
    Poison("ids-with-boolean", request(assessment_ids=[11, True])),
    Poison("ids-with-float", request(assessment_ids=[11.5])),
    Poison("ids-with-null", request(assessment_ids=[None])),
    # Fields a request may not name, as over REST: a 400 naming them (issue 21).
    Poison("misspelled-ids", request(assessment_ids=..., assesment_ids=[11]),
           answer=(400, 'Unknown field(s): ["assesment_ids"]')),
    Poison("repeated-ids", request()[:-1] + b', "assessment_ids": null}',
           answer=(400, 'Duplicate field(s): ["assessment_ids"]')),
    # Decodable, but the database refuses it: three attempts, then the DLQ.
    Poison("company-id-beyond-64-bits", request(company_id=2**70, assessment_ids=None), "3"),
]


@dataclass(frozen=True)
class Sent:
    key: bytes
    partition: int
    offset: int


class RecordProducer:
    """Produces records and remembers where each one landed."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, **config})

    def send(self, topic: str, value: bytes | None, key: bytes, headers: list[tuple[str, bytes]] | None = None,
             partition: int = 0) -> Sent:
        landed: list[Any] = []
        self.producer.produce(topic, value, key, partition=partition, headers=headers or [],
                              on_delivery=lambda err, msg: landed.append((err, msg)))
        assert self.producer.flush(30) == 0
        err, msg = landed[0]
        assert err is None, err
        return Sent(key, msg.partition(), msg.offset())


def processed(engine: Engine, ids: list[str]) -> bool:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT count(*) FROM processed_messages WHERE message_id = ANY(:ids)"),
                             {"ids": ids}).scalar_one()
    return found == len(ids)


def committed_offset(settings: Settings, topic: str, partition: int) -> int:
    """The live group's committed offset, asked the way an operator's tool would."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": settings.consumer_group,
                         "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def check_dead_letters(settings: Settings, topic: str, poisons: list[Poison], sent: dict[str, Sent],
                       valid_keys: set[bytes]) -> list[Record]:
    dead = read_topic(settings.kafka_bootstrap_servers, dlq_topic(topic), at_least=len(poisons), timeout=30)
    by_key: dict[bytes | None, list[Record]] = {}
    for record in dead:
        by_key.setdefault(record.key, []).append(record)
    assert not valid_keys & set(by_key), "a valid record was dead-lettered"
    for poison in poisons:
        where = sent[poison.id]
        records = by_key.get(where.key, [])
        assert len(records) == 1, f"{poison.id}: {len(records)} DLQ records"
        record = records[0]
        assert record.value == (poison.value or b""), poison.id
        assert set(record.headers) >= DLQ_HEADERS, (poison.id, record.headers)
        assert record.headers["dlq.original.topic"] == topic
        assert record.headers["dlq.original.partition"] == str(where.partition)
        assert record.headers["dlq.original.offset"] == str(where.offset)
        assert record.headers["dlq.error.type"] and record.headers["dlq.error.message"], poison.id
        assert record.headers["dlq.attempts"] == poison.attempts, (poison.id, record.headers)
    return dead


def test_malformed_question_events_are_dead_lettered_and_the_partition_moves_on(
    running: Running, service_settings: Settings, engine: Engine
) -> None:
    settings, topic = service_settings, service_settings.question_events_topic
    producer = RecordProducer(settings.kafka_bootstrap_servers)
    sent: dict[str, Sent] = {}
    valid_ids, valid_keys = [], set()
    for i, poison in enumerate(QUESTION_EVENT_POISONS):
        sent[poison.id] = producer.send(topic, poison.value, f"poison-{poison.id}".encode())
        good = upserted_event(question(8000 + i))  # a new public question: nothing else to do
        valid_ids.append(good.event_id)
        valid_keys.add(f"valid-{i}".encode())
        behind = producer.send(topic, good.to_json(), f"valid-{i}".encode())
        assert behind.offset == sent[poison.id].offset + 1, "the valid record is right behind it"

    eventually(lambda: processed(engine, valid_ids), timeout=40, what="every valid event behind a malformed one")
    with engine.connect() as conn:
        qids = conn.execute(text("SELECT qid FROM questions WHERE qid >= 8000 AND qid < 9000")).scalars().all()
        assert sorted(qids) == [8000 + i for i in range(len(QUESTION_EVENT_POISONS))]
        assert conn.execute(text("SELECT count(*) FROM questions WHERE qid > 9900")).scalar_one() == 0
    check_dead_letters(settings, topic, QUESTION_EVENT_POISONS, sent, valid_keys)
    last = max(s.offset for s in sent.values()) + 1
    eventually(lambda: committed_offset(settings, topic, 0) >= last + 1, timeout=20, what="the committed offset")
    assert running.consumer.process.poll() is None, running.consumer.log()[-3000:]


def test_malformed_requests_are_dead_lettered_answered_and_the_partition_moves_on(
    running: Running, service_settings: Settings, engine: Engine
) -> None:
    settings, topic = service_settings, service_settings.request_topic
    producer = RecordProducer(settings.kafka_bootstrap_servers)
    sent: dict[str, Sent] = {}
    correlation: dict[str, str] = {}
    valid_ids, valid_keys = [], set()
    for i, poison in enumerate(REQUEST_POISONS):
        correlation[poison.id] = str(uuid.uuid4())
        headers = [("correlation_id", correlation[poison.id].encode()), ("reply_to", settings.reply_topic.encode())]
        sent[poison.id] = producer.send(topic, poison.value, f"poison-{poison.id}".encode(), headers)
        good = RefreshRequested(new_id(), 7, None)  # company 7 has nothing loaded: an empty 200
        valid_ids.append(good.request_id)
        valid_keys.add(f"valid-{i}".encode())
        behind = producer.send(topic, good.to_json(), f"valid-{i}".encode(),
                               [("correlation_id", good.request_id.encode()), ("reply_to", settings.reply_topic.encode())])
        assert behind.offset == sent[poison.id].offset + 1

    eventually(lambda: processed(engine, valid_ids), timeout=40, what="every valid request behind a malformed one")
    dead = check_dead_letters(settings, topic, REQUEST_POISONS, sent, valid_keys)
    assert all(r.headers.get("correlation_id") for r in dead), "the DLQ keeps the original headers"

    # Every caller got an answer: a 400 or 500 for each malformed request, a 200 for each valid one.
    wanted = set(correlation.values()) | set(valid_ids)

    def every_reply() -> dict[str, dict[str, Any]] | None:
        records = read_topic(settings.kafka_bootstrap_servers, settings.reply_topic, idle=0.5)
        found = {v["request_id"]: v for v in json_values(records) if v["request_id"] in wanted}
        return found if len(found) == len(wanted) else None

    replies = eventually(every_reply, timeout=30, what="a reply to every request")
    for poison in REQUEST_POISONS:
        reply = replies[correlation[poison.id]]
        assert set(reply["body"]) == {"error"}
        if poison.answer is not None:
            assert (reply["status"], reply["body"]["error"]) == poison.answer, (poison.id, reply)
            continue
        assert reply["status"] == 500, (poison.id, reply)
        assert reply["body"]["error"].startswith("Error refreshing assessment data: ")
    for request_id in valid_ids:
        assert replies[request_id]["status"] == 200
    last = max(s.offset for s in sent.values()) + 1
    eventually(lambda: committed_offset(settings, topic, 0) >= last + 1, timeout=20, what="the committed offset")
    assert running.consumer.process.poll() is None, running.consumer.log()[-3000:]


# -- records that wedge a consumer: each gets a consumer of its own -------------------


@dataclass
class Isolated:
    settings: Settings
    consumer: ServiceProcess


@pytest.fixture(scope="module")
def isolated(database_url: str, bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory,
             session_engine: Engine) -> Iterator[dict[str, Isolated]]:
    """Two consumers on topics of their own, started together and warmed up
    (group joined, a first event processed)."""
    log_dir = tmp_path_factory.mktemp("isolated-consumers")
    out = {}
    for name in ("oversize", "reply-to"):
        settings = unique_settings(database_url, bootstrap_servers, topic_partitions=1)
        out[name] = Isolated(settings, start_consumer(settings, log_dir, name=f"consumer-{name}"))
    try:
        warm = []
        for n, item in enumerate(out.values()):
            event = upserted_event(question(7700 + n))
            RecordProducer(bootstrap_servers).send(item.settings.question_events_topic, event.to_json(), b"warm")
            warm.append(event.event_id)
        eventually(lambda: processed(session_engine, warm), timeout=40, what="the isolated consumers to start")
        yield out
    finally:
        for item in out.values():
            item.consumer.kill()  # a wedged consumer would spend seconds flushing what it cannot deliver


def wait_processed(engine: Engine, ids: list[str], seconds: float) -> bool:
    try:
        eventually(lambda: processed(engine, ids), timeout=seconds)
        return True
    except AssertionError:
        return False


def test_a_record_near_the_size_limit_is_dead_lettered_and_does_not_block(
    isolated: dict[str, Isolated], session_engine: Engine
) -> None:
    settings, consumer = isolated["oversize"].settings, isolated["oversize"].consumer
    topic = settings.question_events_topic
    producer = RecordProducer(settings.kafka_bootstrap_servers)  # librdkafka defaults: message.max.bytes 1,000,000
    poison = producer.send(topic, b"x" * 999_950, b"k")
    time.sleep(1.5)  # the next record comes in a later poll
    good = upserted_event(question(7750))
    producer.send(topic, good.to_json(), b"k")
    moved_on = wait_processed(session_engine, [good.event_id], 6)
    assert consumer.process.poll() is None, "the consumer process is alive"
    assert moved_on, "the record behind the large one was not processed:\n" + consumer.log()[-800:]
    dead = read_topic(settings.kafka_bootstrap_servers, dlq_topic(topic), at_least=1, timeout=5)
    assert [r.headers["dlq.original.offset"] for r in dead] == [str(poison.offset)]


def test_a_request_with_an_invalid_reply_to_does_not_block_the_consumer(
    isolated: dict[str, Isolated], session_engine: Engine
) -> None:
    settings, consumer = isolated["reply-to"].settings, isolated["reply-to"].consumer
    producer = RecordProducer(settings.kafka_bootstrap_servers)
    bad = RefreshRequested(new_id(), 7, None)
    producer.send(settings.request_topic, bad.to_json(), b"7",
                  [("correlation_id", bad.request_id.encode()), ("reply_to", b"bad topic name!")])
    time.sleep(1.5)  # the next record comes in a later poll
    good = RefreshRequested(new_id(), 7, None)
    producer.send(settings.request_topic, good.to_json(), b"7",
                  [("correlation_id", good.request_id.encode()), ("reply_to", settings.reply_topic.encode())])
    moved_on = wait_processed(session_engine, [good.request_id], 6)
    assert consumer.process.poll() is None, "the consumer process is alive"
    assert moved_on, "the request behind the one with a bad reply_to was not processed:\n" + consumer.log()[-800:]
