"""Kafka client factories: one place for the librdkafka settings and why they are set."""

from __future__ import annotations

import logging
import re
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from shared.settings import Settings

log = logging.getLogger(__name__)


# librdkafka's own log lines go through Python logging (not raw stderr).
KAFKA_LOG = logging.getLogger("librdkafka")


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "logger": KAFKA_LOG,
        # Request/reply is latency-bound: send at once, no Nagle delay.
        "linger.ms": 1,
        "socket.nagle.disable": True,
        "acks": "all",
        # No idempotent producer: it goes fatal for good when a broker forgets
        # its producer id (measured here with a restarted Tansu), and
        # confluent-kafka then raises from inside delivery dispatch. A retried
        # send written twice is harmless: every reader of our topics dedups by
        # id (the inbox by request/event id, the reply waiter by correlation id,
        # downstream by the refresh event's event_id).
        "enable.idempotence": False,
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group_id,
        "logger": KAFKA_LOG,
        "socket.nagle.disable": True,
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 4),
        # Notice partitions added to (or topics recreated under) a subscription
        # within seconds, not the default 5 minutes.
        "topic.metadata.refresh.interval.ms": 10000,
        **overrides,
    }


# Kafka's own rule (kafka.common.internals.Topic): at most 249 of these characters.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def is_topic_name(name: str) -> bool:
    return bool(_TOPIC_NAME.fullmatch(name)) and name not in {".", ".."}


def ensure_topics(settings: Settings, topics: list[str], partitions: int | None = None) -> None:
    """Create the topics that are missing; existing ones are left alone."""
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap_servers, "logger": KAFKA_LOG}
    admin = AdminClient(config)
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    count = partitions or settings.topic_partitions
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=count, replication_factor=-1) for t in missing],
        operation_timeout=10,
    )
    for topic, future in futures.items():
        try:
            future.result()
            log.info("created topic %s with %d partitions", topic, count)
        except KafkaException as exc:
            # Another process created it between our list and create: fine.
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
