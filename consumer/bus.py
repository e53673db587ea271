"""The message bus: each consumed record is decoded once into a typed message
and handled by the handler registered for its type (the tables are at the
bottom of consumer/handlers.py), in a unit of work, under the retry policy.

Records are handled in the order they came. Consecutive messages of one type
whose handler takes runs share one unit of work (one transaction, one
commit). A run is retried past transient failures only; on any other failure
its records are handled one by one, where the policy finds the culprit and
its handler gives it up. A record that does not decode is given up at once.

Each record handled alone, and each run, is one ``process <topic>`` span in
the trace of the record(s) it handles (consumer/message_spans.py): every
handler is traced, database statements included, without code of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Any, Generic, TypeVar

from consumer import faults
from consumer.consumer_metrics import DEAD_LETTERED, MESSAGES, PROCESSING
from consumer.dead_letters import dead_letter, original_topic
from consumer.log_fields import record_fields
from consumer.message_spans import failed, processing
from consumer.outgoing import Outgoing
from consumer.ports import Record
from consumer.retry import POLICY, GaveUp, RetryPolicy, retry
from consumer.unit_of_work import Outcome, UnitOfWork
from shared.log_setup import bind
from shared.messages import MessageError
from shared.safe_errors import public_message

log = logging.getLogger(__name__)

M = TypeVar("M")


@dataclass(frozen=True)
class Failed:
    """A record given up on, as its handler's ``give_up`` sees it."""

    record: Record
    message: object | None  # None: the record did not decode
    error: Exception
    attempts: int
    replay_id: str | None = None  # stamped on DLQ copies a replay makes (the Tansu profile)

    @property
    def reason(self) -> str:
        return public_message(self.error)

    def dead_letter(self) -> Outgoing:
        return dead_letter(self.record, self.error, self.attempts, self.reason, replay_id=self.replay_id)


def dead_letter_only(failed: Failed, uow: UnitOfWork) -> None:
    uow.publish(failed.dead_letter())


@dataclass(frozen=True)
class Handler(Generic[M]):
    handle: Callable[[Sequence[M], UnitOfWork], None]
    runs: bool = False  # consecutive messages may share one unit of work
    give_up: Callable[[Failed, UnitOfWork], None] = dead_letter_only  # what the DLQ and any caller get


@dataclass(frozen=True)
class Route:
    """The messages one topic carries."""

    decode: Callable[[Record], object]  # raises MessageError
    # Whose handler gives up a record of this topic that does not decode (None: dead-letter only).
    undecodable: type | None = None
    event_ids: bool = False  # log lines about its records carry their event_id


@dataclass
class _Item:
    record: Record
    topic: str
    message: object | None = None
    error: MessageError | None = None
    key: object = None  # what it may share a unit of work with


class MessageBus:
    def __init__(
        self,
        handlers: Mapping[type, Handler[Any]],
        routes: Mapping[str, Route],
        start_uow: Callable[[], UnitOfWork],
        sleep: Callable[[float], None],
        policy: RetryPolicy = POLICY,
        replay_id: str | None = None,
        consumer_group: str | None = None,  # named on the spans
    ) -> None:
        self.handlers, self.routes, self.start_uow, self.sleep = handlers, routes, start_uow, sleep
        self.policy, self.replay_id, self.consumer_group = policy, replay_id, consumer_group

    def handle(self, records: Sequence[Record]) -> list[Outcome]:
        """Handle records in order; what is left to publish, per unit of work."""
        items = [self._decode(record) for record in records]
        outcomes: list[Outcome] = []
        for _, unit in groupby(items, key=lambda item: item.key):
            outcomes += self._handle_unit(list(unit))
        return outcomes

    def _decode(self, record: Record) -> _Item:
        item = _Item(record, original_topic(record))
        route = self.routes.get(item.topic)
        try:
            if route is None:
                raise MessageError(f"no handler for topic {item.topic}")
            item.message = route.decode(record)
        except MessageError as exc:
            item.error = exc
        # Records share a unit of work only with neighbours of the same type whose handler takes runs.
        kind = type(item.message)
        item.key = kind if item.message is not None and self.handlers[kind].runs else object()
        return item

    def _handle_unit(self, unit: list[_Item]) -> list[Outcome]:
        if len(unit) > 1:
            try:
                return [self._run(unit)]
            except GaveUp as exc:
                log.warning("a run of %d records failed (%s); handling them one by one", len(unit),
                            public_message(exc.error))
        return [self._one(item) for item in unit]

    def _run(self, unit: list[_Item]) -> Outcome:
        started, topic = time.perf_counter(), unit[0].topic
        with processing([item.record for item in unit], self.consumer_group) as span:
            try:
                outcome = retry(lambda: self._commit([item.message for item in unit]),
                                replace(self.policy, max_errors=1), self.sleep, what=f"a run of {len(unit)} records",
                                topic=topic)
            except GaveUp as exc:
                failed(span, exc.error, public_message(exc.error))
                raise
        share = (time.perf_counter() - started) / len(unit)
        for _ in unit:
            PROCESSING.labels(topic).observe(share)
        MESSAGES.labels(topic, "ok").inc(len(unit))
        return outcome

    def _one(self, item: _Item) -> Outcome:
        started, record = time.perf_counter(), item.record
        route = self.routes.get(item.topic)
        with bind(**record_fields(record, question_event=route is not None and route.event_ids)), \
                processing([record], self.consumer_group) as span:
            if item.error is not None:
                failed(span, item.error, public_message(item.error))
                outcome = self._give_up(item, item.error, 1)
            else:
                what = f"{record.topic()} [{record.partition()}] @{record.offset()}"
                try:
                    outcome = retry(lambda: self._commit([item.message]), self.policy, self.sleep, what=what,
                                    topic=item.topic)
                except GaveUp as gave_up:
                    failed(span, gave_up.error, public_message(gave_up.error))
                    outcome = self._give_up(item, gave_up.error, gave_up.attempts)
        PROCESSING.labels(item.topic).observe(time.perf_counter() - started)
        MESSAGES.labels(item.topic, "dead_lettered" if outcome.dead_lettered else "ok").inc()
        return outcome

    def _commit(self, messages: list[object]) -> Outcome:
        with self.start_uow() as uow:
            self.handlers[type(messages[0])].handle(messages, uow)
            uow.commit()
        faults.crash_point("after_db_commit")
        return uow.outcome

    def _give_up(self, item: _Item, error: Exception, attempts: int) -> Outcome:
        record = item.record
        log.error("dead-lettering %s [%d] @%d after %d attempt(s): %s", record.topic(), record.partition(),
                  record.offset(), attempts, public_message(error))
        DEAD_LETTERED.labels(item.topic).inc()
        route = self.routes.get(item.topic)
        kind = type(item.message) if item.message is not None else route.undecodable if route else None
        give_up = self.handlers[kind].give_up if kind is not None else dead_letter_only
        with self.start_uow() as uow:
            give_up(Failed(record, item.message, error, attempts, self.replay_id), uow)
            uow.commit()
        uow.outcome.dead_lettered = 1
        return uow.outcome
