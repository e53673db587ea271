"""OpenTelemetry tracing end to end: the API and the consumer, separate
processes, export with the standard OTLP/HTTP exporter to a receiver in the
test; one REST refresh, and one question.deleted fan-out, are each one trace
across both processes, and the records they leave on Kafka carry it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests.kafka_tools import Record, deleted_event, produce, read_topic
from tests.otlp_receiver import OtlpReceiver, Span
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.waiting import eventually
from tests.worlds import load, standard_changes, standard_world

pytestmark = pytest.mark.e2e

API, CONSUMER = "assessment-refresh-api", "assessment-refresh-consumer"
KEY = {"apiKey": "acme-key-0123456789"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def service(service_settings: Settings, log_dir: Path, receiver: OtlpReceiver) -> Iterator[ServiceProcess]:
    """The service with tracing on, through nothing but the OTEL_* variables."""
    consumer = start_consumer(service_settings, log_dir, env=receiver.env())
    api = start_api(service_settings, log_dir, env=receiver.env())
    try:
        yield api
    finally:
        api.stop()
        consumer.stop()


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def carried(record: Record) -> tuple[str, str]:
    """(trace id, span id) of a record's traceparent header."""
    _version, trace_id, span_id, _flags = record.headers["traceparent"].split("-")
    return trace_id, span_id


def one(spans: list[Span], what: str) -> Span:
    assert len(spans) == 1, f"expected one {what}, got {spans}"
    return spans[0]


def test_one_trace_covers_a_rest_refresh_in_the_api_the_consumer_and_the_database(
    service: ServiceProcess, service_settings: Settings, engine: Engine, receiver: OtlpReceiver, log_dir: Path
) -> None:
    s = service_settings
    load(engine, standard_world())
    load(engine, standard_changes())  # assessment 11 has changes to apply: it publishes a refresh event
    response = httpx.post(f"{service.url}/assessments/refresh-assessments", headers=KEY, json={"assessment_ids": [11]},
                          timeout=30)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]

    # The API's send span names the request; its trace is the refresh's.
    sent = eventually(lambda: receiver.find({"messaging.message.conversation_id": request_id},
                                            service=API, kind="PRODUCER"), what="the API's send span")
    trace_id = one(sent, "API send span").trace_id

    def whole_trace() -> list[Span] | None:
        spans = receiver.trace(trace_id)
        names = {(x.service, x.kind, x.name) for x in spans}
        expected = {(API, "SERVER", "POST /assessments/refresh-assessments"),
                    (API, "PRODUCER", f"send {s.request_topic}"),
                    (CONSUMER, "CONSUMER", f"process {s.request_topic}"),
                    (CONSUMER, "PRODUCER", f"send {s.reply_topic}"),
                    (CONSUMER, "PRODUCER", f"send {s.refresh_events_topic}"),
                    (API, "CONSUMER", f"receive {s.reply_topic}")}
        return spans if expected <= names and any(x.service == CONSUMER and _is_db(x) for x in spans) else None

    spans = eventually(whole_trace, what=f"every span of trace {trace_id}")
    by_name = {(x.service, x.name): x for x in spans if not _is_db(x)}
    server = by_name[API, "POST /assessments/refresh-assessments"]
    api_send = by_name[API, f"send {s.request_topic}"]
    process = by_name[CONSUMER, f"process {s.request_topic}"]
    reply_send = by_name[CONSUMER, f"send {s.reply_topic}"]
    events_send = by_name[CONSUMER, f"send {s.refresh_events_topic}"]
    receive = by_name[API, f"receive {s.reply_topic}"]

    assert server.parent_id == "" and server.attributes["http.route"] == "/assessments/refresh-assessments"
    assert api_send.parent_id == server.span_id and receive.parent_id == server.span_id
    assert process.parent_id == api_send.span_id and (trace_id, api_send.span_id) in process.links
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.destination.name"] == s.request_topic
    assert process.attributes["messaging.consumer.group.name"] == s.consumer_group
    assert process.attributes["messaging.message.conversation_id"] == request_id
    assert api_send.attributes["messaging.destination.name"] == s.request_topic
    assert api_send.attributes["messaging.kafka.offset"] == process.attributes["messaging.kafka.offset"]
    db = [x for x in spans if x.service == CONSUMER and _is_db(x)]
    assert any(x.parent_id == process.span_id for x in db), "the refresh's statements are the handling's children"
    assert reply_send.parent_id == process.span_id and events_send.parent_id == process.span_id
    assert (trace_id, reply_send.span_id) in receive.links, "the reply wait links to the span that sent the reply"
    assert not any(x.error for x in spans)

    # What is on Kafka carries the trace: the reply, and the refresh event.
    replies = [r for r in read_topic(s.kafka_bootstrap_servers, s.reply_topic, at_least=1)
               if r.headers.get("correlation_id") == request_id]
    assert [carried(r) for r in replies] == [(trace_id, reply_send.span_id)]
    events = [r for r in read_topic(s.kafka_bootstrap_servers, s.refresh_events_topic, at_least=1)
              if json.loads(r.value or b"{}")["trigger"].get("request_id") == request_id]
    assert len(events) == 1 and carried(events[0]) == (trace_id, events_send.span_id)

    # And the consumer's log line of the handling names the trace and span.
    lines = [json.loads(line) for line in (log_dir / "consumer.log").read_text().splitlines() if line.startswith("{")]
    handled = [x for x in lines if x.get("correlation_id") == request_id and x["message"].startswith("refresh request handled")]
    assert [(x.get("trace_id"), x.get("span_id")) for x in handled] == [(trace_id, process.span_id)]


def test_a_callers_traceparent_is_continued(service: ServiceProcess, service_settings: Settings, engine: Engine,
                                             receiver: OtlpReceiver) -> None:
    load(engine, standard_world())
    traceparent, trace_id, caller_span = new_traceparent()
    response = httpx.post(f"{service.url}/assessments/refresh-assessments", json={"assessment_ids": [12]},
                          headers={**KEY, "traceparent": traceparent}, timeout=30)
    assert response.status_code == 200, response.text

    def server_and_consumer() -> tuple[Span, Span] | None:
        spans = receiver.trace(trace_id)
        server = [x for x in spans if x.kind == "SERVER"]
        process = [x for x in spans if x.service == CONSUMER and x.kind == "CONSUMER"]
        return (server[0], process[0]) if server and process else None

    server, process = eventually(server_and_consumer, what=f"the API's and the consumer's spans in trace {trace_id}")
    assert server.parent_id == caller_span and server.service == API
    assert process.attributes["messaging.message.conversation_id"] == response.headers["x-request-id"]


def test_one_trace_covers_a_deletion_fan_out_from_the_banks_traceparent(
    service: ServiceProcess, service_settings: Settings, engine: Engine, receiver: OtlpReceiver
) -> None:
    s = service_settings
    load(engine, standard_world())
    traceparent, trace_id, bank_span = new_traceparent()
    # 104 is used by Globex's 21 and 103 by Acme's 11: two deletions, one traced by the bank, one not.
    traced, untraced = deleted_event(104), deleted_event(103)
    produce(s.kafka_bootstrap_servers, s.question_events_topic, traced.to_json(), b"104",
            headers=[("traceparent", traceparent.encode())])
    produce(s.kafka_bootstrap_servers, s.question_events_topic, untraced.to_json(), b"103")

    def handled(key: str) -> Span | None:
        found = receiver.find({"messaging.kafka.message.key": key, "messaging.destination.name": s.question_events_topic},
                              service=CONSUMER, kind="CONSUMER")
        return found[0] if found else None

    process = eventually(lambda: handled("104"), what="the consumer's span of the traced deletion")
    assert process.trace_id == trace_id and process.parent_id == bank_span and (trace_id, bank_span) in process.links
    spans = eventually(lambda: (x := receiver.trace(trace_id)) and any(y.kind == "PRODUCER" for y in x) and x,
                       what="the refresh events' send span")
    assert any(_is_db(x) and x.parent_id == process.span_id for x in spans)
    events_send = one([x for x in spans if x.name == f"send {s.refresh_events_topic}"], "events send span")
    assert events_send.parent_id == process.span_id

    fresh = eventually(lambda: handled("103"), what="the consumer's span of the untraced deletion")
    assert fresh.parent_id == "" and fresh.links == () and fresh.trace_id != trace_id, "a trace of its own"

    events = {json.loads(r.value or b"{}")["trigger"].get("event_id"): r
              for r in read_topic(s.kafka_bootstrap_servers, s.refresh_events_topic, at_least=2)}
    assert carried(events[traced.event_id]) == (trace_id, events_send.span_id)
    assert carried(events[untraced.event_id])[0] == fresh.trace_id


def _is_db(span: Span) -> bool:
    return span.kind == "CLIENT" and (span.attributes.get("db.system") == "postgresql"
                                      or span.attributes.get("db.system.name") == "postgresql")
