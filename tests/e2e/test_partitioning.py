"""A key lands on the partition the Java client would put it on (murmur2),
whoever of the service writes it: the API (requests, keyed by company), the
``publish`` command (question events, by qid), and the consumer (replies, by
request id; result events, by oid or, for a deletion's summary, by qid). So
one company's requests, or one question's events, stay in order on one
partition when a Java bank, Connect or the console tools write beside us."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from assessment_refresh.publish import publish_event, question_deleted
from shared.partitioner import java_partition
from shared.settings import Settings
from tests.kafka_tools import read_topic
from tests.processes import ServiceProcess
from tests.worlds import load, question

pytestmark = pytest.mark.e2e

COMPANIES = range(1, 13)
PY = ("mcq", "python", "medium")


def key_of(company: int) -> str:
    return f"partition-key-of-company-{company}-0123"


def world() -> dict[str, Any]:
    """Company c owns assessment 9000 + c, which uses questions 9100 + c (to be
    deleted; 9200 + c is its alternative) and 9300 (reworded after the build)."""
    return {
        "companies": [{"id": c, "name": f"P{c}", "api_keys": [key_of(c)]} for c in COMPANIES],
        "questions": [question(9300, PY)] + [q for c in COMPANIES for q in (
            question(9100 + c, ("mcq", f"skill-{c}", "easy")), question(9200 + c, ("mcq", f"skill-{c}", "easy")))],
        "assessments": [{"oid": 9000 + c, "company_id": c, "name": f"A{c}",
                         "sections": [{"name": "S", "qids": [9300, 9100 + c]}]} for c in COMPANIES],
    }


def test_every_record_the_service_writes_is_on_the_java_clients_partition(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    s = service_settings
    load(engine, world())
    load(engine, {"questions": [question(9300, PY, text_="reworded")]})
    with httpx.Client(timeout=30) as client:
        for c in COMPANIES:  # each changes its assessment (9300 reworded): a reply and a result event
            r = client.post(service.url + "/assessments/refresh-assessments", json={}, headers={"apiKey": key_of(c)})
            assert r.status_code == 200, r.text
    # The command line once, as an operator runs it; the rest through the same function.
    command = subprocess.run([sys.executable, "-m", "assessment_refresh.cli", "publish", "question-deleted", "9101"],
                             env={**os.environ, **s.to_env()}, capture_output=True, text=True, timeout=60)
    assert command.returncode == 0, command.stderr
    for c in list(COMPANIES)[1:]:
        publish_event(s, question_deleted(9100 + c))

    expected_counts = {s.request_topic: len(COMPANIES), s.question_events_topic: len(COMPANIES),
                       s.reply_topic: len(COMPANIES),
                       # per company: the REST refresh's event, the deletion's event and its summary
                       s.refresh_events_topic: 3 * len(COMPANIES)}
    misplaced, counts = [], {}
    for topic, at_least in expected_counts.items():
        records = read_topic(s.kafka_bootstrap_servers, topic, at_least=at_least, timeout=45)
        counts[topic] = len(records)
        for record in records:
            assert record.key, f"a record without a key on {topic}"
            if record.partition != java_partition(record.key, s.topic_partitions):
                misplaced.append((topic, record.key, record.partition))
    assert counts == expected_counts, counts
    assert not misplaced, f"records off the Java client's partition: {misplaced[:5]}"
