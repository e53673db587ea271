"""`assessment-refresh consumer`: one member of the consumer group."""

from __future__ import annotations

import json
import logging
import signal
import threading
from functools import partial
from types import FrameType

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from sqlalchemy import Engine

from consumer import jobs
from consumer.consumer_metrics import record_statistics
from consumer.health_server import HealthServer
from consumer.refresh_store import serial_sessions
from consumer.topics import consumed_topics, service_topics, work_topics
from consumer.unit_of_work import SqlUnitOfWork
from consumer.worker import Worker
from shared import history, inbox
from shared.db import make_engine, ping
from shared.kafka import consumer_config, ensure_topics
from shared.retention import Pruner
from shared.settings import Settings
from shared.tracing import setup_tracing

log = logging.getLogger(__name__)

WORK_BATCH = 4


def run_consumer(settings: Settings) -> None:
    """Two lanes, each a poll loop on a thread of its own with its own group
    membership: the main lane (requests, question events) and the work lane
    (chunks of large refreshes). A request never queues behind a chunk: the
    lanes share only the database, where a request waits at most for the
    locks of the one chunk that holds its assessments."""
    log.info("configuration: %s", json.dumps(settings.public(), default=str))
    setup_tracing("assessment-refresh-consumer")  # OTEL_* variables; nothing without an exporter
    engine = make_engine(settings.database_url)
    serial_sessions(engine)
    ensure_topics(settings, service_topics(settings))
    worker = Worker(settings, partial(SqlUnitOfWork, engine))
    work_worker = Worker(settings, partial(SqlUnitOfWork, engine))

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        worker.stopping.set()
        work_worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("consumer group %s reading %s; group %s reading %s", settings.consumer_group,
             consumed_topics(settings), settings.work_group, work_topics(settings))
    joined, work_joined = threading.Event(), threading.Event()
    health = _health_server(settings, engine, [worker, work_worker], [joined, work_joined])
    pruners = [p for p in (_inbox_pruner(settings, engine), _history_pruner(settings, engine)) if p is not None]
    work_lane = threading.Thread(
        target=_run_lane, name="work-lane",
        # A few chunks a batch: each is a unit of work of its own anyway, and a
        # stop waits for the batch in hand (100 chunks would be seconds).
        args=(work_worker, group_member(settings, settings.work_group, work_topics(settings), work_joined), worker,
              WORK_BATCH),
    )
    work_lane.start()
    try:
        _run_lane(worker, group_member(settings, settings.consumer_group, consumed_topics(settings), joined),
                  work_worker)
    finally:
        work_lane.join()
        for pruner in pruners:
            pruner.stop()
        if health is not None:
            health.stop()
        engine.dispose()
        log.info("consumer stopped after %d message(s) and %d chunk(s)", worker.stats.processed,
                 work_worker.stats.processed)


def _run_lane(worker: Worker, consumer: Consumer, other: Worker, batch_size: int = 100) -> None:
    """One lane's poll loop; when it ends (stopped, or failed), the other lane
    stops too, so that the process exits and its partitions move on."""
    try:
        worker.run(consumer, batch_size)
    finally:
        other.stopping.set()


def _inbox_pruner(settings: Settings, engine: Engine) -> Pruner | None:
    """Inbox rows past RETENTION_HOURS, every PRUNE_INTERVAL_S (0: never)."""
    if settings.prune_interval_s <= 0:
        return None

    def prune_batch() -> int:
        # Completed jobs go with the inbox rows of the same age: their chunks'
        # inbox rows are what a redelivered chunk would need.
        with engine.begin() as conn:
            retention = settings.retention_hours * 3600
            return (inbox.prune(conn, retention, settings.prune_batch_size)
                    + jobs.prune(conn, retention, settings.prune_batch_size))

    return Pruner("inbox", prune_batch, settings.prune_batch_size, settings.prune_interval_s).start()


def _history_pruner(settings: Settings, engine: Engine) -> Pruner | None:
    """Assessment history past HISTORY_RETENTION_HOURS (0, the default: kept forever)."""
    if settings.prune_interval_s <= 0 or settings.history_retention_hours <= 0:
        return None

    def prune_batch() -> int:
        with engine.begin() as conn:
            return history.prune(conn, settings.history_retention_hours * 3600, settings.prune_batch_size)

    return Pruner("assessment history", prune_batch, settings.prune_batch_size, settings.prune_interval_s).start()


def _health_server(settings: Settings, engine: Engine, workers: list[Worker],
                   joined: list[threading.Event]) -> HealthServer | None:
    """/metrics, /healthz and /readyz on CONSUMER_METRICS_PORT (0: none)."""
    if not settings.consumer_metrics_port:
        return None

    def broker() -> bool:
        workers[0].producer.list_topics(timeout=2)
        return True

    def missing_topics() -> set[str]:
        return {topic for worker in workers for topic in worker.missing_topics}

    checks = {
        "group_joined": lambda: all(event.is_set() for event in joined),
        "database": lambda: ping(engine),
        "broker": broker,
        "topics": lambda: not missing_topics(),
    }

    def details() -> dict[str, object]:
        return {"missing_topics": sorted(missing_topics())} if missing_topics() else {}

    return HealthServer(settings.consumer_metrics_host, settings.consumer_metrics_port, checks, details).start()


def group_member(settings: Settings, group: str, topics: list[str], joined: threading.Event | None = None) -> Consumer:
    """A member of ``group`` reading ``topics``; ``joined`` is set once the
    group has given it an assignment (possibly empty)."""
    consumer = Consumer(
        consumer_config(
            settings,
            group,
            **{
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                # Offsets are stored by the poll loop, after delivery (consumer.worker).
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Consumer lag per partition for the metrics (see consumer_metrics).
                "statistics.interval.ms": 5000,
                "stats_cb": record_statistics,
                # Static membership: a restart under the same id takes the
                # partitions back without waiting for the session timeout.
                **({"group.instance.id": instance} if (instance := settings.instance_id(group)) else {}),
            },
        )
    )

    def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what is finished before another member takes the partitions.
        try:
            c.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)

    def on_assign(_c: Consumer, _partitions: list[TopicPartition]) -> None:
        # confluent-kafka assigns the partitions itself after this returns.
        if joined is not None:
            joined.set()

    consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
    return consumer
