"""PostgreSQL stopped while events and requests arrive: nothing is lost or dead-lettered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from consumer.dead_letters import dlq_topic
from shared.db import make_engine, migrate
from shared.messages import RefreshRequested
from tests.conftest import unique_settings
from tests.infra import StoppablePostgres
from tests.kafka_tools import deleted_event, json_values, produce, publish_event, read_topic
from tests.processes import start_consumer
from tests.waiting import eventually
from tests.worlds import load, question

pytestmark = pytest.mark.e2e

KIND = ("mcq", "java", "medium")


def test_events_and_requests_wait_out_a_database_outage(bootstrap_servers: str, tmp_path: Path) -> None:
    postgres = StoppablePostgres(tmp_path)
    engine = make_engine(postgres.url)
    migrate(engine)
    load(engine, {
        "companies": [{"id": 7, "name": "Acme", "api_keys": ["acme-key-0123456789"]}],
        "questions": [question(q, KIND) for q in range(800, 820)],
        "assessments": [{"oid": 60 + i, "company_id": 7, "name": f"Java {i}",
                         "sections": [{"name": "Java", "qids": [800 + i, 810 + i]}]} for i in range(5)],
    })
    settings = unique_settings(postgres.url, bootstrap_servers)
    consumer = start_consumer(settings, tmp_path)
    try:
        engine.dispose()
        postgres.stop()
        events = [deleted_event(800 + i) for i in range(5)]
        for event in events:
            publish_event(bootstrap_servers, settings.question_events_topic, event)
        request = RefreshRequested("0d0d0d0d-0000-4000-8000-000000000001", 7, None)
        produce(bootstrap_servers, settings.request_topic, request.to_json(), b"7",
                headers=[("correlation_id", request.request_id.encode()), ("reply_to", settings.reply_topic.encode())])
        time.sleep(6)  # the consumer keeps retrying meanwhile
        assert consumer.process.poll() is None, "the consumer survives the outage"
        postgres.start()

        def all_processed() -> bool:
            with engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM processed_messages")).scalar_one() == 6

        eventually(all_processed, timeout=60, what="the backlog after the outage")
        with engine.connect() as conn:
            used = {r[0] for r in conn.execute(text("SELECT qid FROM assessment_slots"))}
        assert used.isdisjoint(range(800, 805)), "every deleted question was replaced"
        replies = [v for v in json_values(read_topic(bootstrap_servers, settings.reply_topic, at_least=1))
                   if v["request_id"] == request.request_id]
        assert [r["status"] for r in replies] == [200]
        assert read_topic(bootstrap_servers, dlq_topic(settings.question_events_topic), idle=0.5) == []
        assert read_topic(bootstrap_servers, dlq_topic(settings.request_topic), idle=0.5) == []
        assert "transient failure" in consumer.log()
    finally:
        consumer.stop()
        engine.dispose()
