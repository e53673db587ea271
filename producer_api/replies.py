"""The reply side of request/reply: one reader of the reply topic per API process.

Every API process reads every partition of the reply topic with ``assign()``
(no consumer group, so no rebalance pauses and no replica can steal another's
replies) and keeps the replies whose correlation id it waits for; the others
belong to other replicas, or to callers that gave up, and are dropped.

A reply can never arrive before its waiter listens: the reader is positioned at
the high watermarks read at start-up, so it sees every reply written after it
started, and a caller registers its future before its request is published.
Partitions an operator adds later are read from their beginning.

A reply topic deleted under a running API is reported (log, /readyz), not
made again behind the operator's back; the Tansu profile, whose broker loses
its topics on a restart, recreates and follows it (shared/tansu.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared.broker_profile import profile_named
from shared.kafka import consumer_config, ensure_topics
from shared.messages import HEADER_CORRELATION_ID, Headers, header, header_pairs, trace_context_of
from shared.settings import Settings
from shared.tracing import messaging_attributes, tracer

log = logging.getLogger(__name__)

PARTITION_CHECK_S = 5.0


@dataclass(frozen=True)
class Reply:
    """A reply record as its waiter gets it: the value, and the headers (its trace context)."""

    value: bytes
    headers: Headers


async def await_reply(future: asyncio.Future[Reply], topic: str, request_id: str, timeout_s: float) -> Reply:
    """Wait for the reply, as a CONSUMER span (``receive <reply topic>``) in
    the request's trace, linked to the consumer's span that sent the reply.
    Raises TimeoutError."""
    attributes = messaging_attributes("receive", topic, conversation_id=request_id)
    with tracer.start_as_current_span(f"receive {topic}", kind=SpanKind.CONSUMER, attributes=attributes) as span:
        reply = await asyncio.wait_for(future, timeout_s)
        sender = trace.get_current_span(trace_context_of(reply.headers)).get_span_context()
        if sender.is_valid:
            span.add_link(sender)
        return reply


class ReplyWaiter:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._waiting: dict[str, asyncio.Future[Reply]] = {}  # touched only on the loop
        self._consumer = Consumer(
            consumer_config(
                settings,
                # assign() needs no group; librdkafka still wants an id.
                f"{settings.consumer_group}-api-{uuid.uuid4()}",
                # Out of range (the topic was recreated, or retention passed us):
                # restart at the oldest reply; unknown ids are dropped anyway.
                **{"enable.auto.commit": False, "auto.offset.reset": "earliest"},
            )
        )
        self._profile = profile_named(settings.broker_profile)
        self._follower = None
        if self._profile.follows_recreated_reply_topic:
            from shared.tansu import ReplyTopicFollower

            self._follower = ReplyTopicFollower(self._consumer, settings.kafka_bootstrap_servers, settings.reply_topic)
        self._assigned: set[int] = set()
        # Set while the reply topic is missing from the broker (shown on /readyz).
        self.topic_missing = False
        self._thread = threading.Thread(target=self._run, name="reply-waiter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()

    # -- on the event loop -------------------------------------------------

    def expect(self, request_id: str) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = self.loop.create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    @property
    def awaited(self) -> int:
        return len(self._waiting)

    def _resolve(self, request_id: str, reply: Reply) -> None:
        future = self._waiting.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(reply)
        # else: another replica's reply, or a late one for a caller that got 504.

    # -- on the reader thread ----------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set() and not self._position_at_end():
            self._stop.wait(1.0)
        next_check = time.monotonic() + PARTITION_CHECK_S
        while not self._stop.is_set():
            msg = self._consumer.poll(0.2)
            if msg is not None:
                self._dispatch(msg)
            if time.monotonic() >= next_check:
                try:
                    self._check_partitions()
                except Exception:  # noqa: BLE001 - the reader must outlive any check
                    log.exception("reply topic check failed")
                next_check = time.monotonic() + PARTITION_CHECK_S

    def _check_partitions(self) -> None:
        """Partitions added to the reply topic by an operator are read from
        their beginning: replies may already be there."""
        topic = self.settings.reply_topic
        try:
            metadata = self._consumer.list_topics(topic, timeout=2).topics[topic]
        except KafkaException:
            return
        if metadata.error is not None:
            if metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                self._on_missing_topic(topic)
            return
        self.topic_missing = False
        new = sorted(set(metadata.partitions) - self._assigned)
        if new:
            self._consumer.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in new])
            self._assigned.update(new)
            log.info("reading replies on new partitions %s of %s", new, topic)
        if self._follower is not None:
            self._assigned = self._follower.check(sorted(metadata.partitions), self._assigned)

    def _on_missing_topic(self, topic: str) -> None:
        if self._profile.recreates_lost_topics:
            try:
                ensure_topics(self.settings, [self.settings.request_topic, topic])
            except KafkaException as exc:
                log.warning("cannot recreate %s: %s", topic, exc)
            return
        if not self.topic_missing:
            log.error("reply topic %s does not exist any more: no reply can reach this API until an operator "
                      "creates it again (see docs/operations.md)", topic)
        self.topic_missing = True

    def _position_at_end(self) -> bool:
        topic = self.settings.reply_topic
        try:
            ensure_topics(self.settings, [self.settings.request_topic, topic])
            metadata = self._consumer.list_topics(topic, timeout=5).topics[topic]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            positions = []
            for partition in sorted(metadata.partitions):
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                positions.append(TopicPartition(topic, partition, high))
        except KafkaException as exc:
            log.warning("reply topic %s not reachable yet: %s", topic, exc)
            return False
        self._consumer.assign(positions)
        self._assigned = {p.partition for p in positions}
        if self._follower is not None:
            self._follower.positioned()
        self.ready.set()
        log.info("reading replies on %s from %s", topic, [(p.partition, p.offset) for p in positions])
        return True

    def _dispatch(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("reply reader: %s", err)
            return
        request_id = header(msg.headers(), HEADER_CORRELATION_ID)
        key = msg.key()
        if request_id is None and key is not None:
            request_id = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if request_id:
            self.loop.call_soon_threadsafe(self._resolve, request_id, Reply(msg.value() or b"", header_pairs(msg.headers())))
