"""Fixtures: a real PostgreSQL and a real Kafka-protocol broker (see tests/infra.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from shared.db import make_engine, migrate
from shared.settings import Settings
from tests.infra import chosen_broker, describe_broker, fresh_database, kafka_bootstrap_servers, postgres_server_url

TABLES = "assessment_history, refresh_job_chunks, refresh_jobs, processed_messages, assessment_slots, assessment_sections, assessments, api_keys, questions, companies"


def pytest_report_header() -> str:
    return f"kafka broker: {describe_broker(chosen_broker())}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with postgres_server_url() as server, fresh_database(server) as url:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def session_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(session_engine: Engine) -> Engine:
    """The test database, emptied before the test."""
    with session_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    return session_engine


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    with kafka_bootstrap_servers() as servers:
        yield servers


def unique_settings(database_url: str, bootstrap_servers: str, **overrides: object) -> Settings:
    """Settings with topic names and a group id no other test uses (so tests
    never read each other's records; Tansu cannot delete topics, and fresh
    topics keep its fetches fast), for the session's broker profile (or the
    ``broker_profile`` override of a test that starts a broker of its own)."""
    tag = uuid.uuid4().hex[:8]
    fields: dict[str, object] = dict(
        broker_profile=os.environ.get("BROKER_PROFILE", "kafka"),
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap_servers,
        request_topic=f"t{tag}.assessment.refresh.requests",
        reply_topic=f"t{tag}.assessment.refresh.replies",
        question_events_topic=f"t{tag}.question.events",
        refresh_events_topic=f"t{tag}.assessment.refresh.events",
        work_topic=f"t{tag}.assessment.refresh.work",
        consumer_group=f"t{tag}-assessment-refresh",
        topic_partitions=3,
        reply_timeout_s=20.0,
        kafka_session_timeout_ms=3000,
        consumer_metrics_port=0,  # several consumers per test; test_observability picks free ports
        rate_limit_per_s=0.0,  # tests that load the API hard would trip it; test_rate_limit turns it on
        # Every test client is 127.0.0.1, and the bad-input suites send hundreds
        # of wrong keys; tests/security/test_probe_edges.py turns it on.
        auth_failure_rate_per_s=0.0,
    )
    return Settings.for_broker(**{**fields, **overrides}).with_driver()
