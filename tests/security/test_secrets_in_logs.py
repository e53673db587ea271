"""Secrets stay out of logs and out of the database (issue 4, "security").

An API process and a consumer process run with LOG_LEVEL=DEBUG (the most a
operator may turn on while chasing a problem). Requests with valid and invalid
keys, question events and refreshes carrying distinctive question content go
through them; afterwards neither log holds an API key (valid or not) or any
question content. API keys are stored only as SHA-256 hex digests, and
`assessment-refresh keys create/revoke` issue a key that works once printed
and stops working once revoked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from shared.messages import QuestionEvent, new_id, utc_now_iso
from shared.settings import Settings
from tests.conftest import unique_settings
from tests.kafka_tools import deleted_event, produce, publish_event, upserted_event
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.security.conftest import PATH, all_user_tables, record_status, table_dump
from tests.waiting import eventually
from tests.worlds import load, slot_updates_refused

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = "/work/venv/bin/python" if Path("/work/venv/bin/python").exists() else sys.executable
TAG = secrets.token_hex(4)
ACME_KEY = f"acme-SECRETKEY-{TAG}-0123456789"
GLOBEX_KEY = f"globex-SECRETKEY-{TAG}-0123456789"
WRONG_KEYS = [f"wrong-SECRETKEY-{TAG}-{n}" for n in range(4)]
KIND = ("mcq", "python", "medium")


def content(label: str) -> dict[str, Any]:
    """Question content whose every string is distinctive."""
    return {"text": f"CONTENTTEXT-{label}-{TAG}", "options": [f"CONTENTOPTION-{label}-{TAG}", "plain"],
            "answer": f"CONTENTANSWER-{label}-{TAG}", "score": 5}


def bank_question(qid: int, owner: int | None = None, label: str | None = None, deleted: bool = False) -> dict[str, Any]:
    t, skill, difficulty = KIND
    return {"qid": qid, "company_id": owner, "type": t, "skill": skill, "difficulty": difficulty,
            "content": content(label or str(qid)), "deleted": deleted}


def sentinels(log: str) -> list[str]:
    return sorted(set(re.findall(r"(?:SECRETKEY|CONTENT[A-Z]+)-[\w-]*", log)))


@dataclass
class DebugService:
    settings: Settings
    api: ServiceProcess
    consumer: ServiceProcess


@pytest.fixture(scope="module")
def debug_service(database_url: str, bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[DebugService]:
    settings = unique_settings(database_url, bootstrap_servers, log_level="DEBUG", api_key_cache_s=1.0)
    log_dir = tmp_path_factory.mktemp("debug-logs")
    consumer = start_consumer(settings, log_dir, name="consumer-debug")
    try:
        api = start_api(settings, log_dir, name="api-debug")
    except BaseException:
        consumer.stop()
        raise
    try:
        yield DebugService(settings, api, consumer)
    finally:
        api.stop()
        consumer.stop()


@pytest.fixture
def world(engine: Engine) -> Engine:
    load(engine, {
        "companies": [{"id": 7, "name": "Acme", "api_keys": [ACME_KEY]},
                      {"id": 8, "name": "Globex", "api_keys": [GLOBEX_KEY]}],
        "questions": [*(bank_question(q) for q in range(101, 106)), bank_question(180, owner=7)],
        "assessments": [{"oid": 11, "company_id": 7, "name": "A", "sections": [{"name": "S", "qids": [101, 102]}]},
                        {"oid": 21, "company_id": 8, "name": "G", "sections": [{"name": "S", "qids": [103]}]}],
    })
    return engine


def post(service: DebugService, headers: dict[str, str], body: bytes) -> httpx.Response:
    response = httpx.post(service.api.url + PATH, headers=headers, content=body, timeout=30)
    record_status("secrets in logs", response.status_code)
    return response


def processed(engine: Engine, message_id: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM processed_messages WHERE message_id = :m"),
                            {"m": message_id}).first() is not None


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VENV_PYTHON, "-m", "assessment_refresh.cli", *args], cwd=REPO,
                          env={**os.environ, "DATABASE_URL": database_url}, capture_output=True, text=True, timeout=60)


def test_debug_logs_hold_no_api_key_and_no_question_content(debug_service: DebugService, world: Engine) -> None:
    service, settings = debug_service, debug_service.settings
    bootstrap, events_topic = settings.kafka_bootstrap_servers, settings.question_events_topic
    ok = json.dumps({"assessment_ids": [11]}).encode()

    # The bank changes through upstream events carrying new distinctive content.
    reworded = upserted_event(bank_question(101, label="101-reworded"))
    added = upserted_event(bank_question(106, label="106-new"))
    publish_event(bootstrap, events_topic, reworded)
    publish_event(bootstrap, events_topic, added)
    gone = deleted_event(102)
    publish_event(bootstrap, events_topic, gone)
    for event in (reworded, added, gone):
        eventually(lambda e=event: processed(world, e.event_id), what="the question events")

    # Every kind of answer, with valid and invalid keys in both headers.
    answers = [
        post(service, {"apiKey": ACME_KEY}, ok).status_code,  # refresh: copies the new content
        post(service, {"X-API-Key": GLOBEX_KEY}, b"").status_code,
        post(service, {"apiKey": ACME_KEY}, json.dumps({"assessment_ids": [21, 99]}).encode()).status_code,
        post(service, {"apiKey": ACME_KEY}, b"{broken").status_code,
        post(service, {"apiKey": WRONG_KEYS[0]}, ok).status_code,
        post(service, {"X-API-Key": WRONG_KEYS[1]}, ok).status_code,
        post(service, {"apiKey": WRONG_KEYS[2]}, b"x" * (settings.max_body_bytes + 1)).status_code,
        post(service, {"apiKey": "", "X-API-Key": WRONG_KEYS[3]}, ok).status_code,
    ]
    # The oversized body with a wrong key: 401, the key is checked before the body is read.
    assert answers == [200, 200, 403, 400, 401, 401, 401, 401]
    with world.connect() as conn:
        texts = conn.execute(text("SELECT snapshot->>'text' FROM assessment_slots WHERE oid = 11 ORDER BY question_idx")).scalars().all()
    assert texts[0] == f"CONTENTTEXT-101-reworded-{TAG}", "the refresh did copy the new content"

    for process in (service.api, service.consumer):
        leaked = [found for found in sentinels(process.log()) if "refused" not in found]
        assert leaked == [], f"{process.name} log holds secrets or question content: {leaked}"
    assert '"level": "DEBUG"' in service.api.log(), "the API process really logs at DEBUG"


def test_a_refused_question_event_does_not_write_its_content_to_the_log(
    debug_service: DebugService, world: Engine
) -> None:
    settings = debug_service.settings
    refused = QuestionEvent(new_id(), "question.upserted", utc_now_iso(),
                            question={**bank_question(107, label="107-refused"),
                                      "content": {**content("107-refused"), "note": "nul \u0000 here"}})
    produce(settings.kafka_bootstrap_servers, settings.question_events_topic, refused.to_json(), b"107")
    marker = upserted_event(bank_question(108, label="108-marker"))
    produce(settings.kafka_bootstrap_servers, settings.question_events_topic, marker.to_json(), b"107")
    eventually(lambda: processed(world, marker.event_id), what="the event behind the refused one")
    leaked = [found for found in sentinels(debug_service.consumer.log()) if "refused" in found]
    assert leaked == [], f"the consumer log holds the refused question's content: {leaked}"


def test_a_500_does_not_show_sql_to_the_caller(debug_service: DebugService, world: Engine) -> None:
    with slot_updates_refused(world):
        load(world, {"questions": [bank_question(101, label="101-changed")]})
        response = post(debug_service, {"apiKey": ACME_KEY}, json.dumps({"assessment_ids": [11]}).encode())
    assert response.status_code == 500
    error = response.json()["error"]
    assert error.startswith("Error refreshing assessment data: ") and "slot table is read-only" in error
    assert "[SQL:" not in error and "[parameters:" not in error and "assessment_slots" not in error, error
    # The consumer logged the failure at DEBUG with a traceback of code frames, and no line holds SQL.
    log = debug_service.consumer.log()
    assert "Traceback (most recent call last)" in log and "slot table is read-only" in log
    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\b .*\b(FROM|SET|VALUES|WHERE)\b|\[SQL:|\[parameters:")
    offending = [line[:200] for line in log.splitlines() if sql.search(line)]
    assert offending == [], f"the consumer log holds SQL: {offending[:3]}"


def test_api_keys_are_stored_only_as_sha256_hex(debug_service: DebugService, world: Engine) -> None:
    post(debug_service, {"apiKey": ACME_KEY}, b"")
    post(debug_service, {"apiKey": WRONG_KEYS[0]}, b"")
    with world.connect() as conn:
        rows = conn.execute(text("SELECT key_hash, company_id FROM api_keys ORDER BY company_id")).all()
    assert [tuple(r) for r in rows] == [(hashlib.sha256(ACME_KEY.encode()).hexdigest(), 7),
                                        (hashlib.sha256(GLOBEX_KEY.encode()).hexdigest(), 8)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", r.key_hash) for r in rows)
    everything = json.dumps(table_dump(world, tuple(all_user_tables(world))))
    for key in (ACME_KEY, GLOBEX_KEY, *WRONG_KEYS):
        assert key not in everything


def test_keys_create_prints_a_working_key_once_and_revoke_disables_it(
    debug_service: DebugService, world: Engine, database_url: str
) -> None:
    created = cli(database_url, "keys", "create", "--company", "8")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.split()
    assert len(lines) == 1, "the key alone on stdout"
    key = lines[0]
    assert len(key) >= 32 and re.fullmatch(r"[\w-]+", key)
    everything = json.dumps(table_dump(world, tuple(all_user_tables(world))))
    assert key not in everything and hashlib.sha256(key.encode()).hexdigest() in everything

    works = post(debug_service, {"apiKey": key}, json.dumps({"assessment_ids": [21]}).encode())
    assert works.status_code == 200 and works.json()["company_id"] == 8
    assert post(debug_service, {"apiKey": key}, json.dumps({"assessment_ids": [11]}).encode()).status_code == 403

    revoked = cli(database_url, "keys", "revoke", key)
    assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked", revoked.stderr
    # An API process trusts a key it has seen for API_KEY_CACHE_S (1 s here).
    time.sleep(debug_service.settings.api_key_cache_s + 0.2)
    after = post(debug_service, {"apiKey": key}, json.dumps({"assessment_ids": [21]}).encode())
    assert (after.status_code, after.json()) == (401, {"error": "Invalid or missing API key"})
    again = cli(database_url, "keys", "revoke", key)
    assert again.returncode == 1 and "error: no such active key" in again.stderr
    for process in (debug_service.api, debug_service.consumer):
        assert key not in process.log()
