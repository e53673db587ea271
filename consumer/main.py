"""`assessment-refresh consumer`: one member of the consumer group."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from sqlalchemy import Engine

from consumer.health_server import HealthServer
from consumer.topics import consumed_topics, service_topics
from consumer.worker import Worker, live_consumer
from shared.db import make_engine, ping
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
    joined = threading.Event()
    health = _health_server(settings, engine, worker, joined)
    try:
        worker.run(live_consumer(settings, joined))
    finally:
        if health is not None:
            health.stop()
        engine.dispose()
        log.info("consumer stopped after %d message(s)", worker.stats.processed)


def _health_server(settings: Settings, engine: Engine, worker: Worker, joined: threading.Event) -> HealthServer | None:
    """/metrics, /healthz and /readyz on CONSUMER_METRICS_PORT (0: none)."""
    if not settings.consumer_metrics_port:
        return None

    def broker() -> bool:
        worker.producer.list_topics(timeout=2)
        return True

    checks = {
        "group_joined": joined.is_set,
        "database": lambda: ping(engine),
        "broker": broker,
        "topics": lambda: not worker.missing_topics,
    }

    def details() -> dict[str, object]:
        return {"missing_topics": sorted(worker.missing_topics)} if worker.missing_topics else {}

    return HealthServer(settings.consumer_metrics_host, settings.consumer_metrics_port, checks, details).start()
