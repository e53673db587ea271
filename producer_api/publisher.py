"""Publishes refresh requests and reports each delivery to an asyncio future.

confluent-kafka's Producer with a poll thread (its AIOProducer batches for up to
a second and rejects headers): delivery callbacks run on that thread and hand
their result to the event loop with call_soon_threadsafe.

A publish ends one of three ways (producer_api/delivery.py): delivered;
``BrokerUnavailable``, certainly not written (no broker connection before
producing, producer_api/broker_link.py, or a refusal of the record); or
``DeliveryUnconfirmed``, not confirmed within ``BROKER_TIMEOUT_S`` and so
perhaps written. That deadline is longer than a partition leader election
(measured in tests/faults/test_kafka_failover.py): a cluster that elects a
new leader is waited for, a dead one is answered at once.

Each publish is a PRODUCER span (``send <topic>``) whose context the record
carries in its ``traceparent`` header: the consumer's span continues it.
confluent-kafka's contrib instrumentation is not used: it wraps the whole
Producer and Consumer, while the context has to be put in the headers here
and taken out in the consumer's bus, which handles records in runs.
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.trace import SpanKind, Status, StatusCode

from producer_api.broker_link import BrokerLink
from producer_api.delivery import BrokerUnavailable, DeliveryUnconfirmed, delivery_failure
from shared.kafka import producer_config
from shared.messages import HEADER_CORRELATION_ID, Headers, header, with_trace_context
from shared.settings import Settings
from shared.tracing import messaging_attributes, tracer

# librdkafka looks for timed-out messages once a second: a message fails between
# message.timeout.ms and a second later (measured: 2.5-3.5 s for 2.5 s).
TIMEOUT_SCAN_S = 1.0
# How often librdkafka reports its broker connections (what puts the link up
# again after an outage); the JSON is a few kilobytes.
STATISTICS_INTERVAL_MS = 1000


class RequestPublisher:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        timeout_ms = int(settings.broker_timeout_s * 1000)
        self._timeout_s = settings.broker_timeout_s
        self.link = BrokerLink()
        self._producer = Producer(
            producer_config(
                settings,
                **{
                    # Give up on a request not delivered within the timeout:
                    # the caller gets 504 with its Location, never a hang.
                    # Asked for a scan interval less, so that librdkafka's
                    # last word on the record comes before the caller's answer.
                    "message.timeout.ms": max(500, timeout_ms - int(TIMEOUT_SCAN_S * 1000)),
                    "socket.connection.setup.timeout.ms": max(1000, timeout_ms),
                    "linger.ms": 0,
                    "error_cb": self._on_error,
                    "statistics.interval.ms": STATISTICS_INTERVAL_MS,
                    "stats_cb": self.link.saw_statistics,
                },
            )
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="request-publisher", daemon=True)
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        # Other errors (one connection lost, a refused connection) are in
        # librdkafka's log already, and leave other brokers in use.
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.link.saw_all_down()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self) -> None:
        self._producer.flush(2)
        self._stop.set()
        self._thread.join(timeout=2)

    def broker_reachable(self) -> bool:
        """Blocking (call it off the event loop): the broker answers a metadata request."""
        try:
            self._producer.list_topics(timeout=1.5)
        except KafkaException:
            return False
        return True

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        attributes = messaging_attributes("send", topic, key=key, conversation_id=header(headers, HEADER_CORRELATION_ID))
        with tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes,
                                          record_exception=False, set_status_on_exception=False) as span:
            try:
                partition, offset = await self._deliver(topic, key, value, with_trace_context(headers))
            except (BrokerUnavailable, DeliveryUnconfirmed) as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            span.set_attributes(messaging_attributes("send", topic, partition=partition, offset=offset))

    async def _deliver(self, topic: str, key: bytes, value: bytes, headers: Headers) -> tuple[int, int]:
        """Where the record was written: (partition, offset)."""
        if not await self.link.usable():
            raise BrokerUnavailable("no connection to any broker")
        delivered: asyncio.Future[tuple[int, int]] = self.loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            self.loop.call_soon_threadsafe(_settle, delivered, err, msg)

        try:
            self._producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
        except (BufferError, KafkaException) as exc:
            raise BrokerUnavailable(str(exc)) from exc
        try:
            # message.timeout.ms normally ends the wait first; this bound holds
            # whatever the client does.
            return await asyncio.wait_for(delivered, self._timeout_s + TIMEOUT_SCAN_S)
        except TimeoutError as exc:
            raise DeliveryUnconfirmed("no delivery report in time") from exc


def _settle(future: asyncio.Future[tuple[int, int]], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is None:
        future.set_result((msg.partition() or 0, msg.offset() or 0))
    else:
        future.set_exception(delivery_failure(err))
