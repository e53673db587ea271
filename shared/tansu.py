"""The Tansu profile (``BROKER_PROFILE=tansu``): everything the service does only
because the dev broker, Tansu 0.6.0, is not Apache Kafka (docs/design.md#test-infrastructure).

Nothing on the Apache Kafka path imports this module; deleting it (and the
profile's name in shared/broker_profile.py) removes Tansu support in one go.

What Tansu gets wrong, and what the profile does about it:
- it forgets producer ids on a restart, and an idempotent producer then goes
  fatal for good: no idempotent producer (correctness rests on the inbox and
  id-based dedup; a retried send written twice is dropped by every reader);
- each group join pauses about session.timeout.ms / 2, and it has no KIP-848
  consumer protocol: the classic protocol with a 6 s session timeout;
- its fetch cost grows with record batches per partition, and a long fetch
  wait hides that cost badly for request/reply: 10 ms fetch wait;
- memory storage: a restart loses every topic. The service makes its topics
  again when a delivery finds one missing, and the API's reply reader follows
  a recreated reply topic (ReplyTopicFollower below);
- end offsets are reported low and offsets_for_times answers 0: a replay
  reads each partition to its end-of-partition event and filters records by
  their timestamps itself.
"""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from shared.broker_profile import BrokerProfile

log = logging.getLogger(__name__)

TANSU = BrokerProfile(
    name="tansu",
    setting_defaults={
        "kafka_group_protocol": "classic",
        "kafka_session_timeout_ms": 6000,
        "kafka_fetch_wait_max_ms": 10,
    },
    producer_overrides={"enable.idempotence": False},
    recreates_lost_topics=True,
    follows_recreated_reply_topic=True,
    replay_reads_to_partition_eof=True,
)


class ReplyTopicFollower:
    """Keeps the API's reply reader on a reply topic that a restarted Tansu
    recreated: the topic's id changes, and its partitions start again at 0
    while the reader's positions are past the new ends (where Tansu answers
    empty fetches, not OFFSET_OUT_OF_RANGE, so nothing else would move them)."""

    def __init__(self, consumer: Consumer, bootstrap_servers: str, topic: str) -> None:
        self._consumer = consumer
        self._topic = topic
        # Topic ids only (no logger: nothing polls this client for log events).
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers})
        self._topic_id: str | None = None
        self._last_high: dict[int, int] = {}

    def positioned(self) -> None:
        """The reader has just been positioned: remember which topic it reads."""
        self._topic_id = self._describe_topic_id()

    def check(self, partitions: list[int], assigned: set[int]) -> set[int]:
        """After a metadata check: the partitions the reader now reads."""
        topic_id = self._describe_topic_id()
        if topic_id is not None and self._topic_id is not None and topic_id != self._topic_id:
            log.warning("reply topic %s was recreated: reading its partitions %s from the beginning",
                        self._topic, partitions)
            self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions])
            assigned = set(partitions)
            self._last_high.clear()
        if topic_id is not None:
            self._topic_id = topic_id
        self._rewind_restarted_partitions(assigned)
        return assigned

    def _describe_topic_id(self) -> str | None:
        """The topic's id, or None when the broker does not tell (or cannot be asked)."""
        try:
            description = self._admin.describe_topics(TopicCollection([self._topic]), request_timeout=2)[self._topic].result()
        except KafkaException:
            return None
        topic_id = description.topic_id
        if topic_id is None or (topic_id.get_most_significant_bits() == 0 and topic_id.get_least_significant_bits() == 0):
            return None
        return str(topic_id)

    def _rewind_restarted_partitions(self, assigned: set[int]) -> None:
        """A partition whose end went backwards was recreated: read it from 0.

        Only a *drop* of the end offset counts: Tansu reports the end as the
        first offset of the last batch + 1, so on a healthy broker the end is
        often behind our position, but it never decreases."""
        positions = self._consumer.position([TopicPartition(self._topic, p) for p in sorted(assigned)])
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
                            self._topic, tp.partition, high, tp.offset)
                self._consumer.seek(TopicPartition(self._topic, tp.partition, OFFSET_BEGINNING))
