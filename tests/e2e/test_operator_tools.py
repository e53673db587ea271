"""The operator's tools against the real broker: `assessment-refresh dlq`
(what a dead-letter topic holds, without moving any group) and
`assessment-refresh kafka-tool` (Kafka's own command-line tools from the
local Kafka's jars)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from assessment_refresh.apache_kafka import missing_tools
from shared.dlq import dlq_headers, dlq_topic
from shared.settings import Settings
from tests.conftest import unique_settings

pytestmark = pytest.mark.e2e

HOUR_MS = 3600 * 1000


@pytest.fixture
def settings(database_url: str, bootstrap_servers: str) -> Settings:
    return unique_settings(database_url, bootstrap_servers)


def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assessment_refresh.cli", *args],
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=timeout)


def dead_letter_topic(settings: Settings) -> str:
    """question.events.dlq of this test, with three dead letters: two that
    cannot be decoded (an hour ago, and now), one that kept failing (now)."""
    topic = dlq_topic(settings.question_events_topic)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(15)
    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": False})
    letters: list[tuple[int, int, str, str, int]] = [  # partition, timestamp, error type, message, attempts
        (0, now - HOUR_MS, "MessageError", "MessageError: event_id must be a string", 1),
        (0, now, "OperationalError", "OperationalError: the database said no", 3),
        (1, now, "MessageError", "MessageError: not JSON", 1),
    ]
    for offset, (partition, stamp, error_type, reason, attempts) in enumerate(letters):
        headers = dlq_headers([("content-type", b"application/json")], topic=settings.question_events_topic,
                              partition=str(partition), offset=str(10 + offset), error_type=error_type,
                              reason=reason, attempts=attempts)
        producer.produce(topic, b"{}", b"150", partition=partition, timestamp=stamp, headers=headers)
    assert producer.flush(15) == 0
    return topic


def listed(settings: Settings, *args: str) -> dict[str, Any]:
    result = cli(settings, "dlq", "--json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_dlq_lists_records_with_their_origin_and_error_and_counts_them(settings: Settings) -> None:
    topic = dead_letter_topic(settings)
    document = listed(settings, "--topic", topic)
    assert document["topic"] == topic and document["count"] == 3
    assert document["by_error"] == {"MessageError": 2, "OperationalError": 1}
    first = document["records"][0]
    assert (first["partition"], first["offset"], first["key"]) == (0, 0, "150")
    assert (first["original_topic"], first["original_partition"], first["original_offset"]) == \
        (settings.question_events_topic, 0, 10)
    assert (first["error_type"], first["attempts"]) == ("MessageError", 1)
    assert first["error_message"] == "MessageError: event_id must be a string"
    assert [(r["partition"], r["offset"], r["attempts"]) for r in document["records"]] == [(0, 0, 1), (0, 1, 3), (1, 0, 1)]
    # The source topic's name finds its DLQ; the text form ends with the counts.
    text = cli(settings, "dlq", "--topic", settings.question_events_topic)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("[0] @0 ") and f"from {settings.question_events_topic} [0] @10, attempts 1: " \
        "MessageError: event_id must be a string" in lines[0], lines[0]
    assert lines[3:] == [f"3 dead letters in {topic}", "     2  MessageError", "     1  OperationalError"]


def test_dlq_filters_by_offset_and_time(settings: Settings) -> None:
    topic = dead_letter_topic(settings)
    by_offset = listed(settings, "--topic", topic, "--from-offset", "0:1")
    assert [(r["partition"], r["offset"]) for r in by_offset["records"]] == [(0, 1)]
    half_an_hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1800))
    recent = listed(settings, "--topic", topic, "--from-time", half_an_hour_ago)
    assert [(r["partition"], r["offset"]) for r in recent["records"]] == [(0, 1), (1, 0)]
    older = listed(settings, "--topic", topic, "--to-time", half_an_hour_ago)
    assert [(r["partition"], r["offset"]) for r in older["records"]] == [(0, 0)]
    assert older["by_error"] == {"MessageError": 1}


def test_dlq_never_commits_a_group_offset(settings: Settings) -> None:
    """Looking twice shows the same records, and the broker knows no group of
    the reader's: nothing was committed anywhere."""
    topic = dead_letter_topic(settings)
    assert listed(settings, "--topic", topic)["count"] == 3
    assert listed(settings, "--topic", topic)["count"] == 3
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    groups = admin.list_consumer_groups().result(15)
    ours = [g.group_id for g in groups.valid if g.group_id.startswith(settings.consumer_group)]
    assert ours == [], ours


def test_dlq_of_a_missing_topic_says_so(settings: Settings) -> None:
    result = cli(settings, "dlq", "--topic", "no-such-topic-here")
    assert result.returncode != 0
    assert "no-such-topic-here.dlq does not exist" in result.stdout + result.stderr


@pytest.mark.skipif(bool(missing_tools()), reason=f"Kafka's tools need {', '.join(missing_tools())}")
def test_kafka_tool_runs_kafkas_own_clis_against_the_broker(settings: Settings) -> None:
    topic = dead_letter_topic(settings)
    topics = cli(settings, "kafka-tool", "kafka-topics", "--list")
    assert topics.returncode == 0, topics.stderr
    assert topic in topics.stdout.splitlines()
    # The console consumer shows a dead letter's headers, as an operator reads them.
    consumed = cli(settings, "kafka-tool", "kafka-console-consumer", "--topic", topic, "--partition", "1",
                   "--offset", "earliest", "--max-messages", "1", "--property", "print.headers=true")
    assert consumed.returncode == 0, consumed.stderr
    assert f"dlq.original.topic:{settings.question_events_topic}" in consumed.stdout
    assert "dlq.error.message:MessageError: not JSON" in consumed.stdout
    # kafka-consumer-groups answers, with the bootstrap server given explicitly.
    groups = cli(settings, "kafka-tool", "kafka-consumer-groups", "--bootstrap-server",
                 settings.kafka_bootstrap_servers, "--list")
    assert groups.returncode == 0, groups.stderr
    # An unknown tool is refused by the command line, naming the choices.
    unknown = cli(settings, "kafka-tool", "kafka-reassign-partitions")
    assert unknown.returncode == 2 and "kafka-consumer-groups" in unknown.stderr
