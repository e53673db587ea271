"""Configuration, read once from environment variables (docs/configuration.md).

Each setting is declared once, as a field of Settings: its name (the variable
is the name upper-cased), its type and default, the rule its value must
follow (shared/setting_checks.py) and one line of meaning. The start-up
checks (check_settings), the options' --help (assessment_refresh/cli_options.py)
and the configuration table of docs/configuration.md (shared/settings_reference.py)
are all read from these declarations; tests/unit/test_settings_reference.py
fails when one of them disagrees, or a field has no declaration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from shared import setting_checks as rule
from shared.kafka_properties import FILE_SUFFIX, ConfigurationError, client_properties, masked, read_secret_file
from shared.setting_checks import Rule, check_settings, check_together

DECLARATION = "assessment_refresh.setting"


@dataclass(frozen=True)
class Declaration:
    meaning: str  # one line, for --help and the configuration table
    rule: Rule | None = None  # what the value must be, checked at start-up
    secret: bool = False  # never repeated in an error (it may hold a password)
    from_one_variable: bool = True  # read from the variable of its name (kafka_properties: from many)


def setting(default: Any, meaning: str, rule: Rule | None = None, *, secret: bool = False) -> Any:
    """A Settings field with its declaration."""
    return field(default=default, metadata={DECLARATION: Declaration(meaning, rule, secret)})


@dataclass(frozen=True)
class Settings:
    database_url: str = setting(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        "PostgreSQL, as a URL whose query parameters go to libpq (`sslmode`, ...); `dev` sets its embedded one",
        rule.database_url, secret=True)
    kafka_bootstrap_servers: str = setting(
        "127.0.0.1:9092", "Kafka bootstrap servers (`dev` sets its own broker: Tansu, or Apache Kafka with "
        "`--broker kafka`)", rule.not_empty)
    request_topic: str = setting("assessment.refresh.requests", "refresh requests, from the API (or any trusted "
                                 "client) to the consumers", rule.topic_name)
    reply_topic: str = setting("assessment.refresh.replies", "replies to the API", rule.topic_name)
    question_events_topic: str = setting("question.events", "upstream question bank events", rule.topic_name)
    refresh_events_topic: str = setting("assessment.refresh.events", "one event per changed assessment, a summary "
                                        "per deletion", rule.topic_name)
    # Internal: the chunks of large refreshes, read by each consumer's work
    # lane, so they never queue ahead of requests.
    work_topic: str = setting("assessment.refresh.work", "internal: the chunks of large refreshes (read by group "
                              "`<CONSUMER_GROUP>.work`)", rule.topic_name)
    consumer_group: str = setting("assessment-refresh", "consumer group id (the work lane's is `<CONSUMER_GROUP>.work`; "
                                  "API replicas derive unique ids from it)", rule.not_empty)
    topic_partitions: int = setting(6, "partitions of the topics the service creates", rule.at_least(1))
    reply_timeout_s: float = setting(30.0, "how long the API waits for a reply before it answers 504", rule.above_zero)
    # Above a partition leader election (measured 7-12 s on three nodes):
    # a cluster that elects a leader is waited for; no connection at all is 503 at once.
    broker_timeout_s: float = setting(30.0, "how long the API waits for a request's delivery to be confirmed; past it "
                                      "the outcome is unknown: 504 with its Location (perhaps written)",
                                      rule.above_zero)
    max_body_bytes: int = setting(64 * 1024, "larger request bodies get 413", rule.at_least(1))
    max_assessment_ids: int = setting(1000, "longer id lists get 400", rule.at_least(1))
    # Chosen by measurement: docs/performance.md, "At scale".
    refresh_chunk_size: int = setting(
        500, "the most assessments one transaction refreshes; larger refreshes (a deletion's fan-out, a whole "
        "company) are jobs of chunks of this size on the work topic (how 500 was chosen: docs/performance.md)",
        rule.at_least(1))
    # Kafka's default message limit is 1 MB; a report of 20,000 assessments is several.
    reply_inline_max_bytes: int = setting(
        512 * 1024, "a reply body larger than this (bytes of JSON) goes as a claim check: the summary and "
        "`result_location`, and the API reads the stored report", rule.at_least(1024))
    rate_limit_per_s: float = setting(20.0, "requests per second per API key and API process (a token bucket; "
                                      "429 with `Retry-After` beyond it); 0 turns rate limiting off", rule.at_least(0))
    rate_limit_burst: int = setting(40, "the token bucket's size: requests a key may send at once", rule.at_least(0))
    api_key_cache_s: float = setting(
        5.0, "how long an API process trusts a valid key without asking PostgreSQL (a revoked key keeps working "
        "that long on a replica that saw it); 0 always asks", rule.at_least(0))
    api_key_miss_cache_s: float = setting(
        5.0, "how long an API process remembers a key PostgreSQL does not know (a key created right after a failed "
        "try with it works that much later); 0 always asks", rule.at_least(0))
    auth_failure_rate_per_s: float = setting(
        1.0, "failed authentications per second allowed per client address and API process, after the burst "
        "(then 429 with `Retry-After` and no database look-up); 0 turns the limit off", rule.at_least(0))
    auth_failure_burst: int = setting(20, "failed authentications a client address may make at once",
                                      rule.at_least(1))
    # Passed to uvicorn explicitly (producer_api/client_address.py): its own default trusts 127.0.0.1.
    forwarded_allow_ips: str = setting(
        "", "proxies whose `X-Forwarded-For` names the client address: IP addresses or networks, comma-separated, "
        "or `*` (any peer: only where nothing but the proxy reaches the API); empty: none, the TCP peer is the "
        "client", rule.addresses)
    broker_profile: str = setting(
        "kafka", "which broker's quirks to live with: `kafka` (Apache Kafka, or any broker that behaves like it) or "
        "`tansu` (the dev broker, its workarounds switched on: shared/tansu.py, listed in docs/tansu.md); `dev` and "
        "the Tansu tests set it",
        rule.one_of("kafka", "tansu"))
    kafka_group_protocol: str = setting(
        "consumer", "`consumer`: KIP-848 (Kafka 4.x; the broker assigns partitions incrementally and owns the "
        "session timeout, `group.consumer.session.timeout.ms`); `classic` for older brokers (Tansu's default)",
        rule.one_of("consumer", "classic"))
    kafka_session_timeout_ms: int = setting(
        45000, "group session timeout, classic protocol only (Tansu's default: 6000)", rule.at_least(1))
    # Static group membership (group.instance.id): a crashed process restarted
    # under the same id takes its partitions back at once instead of after the
    # session timeout. With the consumer protocol the broker refuses the
    # restarted member until the old session expires (docs/operations.md).
    consumer_instance_id: str = setting(
        "", "static group membership: this consumer process's `group.instance.id` (the work lane adds `.work`); "
        "one per process, e.g. the pod name; empty: dynamic membership. Needs `KAFKA_GROUP_PROTOCOL=classic`",
        rule.instance_id)
    kafka_fetch_wait_max_ms: int = setting(
        500, "the longest wait of an empty fetch; Kafka answers as soon as a record arrives, so it costs no latency "
        "there (Tansu's default: 10; `dev` on Tansu: 100, see docs/tansu.md)", rule.at_least(0))
    # murmur2_random is the Java client's rule: a key lands on one partition whoever writes it.
    kafka_partitioner: str = setting(
        "murmur2_random", "librdkafka's `partitioner` for every producer of the service; `murmur2_random` places a "
        "key as the Java client does (`consistent_random` was the default before 0.2: see the upgrade note in "
        "docs/operations.md)", rule.partitioner)
    api_host: str = setting("127.0.0.1", "the interface `assessment-refresh api` listens on", rule.not_empty)
    api_port: int = setting(8000, "the port `assessment-refresh api` listens on (a port in use: one line naming "
                            "the flag, exit 2)", rule.port)
    # Keep it above the topics' retention.ms, so that a redelivery or a replay finds its row.
    retention_hours: float = setting(
        168.0, "inbox and async-request rows older than this are pruned (docs/operations.md#retention)",
        rule.above_zero)
    prune_interval_s: float = setting(600.0, "how often each consumer (inbox) and API process (async requests) "
                                      "prunes; 0 never", rule.at_least(0))
    prune_batch_size: int = setting(1000, "rows per pruning transaction", rule.at_least(1))
    history_retention_hours: float = setting(
        0.0, "assessment history rows older than this are pruned, in PRUNE_BATCH_SIZE batches; 0 keeps them "
        "forever", rule.at_least(0))
    api_metrics_host: str = setting("127.0.0.1", "the interface of the API's own metrics port", rule.not_empty)
    api_metrics_port: int = setting(
        0, "the API's `/metrics` on a port of its own, off the public one (0: on `API_PORT`; docker-compose.yml "
        "uses 9300, which nginx does not expose)", rule.port)
    log_level: str = setting("INFO", "log level", rule.one_of(*rule.LOG_LEVELS, case_insensitive=True))
    log_format: str = setting(
        "json", "`json` (one object per line, with the request or correlation id) or `text`; `api` and `consumer` "
        "default to JSON, the commands a person runs (`dev`, `load`, `replay`, ...) to text",
        rule.one_of("json", "text"))
    consumer_metrics_host: str = setting("127.0.0.1", "the interface of the consumer's `/metrics`, `/healthz`, "
                                         "`/readyz`", rule.not_empty)
    consumer_metrics_port: int = setting(
        9400, "the port of the consumer's `/metrics`, `/healthz`, `/readyz` (0: none; `dev` uses it too and waits "
        "for its `/readyz`, the group joined, before it says ready; a port in use: one line naming the flag, exit 2)",
        rule.port)
    kafka_properties: Mapping[str, str] = field(default_factory=dict, metadata={DECLARATION: Declaration(
        "every other librdkafka property, from `KAFKA_<PROPERTY>` variables: given to every producer, consumer "
        "and admin client", from_one_variable=False)})

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Each field ``foo_bar`` is read from ``FOO_BAR``, or from the file that
        ``FOO_BAR_FILE`` names (a mounted secret); overrides win. Other
        ``KAFKA_*`` variables are librdkafka properties (shared/kafka_properties.py)."""
        values: dict[str, object] = {}
        variables = {f.name.upper() for f in _one_variable_fields()}
        for f in _one_variable_fields():
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
        env = {f.name.upper(): str(getattr(self, f.name)) for f in _one_variable_fields()}
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


def declaration(f: Field[Any]) -> Declaration | None:
    found = f.metadata.get(DECLARATION)
    return found if isinstance(found, Declaration) else None


def _one_variable_fields() -> list[Field[Any]]:
    """The fields read from one variable of their name (a field not declared
    yet counts as one: the drift test names it)."""
    return [f for f in fields(Settings) if (declaration(f) or Declaration("")).from_one_variable]


def declared_rules() -> dict[str, Rule]:
    """Each setting's rule, by field name: what check_settings applies."""
    return {f.name: d.rule for f in fields(Settings) if (d := declaration(f)) is not None and d.rule is not None}


def secret_settings() -> frozenset[str]:
    return frozenset(f.name for f in fields(Settings) if (d := declaration(f)) is not None and d.secret)


def undeclared_settings() -> list[str]:
    """Fields added without a declaration (tests/unit/test_settings_reference.py fails on them)."""
    return [f.name for f in fields(Settings) if declaration(f) is None]
