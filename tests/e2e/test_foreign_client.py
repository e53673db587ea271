"""A Kafka client that is not our API (FastStream, a Spring or Node service, a
script) gets its replies by following docs/design.md#topics-and-messages alone: its own
correlation ids in the ``correlation_id`` header, its own reply topic in
``reply_to``, and no ``request_id`` in the body. Plain confluent-kafka here,
on the success, 403 and 500 paths."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import Engine

from shared.settings import Settings
from tests.processes import ServiceProcess
from tests.worlds import load, slot_updates_refused, standard_changes, standard_world

pytestmark = pytest.mark.e2e


class ForeignClient:
    """Request/reply the way any Kafka client would do it: one reply topic of its own."""

    def __init__(self, bootstrap: str, request_topic: str) -> None:
        self.request_topic = request_topic
        self.reply_topic = f"other-client-{uuid.uuid4().hex[:8]}.replies"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(self.reply_topic, 1, 1)]).values():
            future.result(15)
        self.producer = Producer({"bootstrap.servers": bootstrap})
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"other-{uuid.uuid4()}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.consumer.assign([TopicPartition(self.reply_topic, 0, 0)])

    def call(self, body: dict[str, Any], timeout: float = 30.0) -> tuple[dict[str, Any], dict[str, str]]:
        correlation_id = f"their-{uuid.uuid4()}"
        self.producer.produce(self.request_topic, json.dumps(body).encode(), b"7", headers=[
            ("correlation_id", correlation_id.encode()), ("reply_to", self.reply_topic.encode()),
            ("content-type", b"application/json")])
        assert self.producer.flush(10) == 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
            if headers.get("correlation_id") == correlation_id:
                return json.loads(msg.value()), headers
        raise AssertionError(f"no reply to {correlation_id} on {self.reply_topic} within {timeout} s")

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def client(service: ServiceProcess, service_settings: Settings, engine: Engine) -> Iterator[ForeignClient]:
    load(engine, standard_world())
    load(engine, standard_changes())
    foreign = ForeignClient(service_settings.kafka_bootstrap_servers, service_settings.request_topic)
    try:
        yield foreign
    finally:
        foreign.close()


def request(assessment_ids: list[int]) -> dict[str, Any]:
    return {"schema_version": 1, "company_id": 7, "assessment_ids": assessment_ids}  # no request_id


def test_success(client: ForeignClient) -> None:
    reply, headers = client.call(request([11]))
    assert reply["status"] == 200 and [d["oid"] for d in reply["body"]["details"]] == [11]
    assert reply["request_id"] == headers["correlation_id"]


def test_not_owned_gets_403(client: ForeignClient) -> None:
    reply, _ = client.call(request([11, 21]))
    assert (reply["status"], reply["body"]) == (
        403, {"error": "Assessment IDs do not belong to company or do not exist: [21]"})


def test_failure_gets_500(client: ForeignClient, engine: Engine) -> None:
    with slot_updates_refused(engine):
        reply, _ = client.call(request([11]))
    assert reply["status"] == 500
    assert reply["body"]["error"].startswith("Error refreshing assessment data: ")
