"""`assessment-refresh replay`: re-read a topic and reprocess it through the same handlers.

The replay reads with ``assign()`` under a group id of its own, so the live
consumer group is untouched; its progress is committed to that group.

- ``question.events``: deletions and upserts are applied again; events older
  than what a question already reflects are skipped (questions.event_time),
  so the bank ends as one pass would have left it.
- ``assessment.refresh.requests``: refreshes run again (no stored-reply
  shortcut: replay means reprocess), result events are published, and no
  reply is sent to callers long gone.
- ``<topic>.dlq``: records go back to their original handler; what still fails
  is dead-lettered again with its first origin.

Where the broker cannot look offsets up by time (Tansu answers 0), the replay
starts earlier and skips records older than --from-time itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from sqlalchemy import Engine
from tqdm import tqdm

from consumer.dead_letters import H_REPLAY_ID
from consumer.worker import Worker
from shared.kafka import consumer_config
from shared.messages import header
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartPoint:
    """Exactly one of: from the beginning, from an offset of one partition, from a time."""

    beginning: bool = False
    partition: int | None = None
    offset: int | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class PartitionPlan:
    partition: int
    start: int
    end: int  # exclusive: the high watermark when the replay started

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class ReplaySummary:
    read: int = 0
    skipped_by_time: int = 0
    reprocessed: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def plan_replay(consumer: Consumer, topic: str, start: StartPoint) -> list[PartitionPlan]:
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise SystemExit(f"error: topic {topic} does not exist or cannot be read")
    partitions = sorted(metadata.partitions)
    if start.partition is not None and start.partition not in partitions:
        raise SystemExit(f"error: topic {topic} has no partition {start.partition}")
    by_time: dict[int, int] = {}
    if start.since is not None:
        wanted = [TopicPartition(topic, p, _ms(start.since)) for p in partitions]
        by_time = {tp.partition: tp.offset for tp in consumer.offsets_for_times(wanted, timeout=10)}
    plans = []
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if start.partition is not None:
            if p != start.partition:
                continue
            first = max(low, start.offset or 0)
        elif start.since is not None:
            found = by_time.get(p, -1)
            first = high if found < 0 else max(low, found)  # -1: nothing at or after that time
        else:
            first = low
        plans.append(PartitionPlan(p, first, high))
    return plans


def run_replay(
    settings: Settings,
    engine: Engine,
    topic: str,
    start: StartPoint,
    *,
    until: datetime | None = None,
    group_id: str | None = None,
    dry_run: bool = False,
    quiet: bool = False,
) -> ReplaySummary:
    group = group_id or f"{settings.consumer_group}-replay-{int(time.time())}"
    consumer = Consumer(consumer_config(settings, group, **{"enable.auto.commit": False, "enable.partition.eof": True}))
    summary = ReplaySummary()
    try:
        plans = plan_replay(consumer, topic, start)
        for plan in plans:
            print(f"partition {plan.partition}: offsets {plan.start}..{plan.end} ({plan.count} records)")
        total = sum(p.count for p in plans)
        print(f"{total} records to read from {topic} with group {group}")
        if dry_run or total == 0:
            return summary
        summary = _replay(settings, engine, consumer, topic, plans, start.since, until, quiet)
    finally:
        consumer.close()
    print(
        f"replayed {summary.reprocessed} of {summary.read} records read from {topic} "
        f"({summary.skipped_by_time} outside the time window, {summary.dead_lettered} dead-lettered) "
        f"in {summary.seconds:.1f} s"
    )
    return summary


def _replay(
    settings: Settings,
    engine: Engine,
    consumer: Consumer,
    topic: str,
    plans: list[PartitionPlan],
    since: datetime | None,
    until: datetime | None,
    quiet: bool,
) -> ReplaySummary:
    worker = Worker(settings, engine, replay=True)
    summary = ReplaySummary()
    started = time.monotonic()
    # A partition is done at end-of-partition, not at the high watermark seen at
    # start: Tansu reports that watermark low (DESIGN.md section 7), and a
    # replay that stopped there would miss the tail of the last batch.
    remaining = {p.partition for p in plans if p.count}
    consumer.assign([TopicPartition(topic, p.partition, p.start or OFFSET_BEGINNING) for p in plans if p.count])
    since_ms = _ms(since) if since else None
    until_ms = _ms(until) if until else None
    with tqdm(total=sum(p.count for p in plans), unit="msg", disable=quiet, desc=topic) as bar:
        while remaining:
            # As in the live loop: wait for one record, take what is fetched.
            first = consumer.poll(1.0)
            batch = [] if first is None else [first, *consumer.consume(num_messages=999, timeout=0)]
            records: list[Message] = []
            next_offsets: dict[int, int] = {}
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    remaining.discard(msg.partition())
                    continue
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None  # a record, not an event
                next_offsets[partition] = offset + 1
                if header(msg.headers(), H_REPLAY_ID) == worker.replay_id:
                    # Dead-lettered back into this topic by this very replay: the
                    # next replay (after the next fix) takes it, not this one.
                    continue
                summary.read += 1
                stamp = msg.timestamp()[1]
                if (since_ms is not None and stamp < since_ms) or (until_ms is not None and stamp > until_ms):
                    summary.skipped_by_time += 1
                else:
                    records.append(msg)
            before = worker.stats.dead_lettered
            worker.handle_batch(records)
            summary.reprocessed += len(records)
            summary.dead_lettered += worker.stats.dead_lettered - before
            if next_offsets:
                consumer.commit(
                    offsets=[TopicPartition(topic, p, o) for p, o in next_offsets.items()], asynchronous=False
                )
            bar.update(sum(1 for msg in batch if msg.error() is None))
    worker.producer.flush(10)
    summary.seconds = time.monotonic() - started
    return summary
