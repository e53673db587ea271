"""Configuration, read once from environment variables (see README, "Configuration")."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    request_topic: str = "assessment.refresh.requests"
    reply_topic: str = "assessment.refresh.replies"
    question_events_topic: str = "question.events"
    refresh_events_topic: str = "assessment.refresh.events"
    consumer_group: str = "assessment-refresh"
    topic_partitions: int = 6
    # How long the API waits for a reply before answering 504.
    reply_timeout_s: float = 30.0
    # How long the API lets the producer try to deliver a request before 503.
    broker_timeout_s: float = 2.5
    max_body_bytes: int = 64 * 1024
    max_assessment_ids: int = 1000
    # Per API key and API process; 0 turns rate limiting off.
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    # How long an API process trusts a valid key without asking the database
    # (a revoked key works that long on a replica that saw it); 0 = always ask.
    api_key_cache_s: float = 5.0
    # Which broker's quirks to live with: "kafka" (Apache Kafka, the reference)
    # or "tansu" (the dev broker; shared/tansu.py says what that switches on).
    broker_profile: str = "kafka"
    # "consumer": KIP-848 (Kafka 4.x), the broker assigns partitions
    # incrementally and owns the group timing; "classic" for older brokers.
    kafka_group_protocol: str = "consumer"
    # Classic protocol only (with "consumer" the broker's
    # group.consumer.session.timeout.ms applies): Kafka's default.
    kafka_session_timeout_ms: int = 45000
    # The longest a fetch waits for data when there is none; the broker answers
    # as soon as a record arrives, so this costs no latency (Kafka's default).
    kafka_fetch_wait_max_ms: int = 500
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    # json: one object per line with the request / correlation id; text: for humans.
    log_format: str = "json"
    # The consumer's /metrics, /healthz and /readyz; port 0 = not served.
    consumer_metrics_host: str = "127.0.0.1"
    consumer_metrics_port: int = 9400

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Each field ``foo_bar`` is read from ``FOO_BAR``; overrides win."""
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = os.environ.get(field.name.upper())
            if raw is not None:
                convert = {"int": int, "float": float}.get(str(field.type), str)
                values[field.name] = convert(raw)
        values.update(overrides)
        return cls.for_broker(**values).with_driver()

    @classmethod
    def for_broker(cls, **values: object) -> Settings:
        """Settings whose unset fields take the broker profile's defaults
        (``broker_profile`` among ``values``; Apache Kafka's when absent)."""
        from shared.broker_profile import profile_named

        profile = profile_named(str(values.get("broker_profile", cls.broker_profile)))
        return cls(**{**profile.setting_defaults, **values})

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` give these settings (for child processes)."""
        return {field.name.upper(): str(getattr(self, field.name)) for field in fields(self)}

    def with_driver(self) -> Settings:
        """Accept plain ``postgresql://`` URLs (libpq style) and use psycopg2."""
        url = self.database_url
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg2://" + url[len("postgresql://") :]
        return Settings(**{**self.__dict__, "database_url": url})
