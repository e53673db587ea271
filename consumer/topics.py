"""The topics the consumer reads and writes, created at start-up when missing."""

from __future__ import annotations

from consumer.dead_letters import dlq_topic
from shared.settings import Settings


def consumed_topics(settings: Settings) -> list[str]:
    """What the main lane reads: requests and the bank's events."""
    return [settings.request_topic, settings.question_events_topic]


def work_topics(settings: Settings) -> list[str]:
    """What the work lane reads: the chunks of refresh jobs."""
    return [settings.work_topic]


def service_topics(settings: Settings) -> list[str]:
    read = [*consumed_topics(settings), *work_topics(settings)]
    return [*read, settings.reply_topic, settings.refresh_events_topic, *map(dlq_topic, read)]
