"""A run of refresh requests handled in one transaction (one unit of work)
answers every request as handling them one by one does, against PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, text

from consumer.handlers import Handlers
from consumer.unit_of_work import Outcome
from shared.messages import RefreshReply, RefreshRequested
from shared.settings import Settings
from tests.conftest import TABLES
from tests.worlds import load, standard_changes, standard_world


@pytest.fixture
def handlers(engine: Engine, database_url: str) -> Handlers:
    return Handlers(engine, Settings(database_url=database_url).with_driver())


def fresh_world(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    load(engine, standard_world())
    load(engine, standard_changes())


def the_run() -> list[RefreshRequested]:
    first = RefreshRequested(str(uuid.uuid4()), 7, [11])
    return [
        first,
        RefreshRequested(str(uuid.uuid4()), 7, None),  # all of Acme's, after 11 was refreshed
        RefreshRequested(str(uuid.uuid4()), 8, [11, 21]),  # 11 is Acme's: 403, nothing refreshed
        RefreshRequested(str(uuid.uuid4()), 8, None),
        first,  # redelivered within the run
    ]


def per_request(outcome: Outcome, reply_topic: str) -> list[list[Any]]:
    """The messages published for each request: its events, then its reply."""
    out: list[list[Any]] = [[]]
    for message in outcome.outgoing:
        out[-1].append(message)
        if message.topic == reply_topic:
            out.append([])
    return out[:-1]


def replies(outcomes: list[Outcome], reply_topic: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for outcome in outcomes:
        for messages in per_request(outcome, reply_topic):
            reply = RefreshReply.from_json(messages[-1].value)
            out.append((reply.status, reply.body))
    return out


def slots(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT oid, section_idx, question_idx, qid, snapshot_version FROM assessment_slots ORDER BY 1, 2, 3"))]


def test_a_run_answers_as_one_by_one_handling_does(handlers: Handlers, engine: Engine) -> None:
    run = the_run()
    fresh_world(engine)
    reply_topic = handlers.settings.reply_topic
    one_by_one = replies([handlers.refresh_requested(r, None) for r in run], reply_topic)
    state_one_by_one = slots(engine)

    fresh_world(engine)
    as_run = replies([handlers.handle(run)], reply_topic)

    assert [status for status, _ in as_run] == [200, 200, 403, 200, 200]
    assert as_run == one_by_one
    assert as_run[4] == as_run[0], "the redelivered request gets the stored reply"
    assert slots(engine) == state_one_by_one
    assert json.dumps(as_run[1][1]["details"]) != json.dumps(as_run[0][1]["details"])


def test_a_run_publishes_events_once_per_request(handlers: Handlers, engine: Engine) -> None:
    fresh_world(engine)
    run = the_run()
    handled = per_request(handlers.handle(run), handlers.settings.reply_topic)
    event_counts = [len(messages) - 1 for messages in handled]  # the last message is the reply
    assert event_counts[0] >= 1 and event_counts[4] == 0, event_counts
    assert event_counts[2] == 0, "a 403 changes nothing and publishes nothing"
