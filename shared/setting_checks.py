"""What makes each setting usable, checked once when the settings are read.

A value that parses but cannot work (a port of 99999, 0 partitions, a log
level logging does not know, a topic name Kafka refuses) would otherwise
surface later, as a traceback from uvicorn, librdkafka or SQLAlchemy, or not
at all. Each rule here says what a value must be; each setting's declaration
in shared/settings.py names its rule, and the error names the variable, so
every command stops with one line instead (assessment_refresh/cli.py). Pure:
no I/O.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared.kafka_properties import ConfigurationError


@dataclass(frozen=True)
class Rule:
    """What a setting's value must be: ``text`` as the error and the
    configuration table say it ("must be a port number, 0 to 65535"), and
    ``problem``, which returns what is wrong with a value or None."""

    text: str
    problem: Callable[[object], str | None]

    def __call__(self, value: object) -> str | None:
        return self.problem(value)


def _simple(text: str, holds: Callable[[object], bool]) -> Rule:
    return Rule(text, lambda value: None if holds(value) else text)


port = _simple("must be a port number, 0 to 65535", lambda v: isinstance(v, int) and 0 <= v <= 65535)


def at_least(low: float) -> Rule:
    return _simple(f"must be a number of at least {low:g}",
                   lambda v: isinstance(v, int | float) and math.isfinite(v) and v >= low)


above_zero = _simple("must be a number above 0", lambda v: isinstance(v, int | float) and math.isfinite(v) and v > 0)


def one_of(*choices: str, case_insensitive: bool = False) -> Rule:
    def holds(value: object) -> bool:
        return (str(value).upper() if case_insensitive else str(value)) in choices

    return _simple("must be one of " + ", ".join(choices), holds)


# Kafka's own rule for topic names (and what librdkafka sends for a group id
# is any non-empty string; the service derives topic-like names from it).
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

topic_name = _simple("must be a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'",
                     lambda v: bool(_TOPIC.fullmatch(str(v))) and str(v) not in (".", ".."))

not_empty = _simple("must not be empty", lambda v: bool(str(v).strip()))

# Kafka checks a group.instance.id as it checks a topic name (JoinGroupRequest); empty: none.
instance_id = _simple("must be empty or 1 to 249 letters, digits, '.', '_' or '-' (a pod or replica name)",
                      lambda v: not str(v) or (bool(_TOPIC.fullmatch(str(v))) and str(v) not in (".", "..")))

# librdkafka's values of "partitioner" (CONFIGURATION.md).
partitioner = one_of("murmur2_random", "murmur2", "consistent_random", "consistent", "fnv1a_random", "fnv1a",
                     "random")


def _database_url_problem(value: object) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(str(value))
    except (ArgumentError, ValueError):
        return "must be a PostgreSQL URL such as postgresql://user:password@host:5432/dbname"
    if not url.drivername.startswith("postgres"):  # postgres://, postgresql://, postgresql+psycopg2://
        return f"must be a PostgreSQL URL (postgresql://...), not {url.drivername}://..."
    return None


database_url = Rule("must be a PostgreSQL URL (postgresql://...)", _database_url_problem)


def _is_address_list(value: object) -> bool:
    import ipaddress

    text = str(value).strip()
    if text in ("", "*"):
        return True
    try:
        for item in text.split(","):
            ipaddress.ip_network(item.strip(), strict=False)
    except ValueError:
        return False
    return True


# uvicorn's FORWARDED_ALLOW_IPS, checked: uvicorn itself takes a typo as a literal that never matches.
addresses = _simple('must be IP addresses or networks (10.0.0.0/8), comma-separated, or "*"', _is_address_list)

LOG_LEVELS = tuple(name for name in logging.getLevelNamesMapping() if name != "NOTSET")


def check_settings(values: Mapping[str, object], rules: Mapping[str, Rule] | None = None,
                   secret: frozenset[str] | None = None) -> None:
    """Raise ConfigurationError for the first unusable value, naming its
    variable. The rules are the settings' declarations (shared/settings.py)
    unless given; a secret value is never repeated in the error."""
    if rules is None or secret is None:
        from shared.settings import declared_rules, secret_settings

        rules, secret = declared_rules(), secret_settings()
    for name, rule in rules.items():
        if name not in values:
            continue
        problem = rule(values[name])
        if problem is not None:
            shown = "" if name in secret else f", not {values[name]!r}"
            raise ConfigurationError(f"{name.upper()} {problem}{shown}")


def check_together(settings: Mapping[str, object]) -> None:
    """Rules on several settings at once (every field, defaults included)."""
    if settings.get("consumer_instance_id") and settings.get("kafka_group_protocol") != "classic":
        # Measured (docs/operations.md): with the consumer protocol the broker
        # refuses a SIGKILLed member's restart under the same id until the old
        # session expires (UNRELEASED_INSTANCE_ID, fatal in librdkafka).
        raise ConfigurationError(
            "CONSUMER_INSTANCE_ID needs KAFKA_GROUP_PROTOCOL=classic: with the consumer protocol a crashed "
            "member restarted under the same id is refused until its session expires")
