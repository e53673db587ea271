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

Each partition is read from its planned start to the end offset planned when
the replay started (a time window becomes offsets through the broker's
offsets_for_times), so what the replay itself dead-letters into a topic it
reads is left for the next replay. On the Tansu profile, whose broker reports
end offsets low and answers 0 to offsets_for_times, a replay reads to
end-of-partition and filters records by their timestamps instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from sqlalchemy import Engine
from tqdm import tqdm

from consumer.unit_of_work import REPLAY, SqlUnitOfWork
from consumer.worker import Worker
from shared.broker_profile import profile_named
from shared.dlq import H_REPLAY_ID
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


def plan_replay(consumer: Consumer, topic: str, start: StartPoint, until: datetime | None = None) -> list[PartitionPlan]:
    """Per partition, the offsets to read: [start, end) with end the high
    watermark now, or the first offset after ``until``."""
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise SystemExit(f"error: topic {topic} does not exist or cannot be read")
    partitions = sorted(metadata.partitions)
    if start.partition is not None and start.partition not in partitions:
        raise SystemExit(f"error: topic {topic} has no partition {start.partition}")
    since = _offsets_at(consumer, topic, partitions, start.since)
    to = _offsets_at(consumer, topic, partitions, until, after=True)
    plans = []
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if start.partition is not None:
            if p != start.partition:
                continue
            first = max(low, start.offset or 0)
        elif start.since is not None:
            found = since[p]
            first = high if found < 0 else max(low, found)  # -1: nothing at or after that time
        else:
            first = low
        end = high if until is None or to[p] < 0 else min(high, to[p])
        plans.append(PartitionPlan(p, first, max(first, end)))
    return plans


def _offsets_at(
    consumer: Consumer, topic: str, partitions: list[int], moment: datetime | None, *, after: bool = False
) -> dict[int, int]:
    """The first offset at (or, ``after``, past) ``moment`` per partition; -1: none."""
    if moment is None:
        return {}
    ms = _ms(moment) + (1 if after else 0)
    wanted = [TopicPartition(topic, p, ms) for p in partitions]
    return {tp.partition: tp.offset for tp in consumer.offsets_for_times(wanted, timeout=10)}


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
        plans = plan_replay(consumer, topic, start, until)
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
    worker = Worker(settings, partial(SqlUnitOfWork, engine), policy=REPLAY)
    to_eof = profile_named(settings.broker_profile).replay_reads_to_partition_eof
    summary = ReplaySummary()
    started = time.monotonic()
    # partition -> the offset it is done at (planned), or None: at end-of-partition (Tansu).
    remaining: dict[int, int | None] = {p.partition: (None if to_eof else p.end) for p in plans if p.count}
    consumer.assign([TopicPartition(topic, p.partition, p.start or OFFSET_BEGINNING) for p in plans if p.count])
    window = _RecordTimeWindow(since, until) if to_eof else None
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
                    # At the end: on Kafka past the planned end too (an end
                    # offset may be a transaction marker, never delivered).
                    remaining.pop(msg.partition() or 0, None)
                    continue
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None  # a record, not an event
                if partition not in remaining:
                    continue  # past its planned end, fetched along with the rest
                end = remaining[partition]
                if end is not None and offset >= end:
                    remaining.pop(partition)
                    continue
                next_offsets[partition] = offset + 1
                if end is not None and offset + 1 >= end:
                    remaining.pop(partition)
                if worker.replay_id is not None and header(msg.headers(), H_REPLAY_ID) == worker.replay_id:
                    # Dead-lettered back into this topic by this very replay: the
                    # next replay (after the next fix) takes it, not this one.
                    continue
                summary.read += 1
                if window is not None and not window.holds(msg):
                    summary.skipped_by_time += 1
                else:
                    records.append(msg)
                bar.update(1)
            before = worker.stats.dead_lettered
            worker.handle_batch(records)
            summary.reprocessed += len(records)
            summary.dead_lettered += worker.stats.dead_lettered - before
            if next_offsets:
                consumer.commit(
                    offsets=[TopicPartition(topic, p, o) for p, o in next_offsets.items()], asynchronous=False
                )
    worker.producer.flush(10)
    summary.seconds = time.monotonic() - started
    return summary


@dataclass(frozen=True)
class _RecordTimeWindow:
    """The Tansu profile's stand-in for offsets_for_times: keep records by timestamp."""

    since: datetime | None
    until: datetime | None

    def holds(self, msg: Message) -> bool:
        stamp = msg.timestamp()[1]
        return not ((self.since is not None and stamp < _ms(self.since)) or (self.until is not None and stamp > _ms(self.until)))
