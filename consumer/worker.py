"""One consumer-group member's poll loop, which keeps the delivery contract
(docs/design.md#delivery-guarantees): at least once, effects once.

A batch is handled by the bus (each handler's effects commit together with
its inbox rows), everything it left to publish is delivered, and only then
are its offsets stored (librdkafka commits stored offsets every second, on
revoke and on close). A crash anywhere before that redelivers the batch, and
the inbox turns the redelivery into re-sending the stored results.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Producer

from consumer.bus import Handler, MessageBus
from consumer.caller_replies import reply_producer_config
from consumer.delivery import Delivery
from consumer.handlers import handlers, routes
from consumer.local_work import handle_work_here
from consumer.ports import Record, RecordSink, RecordSource
from consumer.retry import POLICY, GaveUp, Stopping, retry
from consumer.unit_of_work import LIVE, REPLAY, InboxPolicy, UnitOfWork
from shared.broker_profile import profile_named
from shared.kafka import producer_config
from shared.messages import new_id
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Stats:
    processed: int = 0
    dead_lettered: int = 0


class Worker:
    """``new_uow(policy)`` opens a unit of work; ``policy`` is LIVE, or REPLAY
    for consumer.replay. ``producer``, ``handler_table`` and ``sleep`` are
    seams for the fast tests."""

    def __init__(self, settings: Settings, new_uow: Callable[[InboxPolicy], UnitOfWork], *,
                 policy: InboxPolicy = LIVE, producer: RecordSink | None = None,
                 handler_table: Mapping[type, Handler[Any]] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.stats = Stats()
        self.settings, self.policy = settings, policy
        self.stopping = threading.Event()
        self.start_uow = partial(new_uow, policy)
        self.sleep = sleep or self._wait
        self.producer = producer or Producer(producer_config(settings, **{"message.timeout.ms": 10000}))
        # Replies to callers' own topics: a producer of their own (consumer/caller_replies.py);
        # a replay answers no one and needs none.
        self.reply_producer = producer or (Producer(reply_producer_config(settings)) if policy.replies
                                           else self.producer)
        self.delivery = Delivery(settings, self.producer, self.sleep, reply_producer=self.reply_producer)
        # The Tansu profile's replays read to end-of-partition: what a replay
        # dead-letters is stamped, so that replaying a DLQ does not read back
        # (and fail again on) what it wrote there itself.
        replaying = policy is REPLAY and profile_named(settings.broker_profile).replay_reads_to_partition_eof
        self.replay_id = new_id() if replaying else None
        self.bus = MessageBus(handler_table or handlers(settings), routes(settings), self.start_uow, self.sleep,
                              replay_id=self.replay_id, consumer_group=settings.consumer_group)

    @property
    def missing_topics(self) -> set[str]:
        return self.delivery.missing_topics

    def run(self, consumer: RecordSource, batch_size: int = 100) -> None:
        """Consume until stopped; the consumer is closed on the way out (which
        commits the stored offsets and leaves the group)."""
        try:
            while not self.stopping.is_set():
                records = _poll(consumer, batch_size)
                if records:
                    self.handle_batch(records)
                    for record in records:
                        consumer.store_offsets(message=record)
                    self.stats.processed += len(records)
        except Stopping:
            log.info("stopped with an unfinished batch; its offsets were not stored")
        finally:
            self.producer.flush(5)
            self.reply_producer.flush(2)
            consumer.close()

    def handle_batch(self, records: Sequence[Record]) -> None:
        """Handle, publish, then mark published; the caller stores the offsets after."""
        outcomes = self.bus.handle(records)
        if self.policy is REPLAY:
            # A replay finishes the jobs it starts: their chunks are handled here, not by the work lanes.
            outcomes = handle_work_here(self.settings.work_topic, outcomes, self.bus.handle)
        self.delivery.publish([message for outcome in outcomes for message in outcome.outgoing])
        self._mark_published([message_id for outcome in outcomes for message_id in outcome.published_ids])
        self.stats.dead_lettered += sum(outcome.dead_lettered for outcome in outcomes)

    def _mark_published(self, message_ids: list[str]) -> None:
        def mark() -> None:
            with self.start_uow() as uow:
                uow.mark_published(message_ids)
                uow.commit()

        if message_ids:
            try:
                retry(mark, POLICY, self.sleep, what=f"marking {len(message_ids)} inbox row(s) published")
            except GaveUp as exc:  # only an optimisation: a redelivery would publish their events again
                log.error("cannot mark delivered results published: %s", exc)

    def _wait(self, seconds: float) -> None:
        """Back off; a stop request ends the wait and the unfinished batch."""
        if self.stopping.wait(seconds):
            raise Stopping


def _poll(consumer: RecordSource, batch_size: int) -> list[Record]:
    # poll() returns as soon as one record is there; the rest of a batch is
    # what is already fetched. (consume(n, timeout) would wait the whole
    # timeout for n records: 0.5 s per request.)
    first = consumer.poll(0.5)
    if first is None:
        return []
    return [msg for msg in [first, *consumer.consume(num_messages=batch_size - 1, timeout=0)] if not _is_noise(msg)]


def _is_noise(msg: Record) -> bool:
    err = msg.error()
    if err is None:
        return False
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", err)
    return True
