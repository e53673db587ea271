"""The assessment history on PostgreSQL: what each refresh changed, in its
transaction, once; pages newest first; retention by age."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from consumer.handlers import Handlers
from consumer.unit_of_work import REPLAY
from shared import history
from shared.messages import QUESTION_DELETED, QuestionEvent, RefreshRequested
from shared.settings import Settings
from tests.worlds import load, question, standard_changes, standard_world


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url).with_driver()


def changes(engine: Engine, oid: int, **kwargs: object) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return history.page(conn, oid, limit=history.MAX_PAGE, **kwargs).changes  # type: ignore[arg-type]


def test_a_request_records_each_slot_it_changed_with_its_request_id(engine: Engine, settings: Settings) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    request = RefreshRequested(str(uuid.uuid4()), 7, [11, 12])
    Handlers(engine, settings).refresh_requested(request)
    recorded = changes(engine, 11)
    by_slot = {(c["section_idx"], c["question_idx"]): c for c in recorded}
    assert set(by_slot) == {(0, 0), (0, 1)}  # 101 refreshed, 102 replaced; 150 has no alternative
    refreshed, replaced = by_slot[(0, 0)], by_slot[(0, 1)]
    assert (refreshed["kind"], refreshed["old_qid"], refreshed["new_qid"]) == ("refreshed", 101, 101)
    assert refreshed["new_version"] == refreshed["old_version"] + 1  # type: ignore[operator]
    assert (replaced["kind"], replaced["old_qid"]) == ("replaced", 102)
    assert replaced["new_qid"] not in (101, 102, 103)
    assert all(c["trigger"] == {"type": "request", "request_id": request.request_id} for c in recorded)
    assert changes(engine, 12) == []  # unchanged: nothing recorded

    # A second refresh changes nothing and records nothing; the redelivery of the first neither.
    Handlers(engine, settings).refresh_requested(RefreshRequested(str(uuid.uuid4()), 7, [11]))
    Handlers(engine, settings).refresh_requested(request)
    assert changes(engine, 11) == recorded


def test_a_deletion_records_its_event_and_a_replay_adds_only_what_it_changed(
    engine: Engine, settings: Settings
) -> None:
    load(engine, standard_world())
    event = QuestionEvent(str(uuid.uuid4()), QUESTION_DELETED, datetime.now(UTC).isoformat(), qid=102)
    Handlers(engine, settings).question_event(event)
    first = changes(engine, 11)
    assert [(c["kind"], c["old_qid"]) for c in first] == [("replaced", 102)]
    assert first[0]["trigger"] == {"type": QUESTION_DELETED, "event_id": event.event_id, "qid": 102}

    # Replayed, the event finds no assessment using 102 any more: nothing new.
    Handlers(engine, settings, REPLAY).question_event(event)
    assert changes(engine, 11) == first


def test_a_replay_records_only_what_it_changed_and_says_it_was_a_replay(engine: Engine, settings: Settings) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    request = RefreshRequested(str(uuid.uuid4()), 7, [11])
    Handlers(engine, settings).refresh_requested(request)
    first = changes(engine, 11)
    assert len(first) == 2
    Handlers(engine, settings, REPLAY).refresh_requested(request)
    assert changes(engine, 11) == first  # the replay changed nothing: no second record

    # The bank moved on before a second replay: it records what it changed, as a replay.
    load(engine, {"questions": [question(103, text_="question 103, reworded")]})
    Handlers(engine, settings, REPLAY).refresh_requested(request)
    after = changes(engine, 11)
    assert after[1:] == first  # newest first
    assert (after[0]["kind"], after[0]["old_qid"], after[0]["trigger"]) == (
        "refreshed", 103, {"type": "request", "request_id": request.request_id, "replay": True})


def test_pages_follow_the_cursor_newest_first_and_since_filters(engine: Engine, settings: Settings) -> None:
    load(engine, standard_world())
    for n in range(5):
        load(engine, {"questions": [question(101, text_=f"question 101, take {n}")]})
        Handlers(engine, settings).refresh_requested(RefreshRequested(str(uuid.uuid4()), 7, [11]))
    everything = changes(engine, 11)
    assert [c["new_version"] for c in everything] == [6, 5, 4, 3, 2]
    seen, cursor = [], None
    with engine.connect() as conn:
        while True:
            page = history.page(conn, 11, limit=2, after=None if cursor is None else history.Cursor.decode(cursor))
            seen += page.changes
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert seen == everything
    with engine.begin() as conn:
        conn.execute(text("UPDATE assessment_history SET changed_at = changed_at - interval '2 days' "
                          "WHERE new_version <= 3"))
    recent = changes(engine, 11, since=datetime.now(UTC) - timedelta(days=1))
    assert [c["new_version"] for c in recent] == [6, 5, 4]
    with pytest.raises(history.BadCursor):
        history.Cursor.decode("not-a-cursor")


def test_retention_prunes_old_changes_in_batches(engine: Engine, settings: Settings) -> None:
    load(engine, standard_world())
    for n in range(3):
        load(engine, {"questions": [question(101, text_=f"question 101, take {n}")]})
        Handlers(engine, settings).refresh_requested(RefreshRequested(str(uuid.uuid4()), 7, [11]))
    with engine.begin() as conn:
        conn.execute(text("UPDATE assessment_history SET changed_at = changed_at - interval '3 hours' "
                          "WHERE new_version <= 3"))
        assert history.prune(conn, 3600, 1) == 1
        assert history.prune(conn, 3600, 10) == 1
        assert history.prune(conn, 3600, 10) == 0
    assert [c["new_version"] for c in changes(engine, 11)] == [4]


def test_a_fan_out_in_chunks_records_each_chunks_changes_under_the_deletion(engine: Engine, settings: Settings) -> None:
    kind = ("mcq", "go", "medium")
    load(engine, {
        "companies": [{"id": 7, "name": "Acme", "api_keys": ["acme-key-0123456789"]}],
        "questions": [question(q, kind) for q in (500, 501, 502)],
        "assessments": [{"oid": oid, "company_id": 7, "name": f"A{oid}", "sections": [{"name": "S", "qids": [500]}]}
                        for oid in (31, 32, 33)],
    })
    chunked = replace(settings, refresh_chunk_size=1)
    event = QuestionEvent(str(uuid.uuid4()), QUESTION_DELETED, datetime.now(UTC).isoformat(), qid=500)
    Handlers(engine, chunked).question_event(event)  # its chunks too, each in a transaction of its own
    with engine.connect() as conn:
        assert conn.execute(text("SELECT chunks FROM refresh_jobs WHERE job_id = :id"),
                            {"id": event.event_id}).scalar() == 3
    trigger = {"type": QUESTION_DELETED, "event_id": event.event_id, "qid": 500}
    for oid in (31, 32, 33):
        assert [(c["kind"], c["old_qid"], c["trigger"]) for c in changes(engine, oid)] == [("replaced", 500, trigger)]
