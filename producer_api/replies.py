"""The reply side of request/reply: one reader of the reply topic per API process.

Every API process reads every partition of the reply topic with ``assign()``
(no consumer group, so no rebalance pauses and no replica can steal another's
replies) and keeps the replies whose correlation id it waits for; the others
belong to other replicas, or to callers that gave up, and are dropped.

A reply can never arrive before its waiter listens: the reader is positioned at
the high watermarks read at start-up, so it sees every reply written after it
started, and a caller registers its future before its request is published.

A broker that comes back without the reply topic (a restarted memory broker)
gets it recreated, by this reader or by a consumer: the topic's id changes, and
the reader then reads every partition of the new topic from its beginning (its
old positions are past the new ends, where Tansu answers empty fetches, not
OFFSET_OUT_OF_RANGE, so nothing else would move them).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from shared.kafka import consumer_config, ensure_topics
from shared.messages import HEADER_CORRELATION_ID, header
from shared.settings import Settings

log = logging.getLogger(__name__)

PARTITION_CHECK_S = 5.0


class ReplyWaiter:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._waiting: dict[str, asyncio.Future[bytes]] = {}  # touched only on the loop
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
        # Topic ids only (no logger: nothing polls this client for log events).
        self._admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
        self._assigned: set[int] = set()
        self._last_high: dict[int, int] = {}
        self._topic_id: str | None = None  # of the reply topic we read
        self._thread = threading.Thread(target=self._run, name="reply-waiter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()

    # -- on the event loop -------------------------------------------------

    def expect(self, request_id: str) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = self.loop.create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    @property
    def awaited(self) -> int:
        return len(self._waiting)

    def _resolve(self, request_id: str, value: bytes) -> None:
        future = self._waiting.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(value)
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
        """Partitions added to the reply topic (by an operator, or a broker that
        recreated it) are read from their beginning: replies may already be there."""
        topic = self.settings.reply_topic
        try:
            metadata = self._consumer.list_topics(topic, timeout=2).topics[topic]
        except KafkaException:
            return
        if metadata.error is not None:
            if metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                try:
                    ensure_topics(self.settings, [self.settings.request_topic, topic])
                except KafkaException as exc:
                    log.warning("cannot recreate %s: %s", topic, exc)
            return
        topic_id = self._describe_topic_id(topic)
        if topic_id is not None and self._topic_id is not None and topic_id != self._topic_id:
            self._read_recreated_topic(topic, sorted(metadata.partitions))
        if topic_id is not None:
            self._topic_id = topic_id
        new = sorted(set(metadata.partitions) - self._assigned)
        if new:
            self._consumer.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in new])
            self._assigned.update(new)
            log.info("reading replies on new partitions %s of %s", new, topic)
        self._rewind_recreated_partitions(topic)

    def _describe_topic_id(self, topic: str) -> str | None:
        """The topic's id, or None when the broker does not tell (or cannot be asked)."""
        try:
            description = self._admin.describe_topics(TopicCollection([topic]), request_timeout=2)[topic].result()
        except KafkaException:
            return None
        topic_id = description.topic_id
        if topic_id is None or (topic_id.get_most_significant_bits() == 0 and topic_id.get_least_significant_bits() == 0):
            return None
        return str(topic_id)

    def _read_recreated_topic(self, topic: str, partitions: list[int]) -> None:
        """The topic was deleted and created again (a memory broker restarted):
        the replies written since are at the start of its new partitions."""
        log.warning("reply topic %s was recreated: reading its partitions %s from the beginning", topic, partitions)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._assigned = set(partitions)
        self._last_high.clear()

    def _rewind_recreated_partitions(self, topic: str) -> None:
        """A partition whose end went backwards was recreated (a memory broker
        restarted): its replies start again at 0, read them.

        Only a *drop* of the end offset counts: Tansu reports the end as the
        first offset of the last batch + 1, so on a healthy broker the end is
        often behind our position, but it never decreases."""
        positions = self._consumer.position([TopicPartition(topic, p) for p in sorted(self._assigned)])
        for tp in positions:
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=2, cached=False)
            except KafkaException:
                return
            previous_high = self._last_high.get(tp.partition, high)
            self._last_high[tp.partition] = high
            if tp.offset < 0:
                continue
            if high < previous_high and high < tp.offset:
                log.warning("reply partition %s[%d] restarted at %d (we were at %d): rewinding",
                            topic, tp.partition, high, tp.offset)
                self._consumer.seek(TopicPartition(topic, tp.partition, OFFSET_BEGINNING))

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
        self._topic_id = self._describe_topic_id(topic)
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
            self.loop.call_soon_threadsafe(self._resolve, request_id, msg.value() or b"")
