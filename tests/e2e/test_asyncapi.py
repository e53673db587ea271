"""Real records from every topic conform to GET /asyncapi.json, as real HTTP
answers conform to GET /openapi.json (tests/e2e/test_openapi.py).

One scenario drives every kind of record through the broker: a REST refresh
large enough to become a job of chunks whose result is too large for the reply
topic (a claim check), a 403, a client with a reply topic of its own, the
bank's deletion (with its completion summary) and upsert, and three records
that break the contract and are dead-lettered. Each record is then read back
(value, key, headers) and must be exactly one of its channel's messages; the
bad ones must be none.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import Engine

from assessment_refresh.publish import publish_event
from shared.dlq import dlq_topic
from shared.messages import (
    CONTENT_TYPE_JSON,
    HEADER_CONTENT_TYPE,
    HEADER_CORRELATION_ID,
    HEADER_REPLY_TO,
    QUESTION_UPSERTED,
    QuestionEvent,
    new_id,
    record_headers,
    utc_now_iso,
)
from shared.settings import Settings
from tests.asyncapi_tools import conforming_message, matching_messages
from tests.conftest import unique_settings
from tests.kafka_tools import Record, deleted_event, produce, read_topic
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.worlds import load, question, standard_changes, standard_world

pytestmark = pytest.mark.e2e

REFRESH = "/assessments/refresh-assessments"
ACME = {"apiKey": "acme-key-0123456789"}
BAD_REQUEST = b'{"schema_version":1,"company_id":"7","assessment_ids":[11]}'
BAD_EVENT = b'{"schema_version":1,"event_id":"","type":"question.deleted","qid":103,"occurred_at":"2026-11-28T10:00:00Z"}'
BAD_CHUNK = b'{"schema_version":1,"type":"refresh.chunk","job_id":"","chunk":0}'
BAD = (BAD_REQUEST, BAD_EVENT, BAD_CHUNK)
# Acme's assessments beyond the standard world's 11 and 12: a refresh of all six is a job of
# three chunks, and its report is larger than the reply topic may carry.
MORE_ASSESSMENTS = {"assessments": [
    {"oid": oid, "company_id": 7, "name": f"Extra {oid}", "sections": [{"name": "Python", "qids": [105, 106]}]}
    for oid in (13, 14, 15, 16)]}


@pytest.fixture(scope="module")
def jobs_service(database_url: str, bootstrap_servers: str, log_dir: Path) -> Iterator[tuple[ServiceProcess, Settings]]:
    """An API and a consumer that split refreshes of more than 2 assessments into chunks and send
    replies over 1 KiB (the smallest allowed) as claim checks."""
    settings = unique_settings(database_url, bootstrap_servers, refresh_chunk_size=2, reply_inline_max_bytes=1024)
    consumer = start_consumer(settings, log_dir, name="consumer-asyncapi")
    api = start_api(settings, log_dir, name="api-asyncapi")
    try:
        yield api, settings
    finally:
        api.stop()
        consumer.stop()


def refresh(api: ServiceProcess, ids: list[int] | None) -> httpx.Response:
    return httpx.post(api.url + REFRESH, json={"assessment_ids": ids}, headers=ACME, timeout=30)


def own_reply_topic(bootstrap: str) -> str:
    topic = f"client-{uuid.uuid4().hex[:8]}.replies"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its futures are done
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)
    return topic


def drive_every_kind_of_record(api: ServiceProcess, settings: Settings, client_topic: str) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    everything = refresh(api, None)  # six assessments: three chunks, and 11 changes (a refresh event)
    assert everything.status_code == 200 and len(everything.json()["details"]) == 6, "the claim check was read"
    assert refresh(api, [21]).status_code == 403
    # A client of its own (docs/design.md#topics-and-messages): its reply goes to the topic its reply_to names.
    produce(bootstrap, settings.request_topic, b'{"schema_version":1,"company_id":7,"assessment_ids":[12]}', b"7",
            record_headers(f"their-{uuid.uuid4()}", reply_to=client_topic))
    # The bank, through the operator's publish command: a deletion (11 changes again) and an upsert.
    publish_event(settings, deleted_event(103))
    reworded = question(160, ("mcq", "sql", "easy"), text_="question 160, reworded")
    publish_event(settings, QuestionEvent(new_id(), QUESTION_UPSERTED, utc_now_iso(), question=reworded))
    # Contract breakers: dead-lettered (the request's caller gets a 500 reply).
    produce(bootstrap, settings.request_topic, BAD_REQUEST, b"7",
            record_headers(f"bad-{uuid.uuid4()}", reply_to=settings.reply_topic))
    produce(bootstrap, settings.question_events_topic, BAD_EVENT, b"103",
            [(HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode())])
    produce(bootstrap, settings.work_topic, BAD_CHUNK, b"x/chunk/0", [(HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode())])


def test_real_records_on_every_topic_conform(jobs_service: tuple[ServiceProcess, Settings], engine: Engine) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    load(engine, MORE_ASSESSMENTS)
    service, settings = jobs_service
    bootstrap = settings.kafka_bootstrap_servers
    served = httpx.get(service.url + "/asyncapi.json", timeout=10)
    assert served.status_code == 200
    doc: dict[str, Any] = served.json()
    client_topic = own_reply_topic(bootstrap)
    drive_every_kind_of_record(service, settings, client_topic)

    expected = {  # channel: (topic, records it must hold)
        "refreshRequests": (settings.request_topic, 4),
        "refreshReplies": (settings.reply_topic, 3),
        "replyTo": (client_topic, 1),
        "questionEvents": (settings.question_events_topic, 3),
        "refreshEvents": (settings.refresh_events_topic, 3),
        "refreshWork": (settings.work_topic, 4),
        "refreshRequestsDlq": (dlq_topic(settings.request_topic), 1),
        "questionEventsDlq": (dlq_topic(settings.question_events_topic), 1),
        "refreshWorkDlq": (dlq_topic(settings.work_topic), 1),
    }
    assert set(expected) == set(doc["channels"]), "every channel of the document is exercised"
    seen: dict[str, list[Record]] = {}
    for channel, (topic, count) in expected.items():
        assert doc["channels"][channel]["address"] in (topic, None)
        records = read_topic(bootstrap, topic, at_least=count)
        assert len(records) == count, (channel, [r.value for r in records])
        for record in records:
            if record.value in BAD and not channel.endswith("Dlq"):
                found = matching_messages(doc, channel, record.key, record.value, record.headers)
                assert all(found.values()), f"the document refuses what the consumer refuses: {found}"
                continue
            name = conforming_message(doc, channel, record.key, record.value, record.headers)
            seen.setdefault(name, []).append(record)

    assert set(seen) == set(doc["components"]["messages"]), "every message of the document was seen for real"
    for record in seen["refreshRequested"]:  # what our API and the client wrote: every documented header
        assert {HEADER_CORRELATION_ID, HEADER_REPLY_TO, HEADER_CONTENT_TYPE} <= set(record.headers)
    dead = seen["deadLetteredRequest"][0].headers
    assert dead["dlq.original.topic"] == settings.request_topic and dead["dlq.error.type"] == "MessageError"
    assert dead[HEADER_CORRELATION_ID].startswith("bad-"), "the original's headers are kept"
    replies = [json.loads(r.value or b"") for r in seen["refreshReply"]]
    assert sorted(r["status"] for r in replies) == [200, 200, 403, 500]
    assert [r["body"]["assessments_updated"] for r in replies if "result_location" in r] == [6], "one claim check"
