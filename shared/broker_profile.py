"""Broker profiles: what the service changes for a broker that is not Apache Kafka.

The production path is written for Apache Kafka and needs no profile. A
profile exists so that a dev broker's defects can be lived with in one place,
and deleted in one go: ``BROKER_PROFILE=tansu`` (shared/tansu.py) is the only
one. Code asks the profile a question ("does this broker lose topics?"),
never the profile's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BrokerProfile:
    name: str
    # Settings fields whose defaults differ on this broker (env still wins).
    setting_defaults: Mapping[str, Any] = field(default_factory=dict)
    # librdkafka properties every producer of the service gets.
    producer_overrides: Mapping[str, Any] = field(default_factory=dict)
    # The broker may come back without its topics (memory storage): the
    # service makes its own topics again instead of reporting them missing.
    recreates_lost_topics: bool = False
    # The reply topic may be deleted and created again under a running API:
    # the reply reader follows it by topic id and rewinds (shared/tansu.py).
    follows_recreated_reply_topic: bool = False
    # End offsets are reported low and offsets_for_times answers 0: a replay
    # reads to end-of-partition and filters by record time itself.
    replay_reads_to_partition_eof: bool = False


APACHE_KAFKA = BrokerProfile("kafka")


def profile_named(name: str) -> BrokerProfile:
    if name == APACHE_KAFKA.name:
        return APACHE_KAFKA
    if name == "tansu":
        from shared.tansu import TANSU

        return TANSU
    raise ValueError(f"BROKER_PROFILE must be 'kafka' or 'tansu', not {name!r}")
