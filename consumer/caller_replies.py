"""Replies to the topic a caller named in ``reply_to``: that caller's problem alone.

A client of its own (FastStream, Spring, a script) may name a reply topic
that does not exist, that the consumer's principal may not write, or whose
records the broker refuses (too large). Retrying such a reply would hold the
lane, every request and question event behind it, for the whole delivery
timeout, and never succeed. So these replies go their own way:

- a ``reply_to`` naming one of the service's own topics (requests, question
  events, work, result events, any ``.dlq``) is refused without a write: a
  forged request must not make the service write into its own inputs;
- the topic is looked up in the broker's metadata first (a cached answer
  for a topic seen writable): unknown or not authorized, it is given up at once;
- otherwise the reply gets one delivery of at most REPLY_TIMEOUT_S on a
  producer of its own (not idempotent: a reply sent twice is harmless, and
  a failed one cannot make the lane's idempotent producer fatal), which never
  creates a topic on a broker that auto-creates them.

A reply given up is logged with the request id and the reason and counted
(``assessment_refresh_consumer_replies_undeliverable_total``); the refresh
itself is committed, and its result readable at the request's Location.
Replies to the service's own reply topic are not this module's: they are
the lane's own deliveries (consumer/delivery.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from consumer.consumer_metrics import REPLIES_UNDELIVERABLE
from consumer.outgoing import Outgoing
from consumer.ports import RecordSink
from consumer.topics import service_topics
from shared.dlq import DLQ_SUFFIX
from shared.kafka import producer_config
from shared.log_setup import bind
from shared.messages import status_location
from shared.settings import Settings

log = logging.getLogger(__name__)

# One delivery attempt of a caller's reply, at most (librdkafka looks for
# timed-out messages once a second: it fails between this and a second later).
REPLY_TIMEOUT_S = 1.5
# How long a metadata lookup of a caller's topic may take; when it does not
# answer in time the reply is sent anyway (bounded by REPLY_TIMEOUT_S).
LOOKUP_TIMEOUT_S = 1.0
# A topic found writable is not looked up again for this long.
KNOWN_GOOD_S = 60.0

OWN_TOPIC, UNKNOWN_TOPIC, NOT_AUTHORIZED, TOO_LARGE, NOT_DELIVERED = (
    "own_topic", "unknown_topic", "not_authorized", "too_large", "not_delivered")

_BY_ERROR = {
    KafkaError.UNKNOWN_TOPIC_OR_PART: UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_TOPIC: UNKNOWN_TOPIC,
    KafkaError.TOPIC_AUTHORIZATION_FAILED: NOT_AUTHORIZED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: NOT_AUTHORIZED,
    KafkaError.MSG_SIZE_TOO_LARGE: TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE: TOO_LARGE,
}


def reply_producer_config(settings: Settings) -> dict[str, Any]:
    return producer_config(settings, **{
        "message.timeout.ms": int(REPLY_TIMEOUT_S * 1000),
        "enable.idempotence": False,
        # A forged or mistyped reply_to must not create topics on a broker
        # that auto-creates them (the stock default): the caller makes its topic.
        "allow.auto.create.topics": False,
    })


def reason_of(err: KafkaError) -> str:
    return _BY_ERROR.get(err.code(), NOT_DELIVERED)


def give_up(item: Outgoing, reason: str, detail: object) -> None:
    """Log and count a reply that will not reach its caller."""
    REPLIES_UNDELIVERABLE.labels(reason).inc()
    with bind(correlation_id=item.caller):
        log.error("reply to %s given up (%s: %s); the result stays readable at %s", item.topic, reason, detail,
                  status_location(item.caller or ""))


class CallerReplies:
    def __init__(self, settings: Settings, producer: RecordSink) -> None:
        self.settings, self.producer = settings, producer
        self.refused = set(service_topics(settings)) - {settings.reply_topic}
        self._writable_until: dict[str, float] = {}

    def takes(self, item: Outgoing) -> bool:
        """A reply to a topic other than the service's own reply topic."""
        return item.caller is not None and item.topic != self.settings.reply_topic

    def deliver(self, items: list[Outgoing]) -> None:
        """Send each reply once, giving up those that cannot go; never raises,
        and returns within about REPLY_TIMEOUT_S + LOOKUP_TIMEOUT_S."""
        sent = 0
        for item in items:
            refusal = self._refusal(item)
            if refusal is not None:
                give_up(item, *refusal)
                continue
            try:
                self.producer.produce(item.topic, item.value, item.key, headers=item.headers,
                                      on_delivery=self._report(item))
                sent += 1
            except BufferError:
                give_up(item, NOT_DELIVERED, "the local queue is full")
            except KafkaException as exc:
                give_up(item, reason_of(exc.args[0]), exc.args[0])
        if sent:
            self.producer.flush(REPLY_TIMEOUT_S + 1.5)

    def _report(self, item: Outgoing) -> Any:
        def report(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                self._writable_until.pop(item.topic, None)
                give_up(item, reason_of(err), err)

        return report

    def _refusal(self, item: Outgoing) -> tuple[str, str] | None:
        topic = item.topic
        if topic in self.refused or topic.endswith(DLQ_SUFFIX):
            return OWN_TOPIC, "reply_to names a topic of the service"
        if self._writable_until.get(topic, 0.0) > time.monotonic():
            return None
        try:
            metadata = self.producer.list_topics(topic, timeout=LOOKUP_TIMEOUT_S)
        except KafkaException:
            return None  # no answer in time: the delivery attempt decides
        found = metadata.topics.get(topic) if metadata is not None else None
        err = getattr(found, "error", None)
        if found is None or (err is not None and reason_of(err) == UNKNOWN_TOPIC):
            return UNKNOWN_TOPIC, "the topic does not exist"
        if err is not None and reason_of(err) == NOT_AUTHORIZED:
            return NOT_AUTHORIZED, err
        if err is None:
            self._writable_until[topic] = time.monotonic() + KNOWN_GOOD_S
        return None
