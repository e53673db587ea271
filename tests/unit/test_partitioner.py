"""The Java client's key partitioning, checked against Kafka's own test vectors
(clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2)."""

from __future__ import annotations

import pytest

from shared.kafka import producer_config
from shared.partitioner import java_partition, murmur2
from shared.settings import Settings

KAFKA_UTILS_TEST_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_UTILS_TEST_VECTORS.items())
def test_murmur2_is_kafkas(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_the_companies_of_the_issue_land_where_java_puts_them() -> None:
    # Six request partitions: companies 501 and 502 both on 3 with the Java client.
    assert [java_partition(str(c).encode(), 6) for c in (501, 502)] == [3, 3]


def test_every_producer_partitions_as_java_unless_told_otherwise() -> None:
    assert producer_config(Settings())["partitioner"] == "murmur2_random"
    assert producer_config(Settings(kafka_partitioner="consistent_random"))["partitioner"] == "consistent_random"
