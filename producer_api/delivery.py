"""What a failed publish tells the caller: certainly not written, or unknown.

A 503 says "nothing happened, send it again"; it must be true. A record the
producer handed to a broker and whose delivery was not confirmed (a timeout
while a partition leader is being elected, a connection dropped with the
request in flight) may be in the log and then is processed under its
request id: that outcome is unknown, answered 504 with the request's
Location, never 503.

librdkafka knows whether a failed message was ever transmitted
(``rd_kafka_message_status``: not / possibly persisted), but
confluent-kafka-python does not expose it (its Message has no status), so
the certainty comes from the error itself: an error raised by ``produce()``
(the record never left the process) or one of the refusals below, which the
client or the broker gives for the record itself. Every other error is
unknown, whatever it is: a new error code is never mistaken for "not written".
"""

from __future__ import annotations

from confluent_kafka import KafkaError


class BrokerUnavailable(Exception):
    """The request was certainly not written: the caller may send it again (503)."""


class DeliveryUnconfirmed(Exception):
    """The request may have been written: its outcome is unknown (504 with its Location)."""


# Refusals of the record itself, by the client before sending or by the broker
# instead of appending it.
NOT_WRITTEN = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError._QUEUE_FULL,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
})


def delivery_failure(err: KafkaError) -> BrokerUnavailable | DeliveryUnconfirmed:
    """The exception a failed delivery report stands for."""
    if err.code() in NOT_WRITTEN:
        return BrokerUnavailable(err.str())
    return DeliveryUnconfirmed(err.str())
