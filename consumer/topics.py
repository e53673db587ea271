"""The topics the consumer reads and writes, created at start-up when missing."""

from __future__ import annotations

from consumer.dead_letters import dlq_topic
from shared.settings import Settings


def consumed_topics(settings: Settings) -> list[str]:
    return [settings.request_topic, settings.question_events_topic]


def service_topics(settings: Settings) -> list[str]:
    read = consumed_topics(settings)
    return [*read, settings.reply_topic, settings.refresh_events_topic, *map(dlq_topic, read)]
