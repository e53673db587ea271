"""`assessment-refresh consumer`: one member of the consumer group."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from consumer.dead_letters import dlq_topic
from consumer.worker import Worker, live_consumer
from shared.db import make_engine
from shared.kafka import ensure_topics
from shared.settings import Settings

log = logging.getLogger(__name__)


def service_topics(settings: Settings) -> list[str]:
    read = [settings.request_topic, settings.question_events_topic]
    return [*read, settings.reply_topic, settings.refresh_events_topic, *map(dlq_topic, read)]


def run_consumer(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    ensure_topics(settings, service_topics(settings))
    worker = Worker(settings, engine)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer = live_consumer(settings)
    log.info("consumer group %s reading %s", settings.consumer_group, service_topics(settings)[:2])
    try:
        worker.run(consumer)
    finally:
        consumer.close()  # commits the stored offsets and leaves the group
        engine.dispose()
        log.info("consumer stopped after %d message(s)", worker.stats.processed)
