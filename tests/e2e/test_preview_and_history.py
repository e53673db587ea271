"""Previews and the assessment history end to end: the API, a consumer
process, the broker and PostgreSQL (docs/rest-api.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, text

from shared.settings import Settings
from tests.kafka_tools import deleted_event, publish_event
from tests.processes import ServiceProcess
from tests.waiting import eventually
from tests.worlds import load, question, standard_changes, standard_world

pytestmark = pytest.mark.e2e

PATH = "/assessments/refresh-assessments"
ACME, GLOBEX = {"apiKey": "acme-key-0123456789"}, {"apiKey": "globex-key-0123456789"}


def dump(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                   "AND tablename <> 'alembic_version' ORDER BY 1")).scalars().all()
        return {t: sorted(conn.execute(text(f'SELECT to_jsonb(r)::text FROM "{t}" r')).scalars()) for t in tables}


def end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        out = {}
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in metadata.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                out[(topic, partition)] = high
        return out
    finally:
        consumer.close()


def changed_topics(settings: Settings) -> list[str]:
    """The topics a refresh writes but the reply topic (a preview is answered there)."""
    return [settings.refresh_events_topic, settings.work_topic]


def history(service: ServiceProcess, oid: int, key: dict[str, str], **params: Any) -> httpx.Response:
    return httpx.get(f"{service.url}/assessments/{oid}/history", headers=key, params=params, timeout=30)


def as_refresh(preview: dict[str, Any]) -> dict[str, Any]:
    details = [{**d, "status": "updated" if d["status"] == "would_update" else d["status"]} for d in preview["details"]]
    return {k: v for k, v in preview.items() if k not in ("dry_run", "message", "details")} | {"details": details}


def test_preview_changes_nothing_then_the_refresh_does_what_it_said_and_the_history_says_why(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    topics = changed_topics(service_settings)
    db_before, offsets_before = dump(engine), end_offsets(service_settings, topics)

    preview = httpx.post(f"{service.url}{PATH}?dry_run=true", headers=ACME, json={}, timeout=30)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["dry_run"] is True
    assert [(d["oid"], d["status"]) for d in body["details"]] == [(11, "would_update"), (12, "unchanged")]
    assert dump(engine) == db_before
    assert end_offsets(service_settings, topics) == offsets_before

    refresh = httpx.post(f"{service.url}{PATH}", headers=ACME, json={}, timeout=30)
    assert refresh.status_code == 200, refresh.text
    assert {k: v for k, v in refresh.json().items() if k != "message"} == as_refresh(body)

    changes = history(service, 11, ACME)
    assert changes.status_code == 200, changes.text
    entries = changes.json()["changes"]
    replaced = body["details"][0]["replacements"][0]
    assert sorted((c["kind"], c["old_qid"], c["new_qid"]) for c in entries) == sorted(
        [("refreshed", 101, 101), ("replaced", replaced["old_qid"], replaced["new_qid"])])
    request_id = refresh.headers["X-Request-Id"]
    assert {c["trigger"]["request_id"] for c in entries} == {request_id}
    assert changes.json()["next_cursor"] is None
    assert history(service, 12, ACME).json()["changes"] == []


def test_history_of_a_deletion_fan_out_pages_newest_first(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    load(engine, standard_world())
    event = deleted_event(103)
    publish_event(service_settings.kafka_bootstrap_servers, service_settings.question_events_topic, event)
    eventually(lambda: history(service, 11, ACME).json()["changes"] != [], what="the deletion's history")
    load(engine, {"questions": [{"qid": 101, "company_id": None, "type": "mcq", "skill": "python",
                                 "difficulty": "medium", "content": {"text": "101 again"}, "deleted": False}]})
    assert httpx.post(f"{service.url}{PATH}", headers=ACME, json={"assessment_ids": [11]}, timeout=30).status_code == 200
    first = history(service, 11, ACME, limit=1).json()
    assert first["changes"][0]["kind"] == "refreshed" and first["changes"][0]["trigger"]["type"] == "request"
    second = history(service, 11, ACME, limit=1, cursor=first["next_cursor"]).json()
    assert second["changes"][0]["kind"] == "replaced"
    assert second["changes"][0]["trigger"] == {"type": "question.deleted", "event_id": event.event_id, "qid": 103}
    assert second["next_cursor"] is None
    later = history(service, 11, ACME, since=first["changes"][0]["changed_at"]).json()["changes"]
    assert [c["kind"] for c in later] == ["refreshed"]


def test_history_is_the_owning_companys_alone_and_bad_queries_are_400(
    service: ServiceProcess, engine: Engine
) -> None:
    load(engine, standard_world())
    unknown, foreign = history(service, 999, GLOBEX), history(service, 11, GLOBEX)
    assert (unknown.status_code, foreign.status_code) == (404, 404)
    assert foreign.json() == {"error": "Unknown assessment: 11"}
    assert unknown.json() == {"error": "Unknown assessment: 999"}
    assert history(service, 11, {"apiKey": "nobody"}).status_code == 401
    for params in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"since": "yesterday"},
                   {"since": "2026-12-08T10:00:00"}, {"cursor": "%%%"}):
        response = history(service, 11, ACME, **params)
        assert response.status_code == 400, (params, response.text)
    bad = httpx.post(f"{service.url}{PATH}?dry_run=maybe", headers=ACME, json={}, timeout=30)
    assert (bad.status_code, bad.json()) == (400, {"error": "dry_run must be true or false"})
    denied = httpx.post(f"{service.url}{PATH}?dry_run=true", headers=GLOBEX, json={"assessment_ids": [11]}, timeout=30)
    assert denied.status_code == 403


def replay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assessment_refresh.cli", "replay", "--quiet", *args],
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=120)


def test_a_replay_adds_to_the_history_only_what_it_changed(
    service: ServiceProcess, service_settings: Settings, engine: Engine
) -> None:
    load(engine, standard_world())
    load(engine, {"questions": [question(103, text_="question 103, reworded")]})
    since = datetime.now(UTC).isoformat()
    refresh = httpx.post(f"{service.url}{PATH}", headers=ACME, json={"assessment_ids": [11]}, timeout=30)
    assert refresh.status_code == 200, refresh.text
    request_id = refresh.headers["X-Request-Id"]
    first = history(service, 11, ACME).json()["changes"]
    assert [(c["kind"], c["old_qid"]) for c in first] == [("refreshed", 103)]

    # Replayed with nothing changed since: no second record.
    replayed = replay(service_settings, "--topic", service_settings.request_topic, "--from-time", since)
    assert replayed.returncode == 0, replayed.stderr
    assert history(service, 11, ACME).json()["changes"] == first

    # The bank moved on: the replay records what it changed, and says it was a replay.
    load(engine, {"questions": [question(101, text_="question 101, reworded")]})
    replayed = replay(service_settings, "--topic", service_settings.request_topic, "--from-time", since)
    assert replayed.returncode == 0, replayed.stderr
    after = history(service, 11, ACME).json()["changes"]
    assert after[1:] == first
    assert (after[0]["kind"], after[0]["old_qid"], after[0]["trigger"]) == (
        "refreshed", 101, {"type": "request", "request_id": request_id, "replay": True})
