"""What a failed publish tells the caller (producer_api/delivery.py) and when
the API decides the broker is unreachable (producer_api/broker_link.py)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from confluent_kafka import KafkaError

from producer_api.broker_link import BrokerLink, any_broker_up
from producer_api.delivery import BrokerUnavailable, DeliveryUnconfirmed, delivery_failure


@pytest.mark.parametrize("code", [
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._QUEUE_FULL,
])
def test_a_refusal_of_the_record_is_certainly_not_written(code: int) -> None:
    assert isinstance(delivery_failure(KafkaError(code)), BrokerUnavailable)


@pytest.mark.parametrize("code", [
    KafkaError._MSG_TIMED_OUT,  # the case of a leader election outlasting the deadline
    KafkaError._TRANSPORT, KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError._PURGE_INFLIGHT, KafkaError.UNKNOWN,
])
def test_any_other_failure_leaves_the_outcome_unknown(code: int) -> None:
    assert isinstance(delivery_failure(KafkaError(code)), DeliveryUnconfirmed)


def stats(*states: str) -> str:
    return json.dumps({"brokers": {f"127.0.0.1:{9092 + i}/{i}": {"state": s} for i, s in enumerate(states)}})


def test_statistics_tell_a_connection_that_is_up() -> None:
    assert any_broker_up(stats("DOWN", "UP"))
    assert any_broker_up(stats("UPDATE"))
    assert not any_broker_up(stats("INIT", "CONNECT", "DOWN", "TRY_CONNECT"))
    assert not any_broker_up("not json") and not any_broker_up("{}")


def test_the_link_is_usable_once_up_and_not_once_every_broker_is_down() -> None:
    link = BrokerLink()
    link.saw_statistics(stats("UP"))
    assert asyncio.run(link.usable(0.0))
    link.saw_all_down()
    assert not asyncio.run(link.usable(5.0)), "down is answered at once, without the start-up wait"
    link.saw_statistics(stats("DOWN", "CONNECT"))
    assert not asyncio.run(link.usable(0.0))
    link.saw_statistics(stats("DOWN", "UP"))
    assert asyncio.run(link.usable(0.0))


def test_at_start_up_a_request_waits_a_little_for_the_first_connection() -> None:
    link = BrokerLink()
    started = time.monotonic()
    assert not asyncio.run(link.usable(0.2))
    assert time.monotonic() - started < 2.0

    async def connect_soon() -> bool:
        asyncio.get_running_loop().call_later(0.1, link.saw_up)
        return await link.usable(5.0)

    assert asyncio.run(connect_soon())
