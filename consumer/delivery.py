"""Publishing: hand every outgoing message to the broker and wait for its
delivery report, under the retry policy (an undelivered message is a
transient failure: the broker is the problem, and waiting fixes it).

Some deliveries a retry cannot fix, and retrying them forever would stop
every partition this member owns: a record over the broker's size limit or a
topic name it refuses is given up and logged (a dead-letter copy that is too
large goes without its value; the original stays at its offset). A reply to
a caller's own ``reply_to`` is that caller's problem alone: it goes through
consumer/caller_replies.py, which gives it one bounded attempt. Our own
topics are another matter: a broker that loses topics (the Tansu profile) gets
them made again; on Apache Kafka an operator deleted one, so it is not ours to
make behind their back: the record waits and ``missing_topics`` names it (/readyz).

Each delivery is traced: a ``send <topic>`` span per topic and handling,
whose context the records carry (consumer/message_spans.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

from consumer import caller_replies
from consumer.caller_replies import CallerReplies
from consumer.dead_letters import truncated
from consumer.message_spans import sending
from consumer.outgoing import Outgoing
from consumer.ports import DeliveryReport, RecordSink
from consumer.retry import POLICY, RetryPolicy, TransientError, retry
from consumer.topics import service_topics
from shared.broker_profile import profile_named
from shared.dlq import DLQ_SUFFIX
from shared.kafka import ensure_topics
from shared.settings import Settings

log = logging.getLogger(__name__)

PERMANENT_DELIVERY_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError._INVALID_ARG,
}
MISSING_TOPIC_ERRORS = {KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART}


class NotDelivered(TransientError):
    """Some messages are not delivered yet."""


class Delivery:
    def __init__(self, settings: Settings, producer: RecordSink, sleep: Callable[[float], None],
                 policy: RetryPolicy = POLICY, reply_producer: RecordSink | None = None) -> None:
        self.settings, self.producer, self.sleep, self.policy = settings, producer, sleep, policy
        self.caller_replies = CallerReplies(settings, reply_producer or producer)
        self.profile = profile_named(settings.broker_profile)
        self.missing_topics: set[str] = set()  # service topics a delivery found missing, until one succeeds

    def publish(self, outgoing: list[Outgoing]) -> None:
        """Deliver every message, or give up those no retry can deliver."""
        if outgoing:
            with sending(outgoing) as traced:
                self._publish(traced)

    def _publish(self, outgoing: list[Outgoing]) -> None:
        self.caller_replies.deliver([item for item in outgoing if self.caller_replies.takes(item)])
        pending = [item for item in outgoing if not self.caller_replies.takes(item)]

        def deliver_pending() -> None:
            nonlocal pending
            failed = self._send(pending)
            pending = [again for item, err in failed if (again := self._after_failure(item, err))]
            if pending:
                raise NotDelivered(f"{len(pending)} message(s) not delivered")

        if pending:
            retry(deliver_pending, self.policy, self.sleep, what="publishing")

    def _send(self, items: list[Outgoing]) -> list[tuple[Outgoing, KafkaError]]:
        """Produce and wait for every delivery report; what failed, and why."""
        failed: list[tuple[Outgoing, KafkaError]] = []

        def report_for(item: Outgoing) -> DeliveryReport:
            def report(err: KafkaError | None, _msg: object) -> None:
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

    def _produce(self, item: Outgoing, report: DeliveryReport) -> None:
        while True:
            try:
                self.producer.produce(item.topic, item.value, item.key, headers=item.headers, on_delivery=report)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.1)

    def _after_failure(self, item: Outgoing, err: KafkaError) -> Outgoing | None:
        """What to send next for a failed delivery: the same record, a smaller one, or nothing."""
        code = err.code()
        if code in PERMANENT_DELIVERY_ERRORS:
            return self._undeliverable(item, err)
        if code in MISSING_TOPIC_ERRORS:
            if self.profile.recreates_lost_topics:
                self._recreate_topics()
            else:
                self.missing_topics.add(item.topic)
                log.error("topic %s does not exist: waiting for an operator to create it again", item.topic)
                return item
        log.warning("cannot deliver to %s: %s", item.topic, err)
        return item

    def _undeliverable(self, item: Outgoing, err: KafkaError) -> Outgoing | None:
        if item.topic.endswith(DLQ_SUFFIX) and err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
            log.error("dead-letter copy for %s too large: sending it without its value", item.topic)
            return truncated(item)
        if item.caller is not None:  # a reply on our reply topic, too large for it
            caller_replies.give_up(item, caller_replies.reason_of(err), err)
            return None
        log.error("giving up a message to %s (%d bytes): %s", item.topic, len(item.value), err)
        return None

    def _recreate_topics(self) -> None:
        """The Tansu profile: a restarted memory broker lost our topics."""
        try:
            ensure_topics(self.settings, service_topics(self.settings))
        except KafkaException as exc:
            log.warning("cannot recreate topics: %s", exc)
