"""What makes each setting usable, checked once when the settings are read.

A value that parses but cannot work (a port of 99999, 0 partitions, a log
level logging does not know, a topic name Kafka refuses) would otherwise
surface later, as a traceback from uvicorn, librdkafka or SQLAlchemy, or not
at all. Each rule here names the variable and says what it must be, so every
command stops with one line instead (assessment_refresh/cli.py). Pure: no I/O.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping

from shared.kafka_properties import ConfigurationError

# A check returns what is wrong with a value, or None when it is fine.
Check = Callable[[object], str | None]


def port(value: object) -> str | None:
    return None if isinstance(value, int) and 0 <= value <= 65535 else "must be a port number, 0 to 65535"


def at_least(low: float) -> Check:
    def check(value: object) -> str | None:
        if not isinstance(value, int | float) or math.isnan(value) or math.isinf(value) or value < low:
            return f"must be a number of at least {low:g}"
        return None

    return check


def above_zero(value: object) -> str | None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return "must be a number above 0"
    return None


def one_of(*choices: str, case_insensitive: bool = False) -> Check:
    def check(value: object) -> str | None:
        text = str(value).upper() if case_insensitive else str(value)
        return None if text in choices else "must be one of " + ", ".join(choices)

    return check


# Kafka's own rule for topic names (and what librdkafka sends for a group id
# is any non-empty string; the service derives topic-like names from it).
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name(value: object) -> str | None:
    text = str(value)
    if not _TOPIC.fullmatch(text) or text in (".", ".."):
        return "must be a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'"
    return None


def instance_id(value: object) -> str | None:
    """Kafka checks a group.instance.id as it checks a topic name (JoinGroupRequest); empty: none."""
    text = str(value)
    if text and (not _TOPIC.fullmatch(text) or text in (".", "..")):
        return "must be empty or 1 to 249 letters, digits, '.', '_' or '-' (a pod or replica name)"
    return None


def not_empty(value: object) -> str | None:
    return None if str(value).strip() else "must not be empty"


def database_url(value: object) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(str(value))
    except (ArgumentError, ValueError):
        return "must be a PostgreSQL URL such as postgresql://user:password@host:5432/dbname"
    if not url.drivername.startswith("postgres"):  # postgres://, postgresql://, postgresql+psycopg2://
        return f"must be a PostgreSQL URL (postgresql://...), not {url.drivername}://..."
    return None


LOG_LEVELS = tuple(name for name in logging.getLevelNamesMapping() if name != "NOTSET")

RULES: Mapping[str, Check] = {
    "database_url": database_url,
    "kafka_bootstrap_servers": not_empty,
    "request_topic": topic_name,
    "reply_topic": topic_name,
    "question_events_topic": topic_name,
    "refresh_events_topic": topic_name,
    "work_topic": topic_name,
    "refresh_chunk_size": at_least(1),
    "reply_inline_max_bytes": at_least(1024),
    "consumer_group": not_empty,
    "topic_partitions": at_least(1),
    "reply_timeout_s": above_zero,
    "broker_timeout_s": above_zero,
    "max_body_bytes": at_least(1),
    "max_assessment_ids": at_least(1),
    "rate_limit_per_s": at_least(0),
    "rate_limit_burst": at_least(0),
    "api_key_cache_s": at_least(0),
    "broker_profile": one_of("kafka", "tansu"),
    "kafka_group_protocol": one_of("consumer", "classic"),
    "kafka_session_timeout_ms": at_least(1),
    "consumer_instance_id": instance_id,
    "kafka_fetch_wait_max_ms": at_least(0),
    # librdkafka's values of "partitioner" (CONFIGURATION.md).
    "kafka_partitioner": one_of("murmur2_random", "murmur2", "consistent_random", "consistent", "fnv1a_random",
                                "fnv1a", "random"),
    "api_port": port,
    "api_metrics_port": port,
    "consumer_metrics_port": port,
    "api_host": not_empty,
    "api_metrics_host": not_empty,
    "consumer_metrics_host": not_empty,
    "retention_hours": above_zero,
    "prune_interval_s": at_least(0),
    "prune_batch_size": at_least(1),
    "log_level": one_of(*LOG_LEVELS, case_insensitive=True),
    "log_format": one_of("json", "text"),
}

# Values never repeated in an error (they may hold a password).
SECRET_FIELDS = frozenset({"database_url"})


def check_settings(values: Mapping[str, object]) -> None:
    """Raise ConfigurationError for the first unusable value, naming its variable."""
    for name, check in RULES.items():
        if name not in values:
            continue
        problem = check(values[name])
        if problem is not None:
            shown = "" if name in SECRET_FIELDS else f", not {values[name]!r}"
            raise ConfigurationError(f"{name.upper()} {problem}{shown}")


def check_together(settings: Mapping[str, object]) -> None:
    """Rules on several settings at once (every field, defaults included)."""
    if settings.get("consumer_instance_id") and settings.get("kafka_group_protocol") != "classic":
        # Measured (README "Operations"): with the consumer protocol the broker
        # refuses a SIGKILLed member's restart under the same id until the old
        # session expires (UNRELEASED_INSTANCE_ID, fatal in librdkafka).
        raise ConfigurationError(
            "CONSUMER_INSTANCE_ID needs KAFKA_GROUP_PROTOCOL=classic: with the consumer protocol a crashed "
            "member restarted under the same id is refused until its session expires")
