"""The poll loop: consume, handle, publish, and only then store the offset.

At-least-once: an offset is stored after the handler's transaction committed
and everything it returned was delivered by the broker. Transient failures
(database or broker unreachable, deadlocks) are retried with backoff, forever,
without moving on; anything else is retried a few times and then dead-lettered,
and a REST caller still gets an error reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from sqlalchemy import Engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, StatementError

from consumer import faults
from consumer.consumer_metrics import DEAD_LETTERED, MESSAGES, PROCESSING, RETRIES, record_statistics
from consumer.dead_letters import DLQ_SUFFIX, dead_letter, original_topic, truncated
from consumer.handlers import DuplicateInFlight, Handled, Handlers, Outgoing, error_reply
from consumer.inbox import mark_published
from consumer.loader import parse_question
from consumer.log_fields import record_fields
from consumer.refresh_store import ConcurrentBankChange
from consumer.topics import consumed_topics, service_topics
from shared.broker_profile import profile_named
from shared.kafka import consumer_config, ensure_topics, producer_config
from shared.log_setup import bind
from shared.messages import (
    HEADER_CORRELATION_ID,
    HEADER_REPLY_TO,
    QUESTION_UPSERTED,
    MessageError,
    QuestionEvent,
    RefreshRequested,
    header,
    new_id,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, ConcurrentBankChange, DuplicateInFlight)

# Delivery errors a retry cannot fix: the record or its topic is wrong, not the
# broker. Retrying them forever would stop every partition this member owns.
PERMANENT_DELIVERY_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError._INVALID_ARG,
}
MISSING_TOPIC_ERRORS = {KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART}
# A reply to a topic that does not exist (a caller long gone) is given up after
# this many rounds; a record for one of our own topics waits for it instead.
MAX_MISSING_TOPIC_ROUNDS = 10


RUN_UPSERTS = "question.upserted"
RUN_REQUESTS = "refresh.requests"


class Stopping(Exception):
    """Raised out of a back-off wait when the worker is asked to stop."""


def backoff(attempt: int) -> float:
    return float(min(5.0, 0.05 * 2**attempt))


@dataclass
class Stats:
    processed: int = 0
    dead_lettered: int = 0


class Worker:
    """One consumer-group member. ``replay`` re-runs handlers without the
    stored-result shortcut and sends no replies (see consumer.replay)."""

    def __init__(self, settings: Settings, engine: Engine, *, replay: bool = False) -> None:
        self.settings = settings
        self.handlers = Handlers(engine, settings)
        self.replay = replay
        self.profile = profile_named(settings.broker_profile)
        # The Tansu profile, whose replays read to end-of-partition: stamped on
        # what a replay dead-letters, so that replaying a DLQ does not read
        # back, and fail again on, what it wrote there itself. (On Kafka a
        # replay stops at the end offsets it planned, before those records.)
        self.replay_id = new_id() if replay and self.profile.replay_reads_to_partition_eof else None
        self.stats = Stats()
        self.stopping = threading.Event()
        self.producer = Producer(producer_config(settings, **{"message.timeout.ms": 10000}))
        # Service topics a delivery found missing (shown on /readyz until one succeeds).
        self.missing_topics: set[str] = set()

    # -- one record --------------------------------------------------------

    def handle(self, msg: Message) -> Handled:
        """What to publish for one record, after retries; never raises but on stop."""
        topic, started = original_topic(msg), time.perf_counter()
        with bind(**record_fields(msg, question_event=topic == self.settings.question_events_topic)):
            handled = self._handle(msg)
        PROCESSING.labels(topic).observe(time.perf_counter() - started)
        MESSAGES.labels(topic, "dead_lettered" if handled.dead_lettered else "ok").inc()
        return handled

    def _handle(self, msg: Message) -> Handled:
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._dispatch(msg)
            except MessageError as exc:
                return self._give_up(msg, exc, attempt)
            except TRANSIENT as exc:
                RETRIES.labels(original_topic(msg), "transient").inc()
                log.warning("transient failure on %s [%d] @%d, retrying: %s", msg.topic(), msg.partition(), msg.offset(),
                            public_message(exc))
                self._sleep(backoff(attempt))
                attempt = 0  # transient failures never count towards dead-lettering
            except Exception as exc:  # noqa: BLE001 - anything else: retry, then dead-letter
                log.exception("failure on %s [%d] @%d (attempt %d)", msg.topic(), msg.partition(), msg.offset(), attempt)
                if attempt >= MAX_ATTEMPTS:
                    return self._give_up(msg, exc, attempt)
                RETRIES.labels(original_topic(msg), "error").inc()
                self._sleep(backoff(attempt))

    def _dispatch(self, msg: Message) -> Handled:
        err = msg.error()
        if err is not None:
            raise KafkaException(err)
        topic = original_topic(msg)
        if topic == self.settings.request_topic:
            request = RefreshRequested.from_json(msg.value())
            handled = self.handlers.refresh_requested(request, header(msg.headers(), HEADER_REPLY_TO), replay=self.replay)
        elif topic == self.settings.question_events_topic:
            handled = self.handlers.question_event(QuestionEvent.from_json(msg.value()), replay=self.replay)
        else:
            raise MessageError(f"no handler for topic {topic}")
        faults.crash_point("after_db_commit")
        return handled

    def _give_up(self, msg: Message, exc: Exception, attempts: int) -> Handled:
        self.stats.dead_lettered += 1
        reason = public_message(exc)
        log.error("dead-lettering %s [%d] @%d after %d attempt(s): %s", msg.topic(), msg.partition(), msg.offset(), attempts, reason)
        out = [dead_letter(msg, exc, attempts, reason, replay_id=self.replay_id)]
        DEAD_LETTERED.labels(original_topic(msg)).inc()
        correlation_id = header(msg.headers(), HEADER_CORRELATION_ID)
        if original_topic(msg) == self.settings.request_topic and correlation_id and not self.replay:
            reason = f"Error refreshing assessment data: {reason}"
            reply = error_reply(correlation_id, 500, reason)
            out.append(self.handlers.reply_message(header(msg.headers(), HEADER_REPLY_TO), reply))
        return Handled(out, dead_lettered=True)

    def _sleep(self, seconds: float) -> None:
        """Back off; a stop request ends the wait and the unfinished batch."""
        if self.stopping.wait(seconds):
            raise Stopping

    def handle_batch(self, records: list[Message]) -> None:
        """Handle, publish, then mark published; the caller stores offsets after.

        Consecutive records of one kind are handled as a run in one transaction:
        question.upserted records (replays read them by the hundred thousand)
        and refresh requests (a busy consumer shares one commit among them).
        Anything else, and anything that does not decode, goes one by one."""
        handled: list[Handled] = []
        for kind, group in groupby(((self._run_kind(msg), msg) for msg in records), key=lambda pair: pair[0][0]):
            run = [(msg, payload) for (_, payload), msg in group]
            if kind == RUN_UPSERTS:
                handled += self.handle_run(run, self.handlers.question_upserts)
            elif kind == RUN_REQUESTS:
                handled += self.handle_run(run, self.handlers.refresh_requests)
            else:
                handled += [self.handle(msg) for msg, _ in run]
        self.publish([out for h in handled for out in h.outgoing])
        self.retrying(lambda: mark_published(self.handlers.engine, [h.inbox_id for h in handled if h.inbox_id]))

    def _run_kind(self, msg: Message) -> tuple[str | None, Any]:
        """Which run a record can join, with its decoded payload; (None, None)
        for anything the one-by-one path must see (it dead-letters what is bad)."""
        if msg.error() is not None:
            return None, None
        topic = original_topic(msg)
        try:
            if topic == self.settings.request_topic:
                return RUN_REQUESTS, (RefreshRequested.from_json(msg.value()), header(msg.headers(), HEADER_REPLY_TO))
            if topic == self.settings.question_events_topic:
                event = QuestionEvent.from_json(msg.value())
                if event.type == QUESTION_UPSERTED:
                    return RUN_UPSERTS, (event, parse_question(event.question, f"event {event.event_id}"))
        except Exception:  # noqa: BLE001 - anything odd goes one by one, where errors are handled
            pass
        return None, None

    def handle_run(self, run: list[tuple[Message, Any]], handle_all: Callable[..., list[Handled]]) -> list[Handled]:
        attempt = 0
        topic, started = original_topic(run[0][0]), time.perf_counter()
        while True:
            attempt += 1
            try:
                handled = handle_all([payload for _, payload in run], replay=self.replay)
                faults.crash_point("after_db_commit")
                share = (time.perf_counter() - started) / len(run)
                for _ in run:
                    PROCESSING.labels(topic).observe(share)
                MESSAGES.labels(topic, "ok").inc(len(run))
                return handled
            except TRANSIENT as exc:
                RETRIES.labels(topic, "transient").inc()
                log.warning("transient failure on a run of %d records, retrying: %s", len(run), public_message(exc))
                self._sleep(backoff(attempt))
            except Exception:  # noqa: BLE001 - find the culprit: one by one, with retries and the DLQ
                log.warning("a run of %d records failed; handling them one by one", len(run))
                return [self.handle(msg) for msg, _ in run]

    def retrying(self, action: Callable[[], None]) -> None:
        attempt = 0
        while True:
            try:
                return action()
            except TRANSIENT as exc:
                attempt += 1
                log.warning("transient failure, retrying: %s", exc)
                self._sleep(backoff(attempt))

    # -- publishing --------------------------------------------------------

    def publish(self, outgoing: list[Outgoing]) -> None:
        """Deliver every message; keep trying while the broker is the problem.

        A record the broker can never take (too large, an invalid topic) is
        given up instead (see ``_undeliverable``), so that one bad record
        cannot stop the partitions behind it.
        """
        pending = list(outgoing)
        rounds = 0
        while pending:
            rounds += 1
            failed = self._send(pending)
            pending = []
            for item, err in failed:
                retry = self._after_failed_delivery(item, err, rounds)
                if retry is not None:
                    pending.append(retry)
            if pending:
                log.warning("%d message(s) not delivered, retrying", len(pending))
                self._sleep(1.0)

    def _send(self, items: list[Outgoing]) -> list[tuple[Outgoing, KafkaError]]:
        """Produce and wait for every delivery report; what failed, and why."""
        failed: list[tuple[Outgoing, KafkaError]] = []

        def report_for(item: Outgoing) -> Callable[[KafkaError | None, Message], None]:
            def report(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    failed.append((item, err))
                else:
                    self.missing_topics.discard(item.topic)

            return report

        for item in items:
            try:
                self._produce(item, report_for(item))
            except KafkaException as exc:
                failed.append((item, exc.args[0]))
        self.producer.flush()
        return failed

    def _after_failed_delivery(self, item: Outgoing, err: KafkaError, rounds: int) -> Outgoing | None:
        """What to send next for a failed delivery: the same record, a smaller
        one, or nothing (given up, logged)."""
        code = err.code()
        if code in PERMANENT_DELIVERY_ERRORS:
            return self._undeliverable(item, err)
        if code in MISSING_TOPIC_ERRORS:
            if item.topic not in service_topics(self.settings):
                if rounds >= MAX_MISSING_TOPIC_ROUNDS:
                    return self._undeliverable(item, err)
            elif self.profile.recreates_lost_topics:
                self._recreate_topics()
            else:
                # An operator deleted one of our topics: not ours to make again
                # behind their back. The record waits (and its partition with
                # it) until the topic is back; /readyz names it meanwhile.
                self.missing_topics.add(item.topic)
                log.error("topic %s does not exist: waiting for an operator to create it again", item.topic)
                return item
        log.warning("cannot deliver to %s: %s", item.topic, err)
        return item

    def _undeliverable(self, item: Outgoing, err: KafkaError) -> Outgoing | None:
        if item.topic.endswith(DLQ_SUFFIX) and err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
            # The failed record plus our headers is over the limit: keep its
            # coordinates and error, drop its value (the original stays in its topic).
            log.error("dead-letter copy for %s too large: sending it without its value", item.topic)
            return truncated(item)
        log.error("giving up a message to %s (%d bytes): %s", item.topic, len(item.value), err)
        return None

    def _recreate_topics(self) -> None:
        """The Tansu profile: a restarted memory broker lost our topics."""
        try:
            ensure_topics(self.settings, service_topics(self.settings))
        except KafkaException as exc:
            log.warning("cannot recreate topics: %s", exc)

    def _produce(self, item: Outgoing, callback: Callable[[KafkaError | None, Message], None]) -> None:
        while True:
            try:
                self.producer.produce(item.topic, item.value, item.key, headers=item.headers, on_delivery=callback)
                return
            except BufferError:
                self.producer.poll(0.1)

    # -- the loop ----------------------------------------------------------

    def run(self, consumer: Consumer, batch_size: int = 100) -> None:
        """Consume until stopped. The consumer is closed on the way out (which
        commits the stored offsets and leaves the group)."""
        try:
            while not self.stopping.is_set():
                # poll() returns as soon as one record is there; the rest of a
                # batch is what is already fetched. (consume(n, timeout) would
                # wait the whole timeout for n records: 0.5 s per request.)
                first = consumer.poll(0.5)
                if first is None:
                    continue
                batch = [first, *consumer.consume(num_messages=batch_size - 1, timeout=0)]
                records = [m for m in batch if not _is_noise(m)]
                if not records:
                    continue
                self.handle_batch(records)
                for msg in records:
                    consumer.store_offsets(message=msg)
                self.stats.processed += len(records)
        except Stopping:
            log.info("stopped with an unfinished batch; its offsets were not stored")
        finally:
            self.producer.flush(5)
            consumer.close()


def public_message(exc: BaseException) -> str:
    """What a caller, a log line and a DLQ header may say about a failure:
    the error's type and first line, never SQL text or bound values."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line[:300]}".rstrip(": ")


def _is_noise(msg: Message) -> bool:
    err = msg.error()
    if err is None:
        return False
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", err)
    return True


def live_consumer(settings: Settings, joined: threading.Event | None = None) -> Consumer:
    """The group member that reads requests and question events; ``joined`` is
    set once the group has given it an assignment (possibly empty)."""
    consumer = Consumer(
        consumer_config(
            settings,
            settings.consumer_group,
            **{
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Consumer lag per partition for the metrics (see consumer_metrics).
                "statistics.interval.ms": 5000,
                "stats_cb": record_statistics,
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

    consumer.subscribe(consumed_topics(settings), on_assign=on_assign, on_revoke=on_revoke)
    return consumer
