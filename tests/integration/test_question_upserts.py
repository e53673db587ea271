"""A run of question.upserted events handled as one set (one unit of work)
against PostgreSQL: it must leave the bank exactly as handling the events one by
one (Handlers.question_event) does, in a number of statements that does not grow
with the run."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from consumer.handlers import Handlers
from consumer.unit_of_work import REPLAY
from shared.messages import QUESTION_UPSERTED, QuestionEvent, QuestionUpserted, decode_question_event, new_id
from shared.settings import Settings
from tests.conftest import TABLES
from tests.worlds import load, question, standard_world


@pytest.fixture
def handlers(engine: Engine, database_url: str) -> Handlers:
    load(engine, standard_world())
    return Handlers(engine, Settings(database_url=database_url).with_driver())


def upsert(qid: int, text_: str, at: str) -> QuestionEvent:
    return QuestionEvent(new_id(), QUESTION_UPSERTED, at, question=question(qid, text_=text_))


def bank(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT qid, version, content, deleted, event_time FROM questions ORDER BY qid"))]


def changed_flags(engine: Engine, events: list[QuestionEvent]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT message_id, reply FROM processed_messages WHERE message_id = ANY(:ids)"),
                            {"ids": [e.event_id for e in events]})
        return {r.message_id: r.reply["changed"] for r in rows}


def events_story() -> list[QuestionEvent]:
    """Two rewordings of 101 in order, an old event for 102 after a newer one,
    a new question 900, and an unchanged 103."""
    return [
        upsert(101, "101 v2", "2026-11-28T10:00:00Z"),
        upsert(102, "102 new", "2026-11-28T10:05:00Z"),
        upsert(101, "101 v3", "2026-11-28T10:01:00Z"),
        upsert(102, "102 old", "2026-11-28T10:04:00Z"),  # older than the one before: changes nothing
        upsert(900, "brand new", "2026-11-28T10:00:00Z"),
        upsert(103, "question 103", "2026-11-28T10:00:00Z"),  # same content as loaded
    ]


def as_run(events: list[QuestionEvent]) -> list[QuestionUpserted]:
    run = [decode_question_event(e.to_json()) for e in events]
    assert all(isinstance(e, QuestionUpserted) for e in run)
    return run  # type: ignore[return-value]


def test_a_run_leaves_the_bank_as_one_by_one_handling_does(handlers: Handlers, engine: Engine) -> None:
    story = events_story()
    for e in story:
        handlers.question_event(e)
    one_by_one, one_by_one_flags = bank(engine), changed_flags(engine, story)

    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    load(engine, standard_world())
    handlers.handle(as_run(story))

    assert bank(engine) == one_by_one
    assert changed_flags(engine, story) == one_by_one_flags
    assert {row[0]: row[1] for row in one_by_one}[101] == 3, "two rewordings, two new versions"
    assert [one_by_one_flags[e.event_id] for e in story] == [1, 1, 1, 0, 1, 0]


def test_a_redelivered_run_changes_nothing(handlers: Handlers, engine: Engine) -> None:
    story = events_story()
    handlers.handle(as_run(story))
    before = bank(engine)
    handled = handlers.handle(as_run(story))
    assert bank(engine) == before
    assert handled.outgoing == []


def test_a_replayed_run_overwrites_its_inbox_rows_and_leaves_the_bank(handlers: Handlers, engine: Engine) -> None:
    story = events_story()
    handlers.handle(as_run(story))
    before = bank(engine)
    Handlers(engine, handlers.settings, REPLAY).handle(as_run(story))
    assert bank(engine) == before
    assert set(changed_flags(engine, story).values()) == {0}, "on replay nothing changes any more"


def test_statements_do_not_grow_with_the_run(handlers: Handlers, engine: Engine) -> None:
    counts = Counter[str]()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Ours only: a connection the pool opens runs the dialect's own set-up queries.
        if "processed_messages" in statement or "questions" in statement:
            counts["statements"] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        handlers.handle(as_run([upsert(2000 + i, f"q{i}", "2026-11-28T10:00:00Z") for i in range(10)]))
        small = counts["statements"]
        counts.clear()
        handlers.handle(as_run([upsert(3000 + i, f"q{i}", "2026-11-28T10:00:00Z") for i in range(1000)]))
        large = counts["statements"]
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert small == large == 3, (small, large)
