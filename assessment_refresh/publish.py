"""`assessment-refresh publish question-deleted QID`: send a question event as the bank would.

For trying the automatic path (and for operators re-announcing a deletion)
without hand-writing JSON: the event gets a fresh event_id and the current
time, goes to QUESTION_EVENTS_TOPIC keyed by its qid (so one question's
events stay in order), with the producer settings every client of the
service uses (KAFKA_* properties included).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shared.kafka import producer_config
from shared.messages import QUESTION_DELETED, QuestionEvent, new_id, record_headers, utc_now_iso
from shared.settings import Settings


def question_deleted(qid: int) -> QuestionEvent:
    return QuestionEvent(new_id(), QUESTION_DELETED, utc_now_iso(), qid=qid)


def publish_event(settings: Settings, event: QuestionEvent, timeout_s: float = 15.0) -> tuple[int, int]:
    """Deliver one event; (partition, offset) once the broker has it."""
    producer = Producer(producer_config(settings, **{"message.timeout.ms": int(timeout_s * 1000)}))
    where: list[tuple[int, int]] = []
    failed: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            where.append((msg.partition() or 0, msg.offset() or 0))

    producer.produce(settings.question_events_topic, event.to_json(), event.key(),
                     headers=record_headers(), on_delivery=report)
    producer.flush(timeout_s + 5)
    if failed or not where:
        raise KafkaException(failed[0] if failed else KafkaError(KafkaError._MSG_TIMED_OUT))
    return where[0]
