"""Each setting is checked once, with a message naming its variable (shared/setting_checks.py)."""

from __future__ import annotations

import pytest

from shared.kafka_properties import ConfigurationError
from shared.setting_checks import check_settings
from shared.settings import Settings


@pytest.mark.parametrize(("name", "value", "message"), [
    ("api_port", 65536, "API_PORT must be a port number, 0 to 65535, not 65536"),
    ("api_metrics_port", -1, "API_METRICS_PORT must be a port number, 0 to 65535, not -1"),
    ("topic_partitions", 0, "TOPIC_PARTITIONS must be a number of at least 1, not 0"),
    ("reply_timeout_s", float("inf"), "REPLY_TIMEOUT_S must be a number above 0, not inf"),
    ("broker_timeout_s", 0.0, "BROKER_TIMEOUT_S must be a number above 0, not 0.0"),
    ("rate_limit_per_s", float("nan"), "RATE_LIMIT_PER_S must be a number of at least 0, not nan"),
    ("kafka_group_protocol", "eager", "KAFKA_GROUP_PROTOCOL must be one of consumer, classic, not 'eager'"),
    ("log_format", "xml", "LOG_FORMAT must be one of json, text, not 'xml'"),
    ("reply_topic", "..", "REPLY_TOPIC must be a Kafka topic name"),
    ("request_topic", "x" * 250, "REQUEST_TOPIC must be a Kafka topic name"),
    ("consumer_group", " ", "CONSUMER_GROUP must not be empty"),
    ("consumer_instance_id", "consumer 1", "CONSUMER_INSTANCE_ID must be empty or 1 to 249 letters"),
    ("kafka_partitioner", "crc32", "KAFKA_PARTITIONER must be one of murmur2_random, murmur2, consistent_random"),
    ("database_url", "mysql://root:secret@db/x", "DATABASE_URL must be a PostgreSQL URL (postgresql://...), not mysql://..."),
])
def test_an_unusable_value_is_named_with_what_it_must_be(name: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        check_settings({name: value})
    assert str(raised.value).startswith(message)
    assert "secret" not in str(raised.value)  # a URL's password is never repeated


@pytest.mark.parametrize(("name", "value"), [
    ("api_port", 0), ("consumer_metrics_port", 65535), ("rate_limit_per_s", 0.0), ("prune_interval_s", 0.0),
    ("log_level", "debug"), ("broker_profile", "tansu"), ("reply_topic", "t1a2.assessment.refresh-replies_x"),
    ("database_url", "postgres://u:p@db:5432/x"), ("database_url", "postgresql+psycopg2://u@/x?host=/tmp/s"),
    ("consumer_instance_id", ""), ("consumer_instance_id", "assessment-refresh-consumer-0"),
    ("kafka_partitioner", "consistent_random"),
])
def test_usable_values_pass(name: str, value: object) -> None:
    check_settings({name: value})


@pytest.mark.parametrize("value", ["", "*", "10.0.0.1", "10.0.0.0/8, 192.168.1.7", "::1,fd00::/8"])
def test_forwarded_allow_ips_takes_addresses_and_networks(value: str) -> None:
    check_settings({"forwarded_allow_ips": value})


@pytest.mark.parametrize("value", ["nginx", "10.0.0.1;10.0.0.2", "10.0.0.0/33", "*,10.0.0.1"])
def test_forwarded_allow_ips_refuses_what_is_not_an_address(value: str) -> None:
    with pytest.raises(ConfigurationError, match="^FORWARDED_ALLOW_IPS must be IP addresses"):
        check_settings({"forwarded_allow_ips": value})


def test_an_instance_id_needs_the_classic_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMER_INSTANCE_ID", "consumer-1")
    with pytest.raises(ConfigurationError, match="CONSUMER_INSTANCE_ID needs KAFKA_GROUP_PROTOCOL=classic"):
        Settings.from_env()
    monkeypatch.setenv("KAFKA_GROUP_PROTOCOL", "classic")
    settings = Settings.from_env()
    assert settings.instance_id(settings.consumer_group) == "consumer-1"
    assert settings.instance_id(settings.work_group) == "consumer-1.work", "each lane is a member of its own group"
    assert Settings().instance_id(Settings().consumer_group) is None, "dynamic membership by default"
