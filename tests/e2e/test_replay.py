"""Replays of question events, refresh requests and dead letters, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from consumer.dead_letters import dlq_topic
from shared.messages import RefreshRequested, utc_now_iso
from shared.settings import Settings
from tests.conftest import unique_settings
from tests.kafka_tools import deleted_event, json_values, produce, publish_event, read_topic, upserted_event
from tests.processes import ServiceProcess, start_consumer
from tests.waiting import eventually
from tests.worlds import load, question, slots

pytestmark = pytest.mark.e2e

KIND = ("coding", "python", "hard")


@pytest.fixture
def settings(database_url: str, bootstrap_servers: str) -> Settings:
    return unique_settings(database_url, bootstrap_servers)


@pytest.fixture
def consumer(settings: Settings, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = start_consumer(settings, tmp_path)
    yield process
    process.stop()


def world() -> dict[str, Any]:
    return {
        "companies": [{"id": 7, "name": "Acme", "api_keys": ["acme-key-0123456789"]}],
        "questions": [question(q, KIND) for q in range(600, 606)],
        "assessments": [{"oid": 51, "company_id": 7, "name": "Python hard",
                         "sections": [{"name": "Code", "qids": [600, 601, 603]}]}],
    }


def replay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assessment_refresh.cli", "replay", "--quiet", *args],
        env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=120,
    )


def database_state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            "questions": conn.execute(text(
                "SELECT qid, version, deleted, content, company_id FROM questions ORDER BY qid")).all(),
            "slots": conn.execute(text(
                "SELECT oid, section_idx, question_idx, qid, snapshot_version, snapshot "
                "FROM assessment_slots ORDER BY 1, 2, 3")).all(),
            "processed": conn.execute(text(
                "SELECT message_id, status FROM processed_messages ORDER BY 1")).all(),
        }


def processed_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM processed_messages")).scalar_one())


def test_replaying_question_events_leaves_the_database_as_one_pass_did(
    settings: Settings, consumer: ServiceProcess, engine: Engine
) -> None:
    load(engine, world())
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.question_events_topic
    early = [
        upserted_event(question(602, KIND, text_="602, second wording")),
        upserted_event(question(602, KIND, text_="602, third wording")),  # same question twice: order matters
        deleted_event(600),
    ]
    late = [deleted_event(601), upserted_event(question(605, KIND, text_="605, reworded"))]
    for event in early:
        publish_event(bootstrap, topic, event)
    time.sleep(0.05)
    middle = utc_now_iso()
    time.sleep(0.05)
    for event in late:
        publish_event(bootstrap, topic, event)
    eventually(lambda: processed_count(engine) == 5, what="the first pass")
    first_pass = database_state(engine)
    assert first_pass["questions"][2].version == 3 and first_pass["questions"][2].content["text"] == "602, third wording"
    assert {s.qid for s in first_pass["slots"]}.isdisjoint({600, 601}), "both deleted questions were replaced"

    dry = replay(settings, "--topic", topic, "--from-beginning", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "5 records to read" in dry.stdout and "partition" in dry.stdout
    assert database_state(engine) == first_pass

    full = replay(settings, "--topic", topic, "--from-beginning")
    assert full.returncode == 0, full.stderr
    assert "replayed 5 of 5 records" in full.stdout
    assert database_state(engine) == first_pass

    since = replay(settings, "--topic", topic, "--from-time", middle)
    assert since.returncode == 0, since.stderr
    # Only the two late events are reprocessed, whether the broker can look
    # offsets up by time (Kafka) or not (Tansu: the replay skips older records).
    assert "replayed 2 of" in since.stdout, since.stdout
    assert database_state(engine) == first_pass


def test_replaying_requests_reruns_refreshes_without_replying(
    settings: Settings, consumer: ServiceProcess, engine: Engine
) -> None:
    load(engine, world())
    bootstrap = settings.kafka_bootstrap_servers
    request = RefreshRequested("7e57a11d-0000-4000-8000-000000000051", 7, [51])
    produce(bootstrap, settings.request_topic, request.to_json(), b"7",
            headers=[("correlation_id", request.request_id.encode()), ("reply_to", settings.reply_topic.encode())])
    eventually(lambda: processed_count(engine) == 1)
    replies_before = len(read_topic(bootstrap, settings.reply_topic, at_least=1))
    # The bank changes after the request was served; a replay reprocesses the request.
    load(engine, {"questions": [question(603, KIND, text_="603, after the fact")]})
    result = replay(settings, "--topic", settings.request_topic, "--from-beginning")
    assert result.returncode == 0, result.stderr
    assert slots(engine, 51)[2][2:] == (603, 2, "603, after the fact")
    events = [e for e in json_values(read_topic(bootstrap, settings.refresh_events_topic, at_least=1))
              if e["trigger"] == {"type": "request", "request_id": request.request_id}]
    assert [e["detail"]["refreshed_qids"] for e in events] == [[603]], "the replay published its result event"
    assert len(read_topic(bootstrap, settings.reply_topic, idle=1.0)) == replies_before, "no reply to a caller long gone"


def test_dlq_replay_after_a_fix_reprocesses_and_what_still_fails_returns(
    settings: Settings, consumer: ServiceProcess, engine: Engine
) -> None:
    load(engine, world())
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.question_events_topic
    # A question of a company the bank does not know yet: fails for a non-transient reason.
    orphan = upserted_event(question(700, KIND, company_id=99, text_="private to a company loaded later"))
    publish_event(bootstrap, topic, orphan)
    produce(bootstrap, topic, b"still not json", key=b"701")
    dead = read_topic(bootstrap, dlq_topic(topic), at_least=2)
    assert len(dead) == 2
    orphan_dead = next(r for r in dead if r.key == b"700")
    assert orphan_dead.headers["dlq.error.type"] == "IntegrityError"
    assert orphan_dead.headers["dlq.attempts"] == "3"

    load(engine, {"companies": [{"id": 99, "name": "Late Corp", "api_keys": []}]})  # the fix
    result = replay(settings, "--topic", dlq_topic(topic), "--from-beginning")
    assert result.returncode == 1, "exit status says something was dead-lettered again"
    assert "replayed 2 of 2 records" in result.stdout and "1 dead-lettered" in result.stdout
    with engine.connect() as conn:
        owner = conn.execute(text("SELECT company_id FROM questions WHERE qid = 700")).scalar_one()
    assert owner == 99
    again = read_topic(bootstrap, dlq_topic(topic), at_least=3)
    assert len(again) == 3
    first, returned = sorted((r for r in again if r.value == b"still not json"), key=lambda r: r.offset)
    assert returned.headers["dlq.original.topic"] == topic, "it keeps its first origin"
    assert returned.headers["dlq.original.offset"] == first.headers["dlq.original.offset"]
