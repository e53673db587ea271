"""Every metric and label the Grafana dashboard queries exists in the live services' /metrics.

The API (with /metrics on its own port, as docker-compose.yml runs it) and a
consumer run as in production; one refresh, one async request, a poison
record and an event that fails for good make every series the dashboard
reads appear. A renamed metric, a typo in a query, or a label the code does
not set fails here instead of showing an empty panel.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from assessment_refresh.local_servers import free_port
from consumer.dead_letters import dlq_topic
from shared.settings import Settings
from tests.conftest import unique_settings
from tests.dashboard import TARGET_LABELS, legend_labels, queries, references
from tests.kafka_tools import produce, publish_event, read_topic, upserted_event
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.waiting import eventually
from tests.worlds import load, question, standard_changes, standard_world

pytestmark = pytest.mark.e2e

ACME_KEY = "acme-key-0123456789"  # standard_world: company 7
PATH = "/assessments/refresh-assessments"

# What a family of each type exposes as samples (prometheus_client's names).
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
                   "summary": ("_count", "_sum", "")}


def exposed(url: str) -> dict[str, set[str]]:
    """Sample name -> the label names its samples carry, from a /metrics page."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
            found.setdefault(family.name + suffix, set())
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


@pytest.fixture
def services(database_url: str, bootstrap_servers: str, tmp_path: Path) -> Iterator[tuple[Settings, str, str, str]]:
    settings = unique_settings(database_url, bootstrap_servers, consumer_metrics_port=free_port(),
                               api_metrics_port=free_port())
    consumer: ServiceProcess = start_consumer(settings, tmp_path)
    api = start_api(settings, tmp_path)
    try:
        yield (settings, api.url, f"http://127.0.0.1:{settings.api_metrics_port}/metrics",
               f"http://127.0.0.1:{settings.consumer_metrics_port}/metrics")
    finally:
        api.stop()
        consumer.stop()


def test_every_metric_the_dashboard_queries_is_exposed(services: tuple[Settings, str, str, str], engine: Engine) -> None:
    settings, api_url, api_metrics, consumer_metrics = services
    load(engine, standard_world())
    load(engine, standard_changes())
    eventually(lambda: httpx.get(consumer_metrics.replace("/metrics", "/readyz"), timeout=2).status_code == 200,
               what="the consumer's /readyz")
    headers = {"apiKey": ACME_KEY}
    assert httpx.post(api_url + PATH, json={"assessment_ids": [11]}, headers=headers, timeout=30).status_code == 200
    accepted = httpx.post(api_url + PATH, json={"assessment_ids": [12]},
                          headers={**headers, "Prefer": "respond-async"}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    # A record that does not decode (the DLQ at once) and an upsert that fails for good (retries, then the DLQ).
    produce(settings.kafka_bootstrap_servers, settings.question_events_topic, b"not json", b"1")
    publish_event(settings.kafka_bootstrap_servers, settings.question_events_topic,
                  upserted_event(question(700, company_id=99)))
    read_topic(settings.kafka_bootstrap_servers, dlq_topic(settings.question_events_topic), at_least=2)
    # Lag comes from librdkafka statistics, every 5 s.
    eventually(lambda: exposed(consumer_metrics).get("assessment_refresh_consumer_lag"), timeout=30,
               what="consumer lag samples")

    available = {**exposed(api_metrics), **exposed(consumer_metrics)}
    problems = []
    used = set()
    for title, expr, legend in queries():
        metrics, labels = references(expr)
        assert metrics, f"{title}: no metric found in {expr!r}"
        used |= metrics
        missing = sorted(metrics - set(available))
        if missing:
            problems.append(f"{title}: {missing} not in /metrics")
            continue
        carried = set().union(*(available[m] for m in metrics)) | TARGET_LABELS
        unknown = sorted((labels | legend_labels(legend)) - carried)
        if unknown:
            problems.append(f"{title}: labels {unknown} not on {sorted(metrics)} (they carry {sorted(carried)})")
    assert not problems, "\n".join(problems)
    # The panels the issue asks for are there.
    for name in ("assessment_refresh_http_request_duration_seconds_bucket", "assessment_refresh_replies_awaited",
                 "assessment_refresh_reply_timeouts_total", "assessment_refresh_broker_unavailable_total",
                 "assessment_refresh_consumer_lag", "assessment_refresh_consumer_dlq_total",
                 "assessment_refresh_assessments_refreshed_total"):
        assert name in used, name
