"""Where each message is handled: which topic carries which messages
(``routes``), and which handler takes each message type (``handlers``).

A handler is a plain function ``(messages, uow)``: it does its work in the
unit of work's transaction, records its result in the inbox, and queues what
to publish. ``runs=True``: consecutive messages of the type may share one
unit of work. ``give_up``: what the DLQ, and a waiting caller, get when the
retry policy stops (by default the DLQ copy alone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from sqlalchemy import Engine

from consumer.bus import Handler, Route
from consumer.chunk_handler import refresh_chunk
from consumer.local_work import handle_work_here
from consumer.ports import Record
from consumer.question_handlers import question_deleted, question_upserts
from consumer.refresh_handler import answer_failed_request, refresh_requests
from consumer.unit_of_work import LIVE, InboxPolicy, Outcome, SqlUnitOfWork
from shared.messages import (
    QuestionDeleted,
    QuestionEvent,
    QuestionUpserted,
    RefreshChunk,
    RefreshRequested,
    decode_question_event,
)
from shared.settings import Settings


def routes(settings: Settings) -> dict[str, Route]:
    return {
        settings.request_topic: Route(_decode_request, undecodable=RefreshRequested),
        settings.question_events_topic: Route(_decode_question_event, event_ids=True),
        settings.work_topic: Route(_decode_chunk),
    }


def handlers(settings: Settings) -> dict[type, Handler[Any]]:
    return {
        RefreshRequested: Handler(partial(refresh_requests, settings), runs=True,
                                  give_up=partial(answer_failed_request, settings)),
        QuestionDeleted: Handler(partial(question_deleted, settings)),
        QuestionUpserted: Handler(question_upserts, runs=True),
        RefreshChunk: Handler(partial(refresh_chunk, settings)),
    }


def _decode_request(record: Record) -> RefreshRequested:
    return RefreshRequested.from_record(record.value(), record.headers())


def _decode_chunk(record: Record) -> RefreshChunk:
    return RefreshChunk.from_json(record.value())


def _decode_question_event(record: Record) -> QuestionDeleted | QuestionUpserted:
    return decode_question_event(record.value())


class Handlers:
    """The handlers called in-process, each call in a committed unit of work of
    its own, without the bus's retries and DLQ (integration tests, the
    benchmark's in-process floor)."""

    def __init__(self, engine: Engine, settings: Settings, policy: InboxPolicy = LIVE) -> None:
        self.engine, self.settings, self.policy = engine, settings, policy
        self._table: Mapping[type, Handler[Any]] = handlers(settings)

    def handle(self, messages: Sequence[object]) -> Outcome:
        """One committed unit of work, and then the chunks of any job it
        started, each in its own (their outgoing messages and published ids
        are merged into the one outcome returned)."""
        outcomes = handle_work_here(self.settings.work_topic, [self._commit(messages)], self._handle_records)
        merged = Outcome()
        for outcome in outcomes:
            merged.outgoing += outcome.outgoing
            merged.published_ids += outcome.published_ids
        return merged

    def _commit(self, messages: Sequence[object]) -> Outcome:
        with SqlUnitOfWork(self.engine, self.policy) as uow:
            self._table[type(messages[0])].handle(messages, uow)
            uow.commit()
        return uow.outcome

    def _handle_records(self, records: Sequence[Record]) -> list[Outcome]:
        decoders = routes(self.settings)
        return [self._commit([decoders[str(record.topic())].decode(record)]) for record in records]

    def refresh_requested(self, request: RefreshRequested, reply_to: str | None = None) -> Outcome:
        return self.handle([replace(request, reply_to=reply_to)])

    def question_event(self, event: QuestionEvent) -> Outcome:
        return self.handle([decode_question_event(event.to_json())])
