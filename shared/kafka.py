"""Kafka client factories: one place for the librdkafka settings and why they are set."""

from __future__ import annotations

import logging
import re
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from shared.broker_profile import profile_named
from shared.settings import Settings

log = logging.getLogger(__name__)


# librdkafka's own log lines go through Python logging (not raw stderr).
KAFKA_LOG = logging.getLogger("librdkafka")


class _ListenerMismatchHint(logging.Filter):
    """A PLAINTEXT client at a TLS or SASL listener is dropped by the broker
    before its first request is answered; librdkafka says only "connection
    closed by peer ... in state APIVERSION_QUERY", at INFO. That line is raised
    to WARNING and names the likely cause (the other misconfigurations, a wrong
    password or an untrusted certificate, librdkafka already names at ERROR)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "connection closed by peer" in message and "APIVERSION_QUERY" in message:
            record.msg = ("%s: the broker closed the connection before answering the first request; "
                          "is security.protocol (KAFKA_SECURITY_PROTOCOL) what its listener expects, e.g. SASL_SSL?")
            record.args = (message,)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


KAFKA_LOG.addFilter(_ListenerMismatchHint())


def client_config(settings: Settings) -> dict[str, Any]:
    """What every client of the service starts from: the bootstrap servers and
    every librdkafka property of the environment (security, TLS, SASL, ...)."""
    return {**settings.kafka_properties, "bootstrap.servers": settings.kafka_bootstrap_servers, "logger": KAFKA_LOG}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        **client_config(settings),
        # Request/reply is latency-bound: send at once, no Nagle delay.
        "linger.ms": 1,
        "socket.nagle.disable": True,
        "acks": "all",
        # With acks=all, retries and up to 5 requests in flight, only the
        # idempotent producer keeps a retried send from being written twice or
        # behind a later one: one company's requests, and one assessment's
        # events, stay in order within their partition.
        "enable.idempotence": True,
        # The Java client's partitioner (murmur2) unless the operator keeps
        # another: one company's requests, one question's events, stay on one
        # partition, in order, whichever client wrote them.
        "partitioner": settings.kafka_partitioner,
        **profile_named(settings.broker_profile).producer_overrides,
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        **client_config(settings),
        "group.id": group_id,
        "socket.nagle.disable": True,
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
        **group_protocol_config(settings),
        # Notice partitions added to a subscription within seconds, not the
        # default 5 minutes.
        "topic.metadata.refresh.interval.ms": 10000,
        **overrides,
    }


def group_protocol_config(settings: Settings) -> dict[str, Any]:
    """KIP-848's consumer protocol (the broker assigns, incrementally, and owns
    the session timeout and heartbeat interval: setting them on the client is
    an error there), or the classic protocol with the client's timeouts."""
    if settings.kafka_group_protocol == "consumer":
        return {
            "group.protocol": "consumer",
            # The broker's default, "uniform", balances the count of partitions
            # over all topics: with two members it gave one of them every
            # request partition and the other every question-event partition
            # (measured), so one member did all the REST work. "range" spreads
            # each topic's partitions over the members, as the classic
            # protocol's default did.
            "group.remote.assignor": "range",
        }
    if settings.kafka_group_protocol == "classic":
        return {
            "group.protocol": "classic",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 4),
        }
    raise ValueError(f"KAFKA_GROUP_PROTOCOL must be 'consumer' or 'classic', not {settings.kafka_group_protocol!r}")


# Kafka's own rule (kafka.common.internals.Topic): at most 249 of these characters.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def is_topic_name(name: str) -> bool:
    return bool(TOPIC_NAME.fullmatch(name)) and name not in {".", ".."}


def admin_config(settings: Settings) -> dict[str, Any]:
    return client_config(settings)


def missing_topics(settings: Settings, topics: list[str], timeout: float = 10) -> list[str]:
    """Which of ``topics`` the broker does not have (raises when it cannot be asked)."""
    admin = AdminClient(admin_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException:
        # librdkafka's own lines (why: authentication failed, certificate
        # verify failed, ...) wait in its queue until the client is polled.
        admin.poll(0)
        raise
    return [t for t in dict.fromkeys(topics) if t not in existing]


def ensure_topics(settings: Settings, topics: list[str], partitions: int | None = None) -> None:
    """Create the topics that are missing; existing ones are left alone."""
    admin = AdminClient(admin_config(settings))
    missing = missing_topics(settings, topics)
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
