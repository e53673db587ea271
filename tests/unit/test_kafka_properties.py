"""Any librdkafka property from the environment (KAFKA_*), secrets from files, never shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.kafka import admin_config, consumer_config, producer_config
from shared.kafka_properties import ConfigurationError, masked, property_name
from shared.settings import Settings


@pytest.mark.parametrize(("variable", "name"), [
    ("KAFKA_SECURITY_PROTOCOL", "security.protocol"),
    ("KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
    ("KAFKA_SASL_MECHANISMS", "sasl.mechanisms"),
    ("KAFKA_SASL_OAUTHBEARER_CLIENT__ID", "sasl.oauthbearer.client_id"),
    ("KAFKA_CLIENT___RACK", "client-rack"),
])
def test_variable_names_follow_the_container_image_convention(variable: str, name: str) -> None:
    assert property_name(variable) == name


def test_every_client_gets_the_properties_of_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-from-a-file\n")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "api")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("KAFKA_BROKER", "apache")  # the test suite's variable, not a property
    monkeypatch.setenv("KAFKA_HEAP_OPTS", "-Xmx1G")  # Kafka's launcher's, not a property
    settings = Settings.from_env()
    expected = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                "sasl.username": "api", "sasl.password": "s3cret-from-a-file"}
    assert dict(settings.kafka_properties) == expected
    for config in (producer_config(settings), consumer_config(settings, "g"), admin_config(settings)):
        assert {k: config[k] for k in expected} == expected
        assert "broker" not in config and "heap.opts" not in config


def test_the_service_settings_named_kafka_stay_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    monkeypatch.setenv("KAFKA_FETCH_WAIT_MAX_MS", "250")
    settings = Settings.from_env()
    assert settings.kafka_properties == {}
    assert producer_config(settings)["bootstrap.servers"] == "b1:9092,b2:9092"
    assert consumer_config(settings, "g")["fetch.wait.max.ms"] == 250


def test_any_setting_may_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = tmp_path / "database_url"
    url.write_text("postgresql://svc:pw@db:5432/assessments\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(url))
    assert Settings.from_env().database_url == "postgresql+psycopg2://svc:pw@db:5432/assessments"


def test_an_unreadable_secret_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="KAFKA_SASL_PASSWORD_FILE: cannot read"):
        Settings.from_env()


def test_child_processes_get_the_same_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(kafka_properties={"sasl.oauthbearer.client_id": "x", "client-rack": "r1", "ssl.ca.location": "/ca"})
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().kafka_properties == settings.kafka_properties


def test_what_may_be_logged_masks_every_secret() -> None:
    settings = Settings(database_url="postgresql+psycopg2://svc:db-secret@db/x",
                        kafka_properties={"sasl.password": "kafka-secret", "ssl.key.password": "k2",
                                          "sasl.oauthbearer.client.secret": "k3", "sasl.username": "api"})
    shown = json.dumps(settings.public(), default=str)
    for secret in ("db-secret", "kafka-secret", "k2", "k3"):
        assert secret not in shown
    assert "api" in shown and "***" in shown
    assert masked({"security.protocol": "SSL"}) == {"security.protocol": "SSL"}


def test_a_malformed_setting_is_one_clear_line_not_a_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "assessment_refresh.cli", "migrate"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "API_PORT": "eighty"})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: API_PORT must be a whole number, not 'eighty'"
