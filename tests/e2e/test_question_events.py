"""Automatic refresh on upstream question events, result events and dead letters,
over a real broker, a separate consumer process and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from consumer.dead_letters import dlq_topic
from shared.settings import Settings
from tests.kafka_tools import deleted_event, json_values, produce, publish_event, read_topic, upserted_event
from tests.processes import ServiceProcess
from tests.waiting import eventually
from tests.worlds import load, question, slots

pytestmark = pytest.mark.e2e

KIND = ("mcq", "go", "medium")


def two_company_world() -> dict[str, Any]:
    """Question 500 is used by Acme's 31 and Globex's 41. The only alternatives
    are private: 501 (Acme's) and 502 (Globex's)."""
    return {
        "companies": [
            {"id": 7, "name": "Acme", "api_keys": ["acme-key-0123456789"]},
            {"id": 8, "name": "Globex", "api_keys": ["globex-key-0123456789"]},
        ],
        "questions": [question(500, KIND), question(501, KIND, company_id=7), question(502, KIND, company_id=8),
                      question(510, ("mcq", "go", "easy"))],
        "assessments": [
            {"oid": 31, "company_id": 7, "name": "Go L2", "sections": [{"name": "Go", "qids": [510, 500]}]},
            {"oid": 41, "company_id": 8, "name": "Globex Go", "sections": [{"name": "Go", "qids": [500]}]},
        ],
    }


def events_for(settings: Settings, trigger_key: str, trigger_id: str, at_least: int) -> list[dict[str, Any]]:
    values = json_values(read_topic(settings.kafka_bootstrap_servers, settings.refresh_events_topic, at_least=at_least))
    return [v for v in values if v["trigger"].get(trigger_key) == trigger_id and v["type"] == "assessment.refreshed"]


def processed(engine: Engine, message_id: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM processed_messages WHERE message_id = :m"), {"m": message_id}).first() is not None


def test_deletion_replaces_the_question_in_every_company_with_its_own_alternative(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    load(engine, two_company_world())
    event = deleted_event(500)
    publish_event(service_settings.kafka_bootstrap_servers, service_settings.question_events_topic, event)
    eventually(lambda: processed(engine, event.event_id), what="the deletion to be processed")
    assert [s[2] for s in slots(engine, 31)] == [510, 501]
    assert [s[2] for s in slots(engine, 41)] == [502]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT deleted FROM questions WHERE qid = 500")).scalar_one() is True

    events = events_for(service_settings, "event_id", event.event_id, at_least=2)
    assert sorted((e["oid"], e["company_id"]) for e in events) == [(31, 7), (41, 8)], "one event per changed assessment"
    for e in events:
        assert e["schema_version"] == 1 and e["type"] == "assessment.refreshed" and e["occurred_at"]
        assert e["trigger"] == {"type": "question.deleted", "event_id": event.event_id, "qid": 500}
        assert e["detail"]["status"] == "updated" and e["detail"]["replacements"][0]["old_qid"] == 500


def test_a_redelivered_event_changes_and_publishes_nothing_new(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    load(engine, two_company_world())
    event = deleted_event(500)
    bootstrap, topic = service_settings.kafka_bootstrap_servers, service_settings.question_events_topic
    publish_event(bootstrap, topic, event)
    eventually(lambda: processed(engine, event.event_id))
    first = len(events_for(service_settings, "event_id", event.event_id, at_least=2))
    after_first = (slots(engine, 31), slots(engine, 41))
    # The same event again (an upstream retry), then a marker event behind it on the same partition.
    publish_event(bootstrap, topic, event)
    marker = deleted_event(510)
    publish_event(bootstrap, topic, marker)
    eventually(lambda: processed(engine, marker.event_id))
    assert len(events_for(service_settings, "event_id", event.event_id, at_least=first)) == first == 2
    assert (slots(engine, 31)[1], slots(engine, 41)) == (after_first[0][1], after_first[1])


def test_an_event_for_an_unknown_question_is_a_harmless_no_op(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    load(engine, two_company_world())
    event = deleted_event(99999)
    publish_event(service_settings.kafka_bootstrap_servers, service_settings.question_events_topic, event)
    eventually(lambda: processed(engine, event.event_id))
    assert events_for(service_settings, "event_id", event.event_id, at_least=0) == []
    dlq = read_topic(service_settings.kafka_bootstrap_servers, dlq_topic(service_settings.question_events_topic), idle=0.5)
    assert all(r.key != b"99999" for r in dlq)
    assert [s[2] for s in slots(engine, 31)] == [510, 500]


def test_an_upsert_is_picked_up_by_the_next_refresh(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    load(engine, two_company_world())
    changed = question(510, ("mcq", "go", "easy"), text_="question 510, now with a diagram")
    event = upserted_event(changed)
    publish_event(service_settings.kafka_bootstrap_servers, service_settings.question_events_topic, event)
    eventually(lambda: processed(engine, event.event_id))
    assert slots(engine, 31)[0][3] == 1, "an upsert alone does not refresh assessments"
    response = httpx.post(service.url + "/assessments/refresh-assessments", json={"assessment_ids": [31]},
                          headers={"apiKey": "acme-key-0123456789"}, timeout=30)
    detail = response.json()["details"][0]
    assert detail["refreshed_qids"] == [510]
    assert slots(engine, 31)[0][2:] == (510, 2, "question 510, now with a diagram")
    # REST-triggered refreshes publish their result event too.
    request_id = response.headers["x-request-id"]
    [published] = events_for(service_settings, "request_id", request_id, at_least=1)
    assert published["oid"] == 31 and published["detail"] == detail


@pytest.mark.parametrize(
    ("poison", "error_type"),
    [(b"\xff not json at all", "MessageError"),
     (b'{"schema_version": 99, "event_id": "x", "type": "question.deleted"}', "MessageError"),
     (b'{"schema_version": 1, "event_id": "x", "type": "question.deleted", "qid": "five", '
      b'"occurred_at": "2026-11-28T10:00:00Z"}', "MessageError")],
    ids=["not-json", "wrong-schema-version", "wrong-field-type"],
)
def test_a_poison_message_goes_to_the_dlq_and_the_partition_moves_on(
    service: ServiceProcess, service_settings: Settings, engine: Engine, poison: bytes, error_type: str
) -> None:
    load(engine, two_company_world())
    bootstrap, topic = service_settings.kafka_bootstrap_servers, service_settings.question_events_topic
    produce(bootstrap, topic, poison, key=b"500")  # same key: same partition as the next event
    good = deleted_event(500)
    publish_event(bootstrap, topic, good)
    eventually(lambda: processed(engine, good.event_id), what="the event behind the poison message")
    dead = [r for r in read_topic(bootstrap, dlq_topic(topic), at_least=1) if r.value == poison]
    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["dlq.original.topic"] == topic
    assert headers["dlq.error.type"] == error_type and headers["dlq.error.message"]
    assert headers["dlq.attempts"] == "1"
    assert int(headers["dlq.original.offset"]) >= 0 and headers["dlq.original.partition"].isdigit()
    assert dead[0].key == b"500"


def test_a_request_that_cannot_be_decoded_still_answers_its_caller_through_the_dlq_path(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    """Producers other than our API may send bad requests; a caller waiting on
    the correlation id gets an error reply instead of a timeout."""
    bootstrap = service_settings.kafka_bootstrap_servers
    correlation = "c0ffee00-0000-4000-8000-000000000001"
    produce(bootstrap, service_settings.request_topic, b'{"schema_version": 1, "company_id": "seven"}', key=b"7",
            headers=[("correlation_id", correlation.encode()), ("reply_to", service_settings.reply_topic.encode())])
    replies = eventually(
        lambda: [v for v in json_values(read_topic(bootstrap, service_settings.reply_topic, idle=0.5))
                 if v.get("request_id") == correlation],
        what="the error reply",
    )
    assert replies[0]["status"] == 500
    assert replies[0]["body"]["error"].startswith("Error refreshing assessment data: ")
    dead = read_topic(bootstrap, dlq_topic(service_settings.request_topic), at_least=1)
    assert any(r.headers.get("correlation_id") == correlation for r in dead)


def test_the_publish_command_sends_a_deletion_the_consumer_applies(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    """`assessment-refresh publish question-deleted QID`, as a person trying the
    automatic path would run it: no hand-written JSON, the same effect."""
    import os
    import subprocess
    import sys

    load(engine, two_company_world())
    result = subprocess.run([sys.executable, "-m", "assessment_refresh.cli", "publish", "question-deleted", "500"],
                            env={**os.environ, **service_settings.to_env()}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("published question.deleted 500 (event_id ")
    event_id = result.stdout.split("event_id ")[1].split(")")[0]
    eventually(lambda: processed(engine, event_id), what="the published deletion to be processed")
    assert [s[2] for s in slots(engine, 31)] == [510, 501]
    assert [s[2] for s in slots(engine, 41)] == [502]
    records = [r for r in read_topic(service_settings.kafka_bootstrap_servers, service_settings.question_events_topic,
                                     at_least=1) if r.key == b"500" and event_id.encode() in (r.value or b"")]
    assert len(records) == 1 and records[0].headers.get("content-type") == "application/json"
