"""Broker profiles: Apache Kafka's defaults in the code, Tansu's quirks only behind BROKER_PROFILE=tansu."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.broker_profile import APACHE_KAFKA, profile_named
from shared.kafka import consumer_config, producer_config
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_code_defaults_are_apache_kafkas() -> None:
    settings = Settings()
    assert settings.broker_profile == "kafka"
    assert producer_config(settings)["enable.idempotence"] is True
    consumer = consumer_config(settings, "g")
    assert consumer["group.protocol"] == "consumer"
    assert consumer["group.remote.assignor"] == "range"  # each topic spread over the members
    # KIP-848: the broker owns these; librdkafka refuses them from the client.
    assert "session.timeout.ms" not in consumer and "heartbeat.interval.ms" not in consumer
    assert consumer["fetch.wait.max.ms"] == 500


def test_classic_protocol_for_older_brokers_takes_the_client_timeouts() -> None:
    settings = Settings(kafka_group_protocol="classic", kafka_session_timeout_ms=30000)
    consumer = consumer_config(settings, "g")
    assert consumer["group.protocol"] == "classic"
    assert consumer["session.timeout.ms"] == 30000
    assert consumer["heartbeat.interval.ms"] == 7500


def test_an_unknown_group_protocol_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="KAFKA_GROUP_PROTOCOL"):
        consumer_config(Settings(kafka_group_protocol="eager"), "g")


def test_the_tansu_profile_sets_its_defaults_and_env_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_PROFILE", "tansu")
    monkeypatch.setenv("KAFKA_FETCH_WAIT_MAX_MS", "100")
    settings = Settings.from_env()
    assert settings.kafka_group_protocol == "classic"
    assert settings.kafka_session_timeout_ms == 6000
    assert settings.kafka_fetch_wait_max_ms == 100  # the environment wins over the profile
    assert producer_config(settings)["enable.idempotence"] is False
    assert consumer_config(settings, "g")["session.timeout.ms"] == 6000


def test_an_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="BROKER_PROFILE"):
        Settings.for_broker(broker_profile="redpanda")


def test_apache_kafka_needs_no_workaround() -> None:
    kafka = profile_named("kafka")
    assert kafka is APACHE_KAFKA
    assert not (kafka.recreates_lost_topics or kafka.follows_recreated_reply_topic or kafka.replay_reads_to_partition_eof)
    assert not kafka.producer_overrides and not kafka.setting_defaults


def test_only_the_profile_registry_imports_the_tansu_module_eagerly() -> None:
    """Tansu support is deletable in one go: no module imports shared.tansu at
    its top; the two that need it import it when the profile is on."""
    importers = []
    for path in [*ROOT.glob("shared/*.py"), *ROOT.glob("consumer/*.py"), *ROOT.glob("producer_api/*.py")]:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # top-level statements only
            if isinstance(node, ast.ImportFrom) and node.module == "shared.tansu":
                importers.append(path.name)
    assert importers == []
