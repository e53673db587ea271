"""`assessment-refresh consumer`: one member of the consumer group."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from consumer.topics import consumed_topics, service_topics
from consumer.worker import Worker, live_consumer
from shared.db import make_engine
from shared.kafka import ensure_topics
from shared.settings import Settings

log = logging.getLogger(__name__)


def run_consumer(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    ensure_topics(settings, service_topics(settings))
    worker = Worker(settings, engine)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("consumer group %s reading %s", settings.consumer_group, consumed_topics(settings))
    try:
        worker.run(live_consumer(settings))
    finally:
        engine.dispose()
        log.info("consumer stopped after %d message(s)", worker.stats.processed)
