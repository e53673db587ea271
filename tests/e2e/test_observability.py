"""Metrics, health and structured logs of the real processes, after real traffic:
what an operator scrapes and greps."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from assessment_refresh.local_servers import free_port
from consumer.dead_letters import dlq_topic
from shared.settings import Settings
from shared.version import __version__
from tests.conftest import unique_settings
from tests.kafka_tools import deleted_event, produce, publish_event, read_topic, upserted_event
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.waiting import eventually
from tests.worlds import load, question, standard_changes, standard_world

pytestmark = pytest.mark.e2e

ACME_KEY = "acme-key-0123456789"  # standard_world: company 7
PATH = "/assessments/refresh-assessments"


class Running:
    def __init__(self, settings: Settings, api: ServiceProcess, consumer: ServiceProcess) -> None:
        self.settings, self.api, self.consumer = settings, api, consumer
        self.consumer_url = f"http://127.0.0.1:{settings.consumer_metrics_port}"


@pytest.fixture
def running(database_url: str, bootstrap_servers: str, tmp_path: Path) -> Iterator[Running]:
    settings = unique_settings(database_url, bootstrap_servers, consumer_metrics_port=free_port(), log_format="json")
    consumer = start_consumer(settings, tmp_path)
    api = start_api(settings, tmp_path)
    try:
        yield Running(settings, api, consumer)
    finally:
        api.stop()
        consumer.stop()


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (no comments)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sample of ``name`` whose labels include ``labels`` (0 when absent)."""
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if base == name and all(found.get(k) == v for k, v in labels.items()):
            return value
    return 0.0


def test_metrics_count_what_happened(running: Running, engine: Engine) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    settings, api = running.settings, running.api
    eventually(lambda: httpx.get(running.consumer_url + "/readyz", timeout=2).status_code == 200,
               what="the consumer's /readyz")
    api_before, consumer_before = scrape(api.url), scrape(running.consumer_url)

    # One refresh that replaces a question and refreshes another (standard_changes: in 11,
    # 101 is stale, 102 deleted with alternatives, 150 deleted with none).
    reply = httpx.post(api.url + PATH, json={"assessment_ids": [11]}, headers={"apiKey": ACME_KEY}, timeout=30)
    assert reply.status_code == 200, reply.text
    detail = reply.json()["details"][0]
    # One poison record (dead-lettered at once); one upsert of a question of an
    # unknown company (fails for good: 3 attempts, 2 retries, then the DLQ); and
    # the deletion event of 150, which refreshes 11 again (150 still has no alternative).
    produce(settings.kafka_bootstrap_servers, settings.question_events_topic, b"not json", b"1")
    publish_event(settings.kafka_bootstrap_servers, settings.question_events_topic,
                  upserted_event(question(700, company_id=99)))
    read_topic(settings.kafka_bootstrap_servers, dlq_topic(settings.question_events_topic), at_least=2)
    publish_event(settings.kafka_bootstrap_servers, settings.question_events_topic, deleted_event(150))
    # And a caller without a key.
    assert httpx.post(api.url + PATH, json={}, timeout=10).status_code == 401

    def consumer_moved() -> dict[str, float]:
        now = scrape(running.consumer_url)
        assert metric(now, "assessment_refresh_consumer_messages_total", topic=settings.question_events_topic,
                      outcome="ok") - metric(consumer_before, "assessment_refresh_consumer_messages_total",
                                             topic=settings.question_events_topic, outcome="ok") >= 1
        return now

    consumer_after = eventually(consumer_moved, what="the deletion event counted")
    api_after = scrape(api.url)

    def delta(after: dict[str, float], before: dict[str, float], name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    requests_topic, events_topic = settings.request_topic, settings.question_events_topic
    assert delta(consumer_after, consumer_before, "assessment_refresh_consumer_messages_total",
                 topic=requests_topic, outcome="ok") == 1
    assert delta(consumer_after, consumer_before, "assessment_refresh_consumer_messages_total",
                 topic=events_topic, outcome="ok") == 1
    assert delta(consumer_after, consumer_before, "assessment_refresh_consumer_messages_total",
                 topic=events_topic, outcome="dead_lettered") == 2
    assert delta(consumer_after, consumer_before, "assessment_refresh_consumer_dlq_total", topic=events_topic) == 2
    assert delta(consumer_after, consumer_before, "assessment_refresh_consumer_retries_total",
                 topic=events_topic, reason="error") == 2
    assert delta(consumer_after, consumer_before, "assessment_refresh_assessments_refreshed_total",
                 trigger="request") == 1
    assert delta(consumer_after, consumer_before, "assessment_refresh_assessments_refreshed_total",
                 trigger="question.deleted") == 1
    # The request's report, plus the deletion's refresh of 11 (nothing to do but
    # report 150 again as a failure).
    assert (detail["questions_refreshed"], detail["deleted_questions_replaced"]) == (1, 1)
    assert delta(consumer_after, consumer_before, "assessment_refresh_questions_refreshed_total") == 1
    assert delta(consumer_after, consumer_before, "assessment_refresh_questions_replaced_total") == 1
    assert delta(consumer_after, consumer_before, "assessment_refresh_replacement_failures_total") == \
        detail["deleted_questions_not_replaced"] + 1 == 2
    assert delta(consumer_after, consumer_before, "assessment_refresh_consumer_processing_seconds_count",
                 topic=requests_topic) == 1

    assert delta(api_after, api_before, "assessment_refresh_http_request_duration_seconds_count",
                 route=PATH, method="POST", status="200") == 1
    assert delta(api_after, api_before, "assessment_refresh_http_request_duration_seconds_count",
                 route=PATH, method="POST", status="401") == 1
    assert delta(api_after, api_before, "assessment_refresh_requests_published_total", mode="sync") == 1
    assert metric(api_after, "assessment_refresh_replies_awaited") == 0
    assert "assessment_refresh_reply_timeouts_total" in api_after
    assert "assessment_refresh_broker_unavailable_total" in api_after


def test_health_endpoints_of_both_processes(running: Running) -> None:
    # Both name the version they run (pyproject.toml's), so a rollout can be checked process by process.
    assert httpx.get(running.api.url + "/healthz", timeout=5).json() == {"status": "ok", "version": __version__}
    api_ready = httpx.get(running.api.url + "/readyz", timeout=5)
    assert (api_ready.status_code, api_ready.json()) == (
        200, {"ready": True, "reply_consumer_assigned": True, "reply_topic": True, "broker": True, "database": True})
    assert httpx.get(running.consumer_url + "/healthz", timeout=5).json() == {"status": "ok", "version": __version__}
    def readiness() -> dict[str, bool] | None:
        body = httpx.get(running.consumer_url + "/readyz", timeout=5).json()
        return body if body["ready"] else None

    ready = eventually(readiness, what="consumer readiness")
    assert ready == {"ready": True, "group_joined": True, "database": True, "broker": True, "topics": True}
    assert httpx.get(running.consumer_url + "/nope", timeout=5).status_code == 404


def test_one_grep_follows_a_request_through_both_logs(running: Running, engine: Engine) -> None:
    load(engine, standard_world())
    reply = httpx.post(running.api.url + PATH, json={"assessment_ids": [11]}, headers={"apiKey": ACME_KEY},
                       timeout=30)
    assert reply.status_code == 200
    request_id = reply.headers["X-Request-Id"]

    def lines(process: ServiceProcess) -> list[dict[str, object]]:
        # Every line is one JSON object, librdkafka's included (shared.kafka
        # hands them to logging rather than to raw stderr).
        return [json.loads(raw) for raw in process.log().splitlines()]

    api_lines = eventually(lambda: [x for x in lines(running.api) if request_id in json.dumps(x)] or None)
    consumer_lines = eventually(lambda: [x for x in lines(running.consumer) if request_id in json.dumps(x)] or None)
    assert all(x.get("request_id") == request_id for x in api_lines), api_lines
    assert all(x.get("correlation_id") == request_id for x in consumer_lines), consumer_lines
    assert any("answered 200" in str(x["message"]) for x in api_lines), api_lines
    assert any("handled: 200" in str(x["message"]) for x in consumer_lines), consumer_lines
    # uvicorn's access line for the POST carries the id too (producer_api.access_log).
    assert any(x["logger"] == "uvicorn.access" and "POST" in str(x["message"]) for x in api_lines), api_lines

    # A question event: its consumer lines carry its event_id.
    event = deleted_event(150)
    publish_event(running.settings.kafka_bootstrap_servers, running.settings.question_events_topic, event)
    event_lines = eventually(lambda: [x for x in lines(running.consumer) if event.event_id in json.dumps(x)] or None)
    assert all(x.get("event_id") == event.event_id for x in event_lines), event_lines
    assert any("question.deleted 150: 200" in str(x["message"]) for x in event_lines), event_lines

    for line in lines(running.api) + lines(running.consumer):
        assert {"ts", "level", "logger", "message"} <= set(line)
        assert ACME_KEY not in json.dumps(line)
