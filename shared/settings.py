"""Configuration, read once from environment variables (see README, "Configuration")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from shared.kafka_properties import FILE_SUFFIX, ConfigurationError, client_properties, masked, read_secret_file
from shared.setting_checks import check_settings, check_together

# Fields that are not read from one variable of their own name.
_NOT_FROM_ONE_VARIABLE = {"kafka_properties"}


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    request_topic: str = "assessment.refresh.requests"
    reply_topic: str = "assessment.refresh.replies"
    question_events_topic: str = "question.events"
    refresh_events_topic: str = "assessment.refresh.events"
    # Internal: the chunks of large refreshes, read by each consumer's work
    # lane (group "<CONSUMER_GROUP>.work"), so they never queue ahead of requests.
    work_topic: str = "assessment.refresh.work"
    consumer_group: str = "assessment-refresh"
    topic_partitions: int = 6
    # How long the API waits for a reply before answering 504.
    reply_timeout_s: float = 30.0
    # How long the API lets the producer try to deliver a request before 503.
    broker_timeout_s: float = 2.5
    max_body_bytes: int = 64 * 1024
    max_assessment_ids: int = 1000
    # No transaction refreshes more assessments than this: larger refreshes
    # (a deletion's fan-out, a whole company) are split into chunks of this
    # size on the work topic (chosen by measurement, see README "Scaling").
    refresh_chunk_size: int = 500
    # A reply body larger than this (bytes of JSON) is not put on the reply
    # topic (Kafka's default message limit is 1 MB): the reply says where the
    # stored result is, and the API reads it from the database.
    reply_inline_max_bytes: int = 512 * 1024
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
    # Static group membership (group.instance.id), one per consumer process
    # (the work lane adds ".work"): a crashed process restarted under the same
    # id takes its partitions back at once instead of after the session
    # timeout. Empty: dynamic membership. Needs KAFKA_GROUP_PROTOCOL=classic
    # (with "consumer" the broker refuses the restarted member until the old
    # session expires: README "Operations").
    consumer_instance_id: str = ""
    # The longest a fetch waits for data when there is none; the broker answers
    # as soon as a record arrives, so this costs no latency (Kafka's default).
    kafka_fetch_wait_max_ms: int = 500
    # Which partition a keyed record goes to, for every producer of the service
    # (librdkafka's "partitioner"): murmur2_random is the Java client's rule, so
    # a key lands on one partition whoever writes it. consistent_random was the
    # default before (see the upgrade note in the README).
    kafka_partitioner: str = "murmur2_random"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Inbox and async-result rows older than this are pruned (7 days); keep it
    # above the topics' retention.ms so a redelivery or replay finds its row.
    retention_hours: float = 168.0
    # How often each consumer (inbox) and API process (async results) prunes,
    # in batches of this many rows, one short transaction each.
    prune_interval_s: float = 600.0
    prune_batch_size: int = 1000
    # The API's /metrics on a port of its own (off the public one); 0 = on API_PORT.
    api_metrics_host: str = "127.0.0.1"
    api_metrics_port: int = 0
    log_level: str = "INFO"
    # json: one object per line with the request / correlation id; text: for humans.
    log_format: str = "json"
    # The consumer's /metrics, /healthz and /readyz; port 0 = not served.
    consumer_metrics_host: str = "127.0.0.1"
    consumer_metrics_port: int = 9400
    # Every other librdkafka property, from KAFKA_* variables (security.protocol,
    # sasl.*, ssl.*, ...): given to every producer, consumer and admin client.
    kafka_properties: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Each field ``foo_bar`` is read from ``FOO_BAR``, or from the file that
        ``FOO_BAR_FILE`` names (a mounted secret); overrides win. Other
        ``KAFKA_*`` variables are librdkafka properties (shared/kafka_properties.py)."""
        values: dict[str, object] = {}
        variables = {f.name.upper() for f in fields(cls) if f.name not in _NOT_FROM_ONE_VARIABLE}
        for f in fields(cls):
            if f.name in _NOT_FROM_ONE_VARIABLE:
                continue
            variable = f.name.upper()
            raw = os.environ.get(variable)
            if raw is None and variable + FILE_SUFFIX in os.environ:
                raw = read_secret_file(variable + FILE_SUFFIX, os.environ[variable + FILE_SUFFIX])
            if raw is not None:
                values[f.name] = _convert(variable, raw, str(f.type))
        values["kafka_properties"] = client_properties(os.environ, variables)
        values.update(overrides)
        check_settings(values)
        settings = cls.for_broker(**values).with_driver()
        check_together({f.name: getattr(settings, f.name) for f in fields(settings)})
        return settings

    @classmethod
    def for_broker(cls, **values: object) -> Settings:
        """Settings whose unset fields take the broker profile's defaults
        (``broker_profile`` among ``values``; Apache Kafka's when absent)."""
        from shared.broker_profile import profile_named

        profile = profile_named(str(values.get("broker_profile", cls.broker_profile)))
        return cls(**{**profile.setting_defaults, **values})

    @property
    def work_group(self) -> str:
        """The consumer group of the work lanes (one member per consumer process)."""
        return f"{self.consumer_group}.work"

    def instance_id(self, group: str) -> str | None:
        """This process's static member id in ``group`` (None: dynamic membership):
        CONSUMER_INSTANCE_ID in the main group, with ".work" in the work group."""
        if not self.consumer_instance_id:
            return None
        return self.consumer_instance_id + (".work" if group == self.work_group else "")

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` give these settings (for child processes)."""
        env = {f.name.upper(): str(getattr(self, f.name)) for f in fields(self) if f.name not in _NOT_FROM_ONE_VARIABLE}
        for name, value in self.kafka_properties.items():
            env["KAFKA_" + name.replace("_", "__").replace("-", "___").replace(".", "_").upper()] = value
        return env

    def public(self) -> dict[str, object]:
        """These settings as they may be logged: the database password and
        every secret Kafka property masked."""
        from sqlalchemy import make_url

        shown: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        try:
            shown["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - an unparsable URL is shown as nothing at all
            shown["database_url"] = "***"
        shown["kafka_properties"] = masked(self.kafka_properties)
        return shown

    def with_driver(self) -> Settings:
        """Accept plain ``postgresql://`` URLs (libpq style) and use psycopg2."""
        url = self.database_url
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg2://" + url[len("postgresql://") :]
        return Settings(**{**self.__dict__, "database_url": url})


def _convert(variable: str, raw: str, kind: str) -> object:
    """A variable's value as its field's type; a clear error naming it otherwise."""
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        what = "a whole number" if kind == "int" else "a number"
        raise ConfigurationError(f"{variable} must be {what}, not {raw!r}") from None
    return raw
