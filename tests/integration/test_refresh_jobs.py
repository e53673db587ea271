"""Large refreshes as jobs of bounded chunks, against a real PostgreSQL
(docs/design.md#delivery-guarantees, "Bounded work"; consumer/chunk_handler.py).

The handlers run in-process with a small REFRESH_CHUNK_SIZE; a job's chunks
are either run by Handlers itself (as the work lanes would) or one by one by
the test, to stop "a consumer" half-way and redeliver.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from consumer.handlers import Handlers
from consumer.local_work import LocalRecord
from consumer.outgoing import Outgoing
from consumer.unit_of_work import REPLAY, Outcome
from shared.messages import QUESTION_DELETED, QuestionEvent, RefreshChunk, RefreshReply, RefreshRequested, utc_now_iso
from shared.settings import Settings
from tests.worlds import load, question

KIND = ("mcq", "python", "medium")
COMPANY, OTHER = 7, 8
OIDS = list(range(1001, 1012))  # 11 assessments of company 7: chunks of 3 -> 4 chunks


def world() -> dict[str, Any]:
    """Company 7: 11 assessments, each with question 500 (to be deleted; public
    alternatives 600-619), its own question 700+i (to go stale) and 800. Company 8:
    one assessment using 500 too."""
    questions = [question(500, KIND), question(800, ("mcq", "sql", "easy"))]
    questions += [question(600 + i, KIND) for i in range(20)]
    questions += [question(700 + i, ("essay", "go", "hard"), company_id=COMPANY) for i in range(len(OIDS))]
    assessments = [
        {"oid": oid, "company_id": COMPANY, "name": f"A{oid}",
         "sections": [{"name": "S", "qids": [500, 700 + i]}, {"name": "T", "qids": [800]}]}
        for i, oid in enumerate(OIDS)
    ]
    assessments.append({"oid": 2001, "company_id": OTHER, "name": "B", "sections": [{"name": "S", "qids": [500]}]})
    return {"companies": [{"id": COMPANY, "name": "Acme", "api_keys": []}, {"id": OTHER, "name": "Globex", "api_keys": []}],
            "questions": questions, "assessments": assessments}


def changes() -> dict[str, Any]:
    """500 deleted, every 700+i of even i edited."""
    return {"questions": [question(500, KIND, deleted=True)]
            + [question(700 + i, ("essay", "go", "hard"), company_id=COMPANY, text_=f"new {i}")
               for i in range(0, len(OIDS), 2)]}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, refresh_chunk_size=3).with_driver()


@pytest.fixture
def changed(engine: Engine) -> Engine:
    load(engine, world())
    load(engine, changes())
    return engine


def replies(settings: Settings, outcome: Outcome) -> list[RefreshReply]:
    return [RefreshReply.from_json(m.value) for m in outcome.outgoing if m.topic == settings.reply_topic]


def events(settings: Settings, outcome: Outcome) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in outcome.outgoing if m.topic == settings.refresh_events_topic]


def chunk_messages(settings: Settings, outcome: Outcome) -> list[Outgoing]:
    return [m for m in outcome.outgoing if m.topic == settings.work_topic]


def job_row(engine: Engine, job_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM refresh_jobs WHERE job_id = :id"), {"id": job_id}).one()


def chunk_sizes(engine: Engine, job_id: str) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT cardinality(oids) FROM refresh_job_chunks WHERE job_id = :id ORDER BY idx"),
                                 {"id": job_id}).scalars())


class StepByStep(Handlers):
    """Handlers whose jobs' chunks are left queued (a work lane that has not run yet)."""

    def handle(self, messages: Any) -> Outcome:
        return self._commit(messages)

    def chunk(self, message: Outgoing) -> Outcome:
        return self._commit([RefreshChunk.from_json(LocalRecord(message).value())])


def test_a_whole_company_job_answers_the_report_one_transaction_would_give(changed: Engine, settings: Settings,
                                                                           database_url: str) -> None:
    # The same refresh in one transaction, on a copy of the world, is the reference.
    one_go = Handlers(changed, replace(settings, refresh_chunk_size=1000))
    chunked = Handlers(changed, settings)
    snapshot = _slots(changed)

    request_id = str(uuid.uuid4())
    outcome = chunked.refresh_requested(RefreshRequested(request_id, COMPANY, None))
    [reply] = replies(settings, outcome)
    chunked_slots = _slots(changed)

    # Undo, and refresh again in one transaction.
    _restore(changed, snapshot)
    [reference] = replies(settings, one_go.refresh_requested(RefreshRequested(str(uuid.uuid4()), COMPANY, None)))

    assert reply.status == 200
    assert reply.body == reference.body
    assert [d["oid"] for d in reply.body["details"]] == OIDS
    assert reply.body["message"] == f"Successfully refreshed {len(OIDS)} assessments"
    assert all(d["deleted_questions_replaced"] == 1 for d in reply.body["details"])
    assert sum(d["questions_refreshed"] for d in reply.body["details"]) == 6
    assert _slots(changed) == chunked_slots, "chunks replace exactly as one transaction does"
    # Bounded: 4 chunks of at most 3 assessments, each its own committed transaction.
    assert chunk_sizes(changed, request_id) == [3, 3, 3, 2]
    job = job_row(changed, request_id)
    assert (job.chunks, job.chunks_done, job.assessments, job.changed) == (4, 4, 11, 11)
    assert job.completed_at is not None


def test_no_transaction_of_a_job_touches_more_assessments_than_the_chunk_size(changed: Engine, settings: Settings) -> None:
    locked: list[int] = []

    def count_locked(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "FOR UPDATE" in statement and "FROM assessments" in statement and isinstance(parameters, dict):
            locked.append(len(parameters.get("oids", [])))

    event.listen(changed, "before_cursor_execute", count_locked)
    try:
        outcome = Handlers(changed, settings).refresh_requested(RefreshRequested(str(uuid.uuid4()), COMPANY, None))
    finally:
        event.remove(changed, "before_cursor_execute", count_locked)
    assert replies(settings, outcome)[0].status == 200
    assert locked and max(locked) <= settings.refresh_chunk_size
    assert sum(locked) == len(OIDS)


def test_a_long_list_with_another_companys_id_is_403_and_starts_nothing(changed: Engine, settings: Settings) -> None:
    request_id = str(uuid.uuid4())
    outcome = Handlers(changed, settings).refresh_requested(RefreshRequested(request_id, COMPANY, [*OIDS, 2001, 9999]))
    [reply] = replies(settings, outcome)
    assert (reply.status, reply.body) == (403, {"error": "Assessment IDs do not belong to company or do not exist: [2001, 9999]"})
    assert chunk_messages(settings, outcome) == [] and events(settings, outcome) == []
    with changed.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM refresh_jobs")).scalar() == 0


def test_a_crash_midway_redoes_only_the_unfinished_chunks(changed: Engine, settings: Settings) -> None:
    handlers = StepByStep(changed, settings)
    request = RefreshRequested(str(uuid.uuid4()), COMPANY, None)
    started = handlers.refresh_requested(request)
    assert replies(settings, started) == [], "a job's caller is answered by its last chunk"
    queued = chunk_messages(settings, started)
    assert len(queued) == 4
    assert len({m.key for m in queued}) == 4, "chunks are keyed apart, to spread over partitions"

    first = handlers.chunk(queued[0])
    first_events = events(settings, first)
    assert len(first_events) == 3 and replies(settings, first) == []
    # The consumer stops here without marking the request's row published;
    # the request is redelivered: only the three unfinished chunks go out again.
    again = handlers.refresh_requested(request)
    resent = chunk_messages(settings, again)
    assert [json.loads(m.value)["chunk"] for m in resent] == [1, 2, 3]
    assert replies(settings, again) == []
    # The first chunk redelivered too: its stored events again, nothing refreshed twice.
    with changed.connect() as conn:
        before = conn.execute(text("SELECT refreshed_at FROM assessments WHERE oid = :oid"), {"oid": OIDS[0]}).scalar()
    repeat = handlers.chunk(queued[0])
    assert [e["event_id"] for e in events(settings, repeat)] == [e["event_id"] for e in first_events]
    with changed.connect() as conn:
        assert conn.execute(text("SELECT refreshed_at FROM assessments WHERE oid = :oid"), {"oid": OIDS[0]}).scalar() == before
        assert job_row(changed, request.request_id).chunks_done == 1

    outcomes = [handlers.chunk(m) for m in resent]
    assert [len(replies(settings, o)) for o in outcomes] == [0, 0, 1], "the last chunk answers, once"
    [reply] = replies(settings, outcomes[-1])
    assert [d["oid"] for d in reply.body["details"]] == OIDS
    # A redelivered request now gets the stored full report.
    [stored] = replies(settings, handlers.refresh_requested(request))
    assert stored == reply


def test_a_deletion_fan_out_publishes_per_chunk_then_one_summary(changed: Engine, settings: Settings) -> None:
    handlers = StepByStep(changed, settings)
    event_id = str(uuid.uuid4())
    started = handlers.question_event(QuestionEvent(event_id, QUESTION_DELETED, utc_now_iso(), qid=500))
    queued = chunk_messages(settings, started)
    assert len(queued) == 4 and events(settings, started) == []  # 12 assessments use 500: chunks of 3
    published = [events(settings, handlers.chunk(m)) for m in queued]
    assert [len(batch) for batch in published] == [3, 3, 3, 4], "3 changed each, the last one also the summary"
    summary = published[-1][-1]
    assert summary["type"] == "refresh.completed"
    assert summary["trigger"] == {"type": QUESTION_DELETED, "event_id": event_id, "qid": 500}
    assert {k: summary[k] for k in ("assessments", "changed", "deleted_questions_replaced",
                                    "deleted_questions_not_replaced", "chunks")} == {
        "assessments": 12, "changed": 12, "deleted_questions_replaced": 12, "deleted_questions_not_replaced": 0,
        "chunks": 4}
    refreshed = [e for batch in published for e in batch if e["type"] == "assessment.refreshed"]
    assert sorted(e["oid"] for e in refreshed) == sorted([*OIDS, 2001])
    assert all(e["trigger"]["event_id"] == event_id for e in refreshed)
    # Every company got visible replacements only (2001's company owns none: public 600-619).
    assert all(600 <= e["detail"]["replacements"][0]["new_qid"] < 620 for e in refreshed)


def test_a_replay_runs_the_chunks_itself_and_leaves_a_single_pass_result(changed: Engine, settings: Settings) -> None:
    request = RefreshRequested(str(uuid.uuid4()), COMPANY, None)
    [live] = replies(settings, Handlers(changed, settings).refresh_requested(request))
    slots_after = _slots(changed)
    replayed = Handlers(changed, settings, policy=REPLAY).refresh_requested(request)
    assert replies(settings, replayed) == [], "no reply to a caller long gone"
    assert chunk_messages(settings, replayed) == []
    assert _slots(changed) == slots_after
    job = job_row(changed, request.request_id)
    assert (job.chunks, job.chunks_done) == (4, 4)
    with changed.connect() as conn:
        stored = conn.execute(text("SELECT status, reply FROM processed_messages WHERE message_id = :id"),
                              {"id": request.request_id}).one()
    assert stored.status == 200
    assert [d["oid"] for d in stored.reply["details"]] == OIDS
    assert all(d["status"] == "unchanged" for d in stored.reply["details"]), "the second pass changes nothing"
    assert live.body["assessments_updated"] == stored.reply["assessments_updated"]


def test_a_report_too_large_for_the_reply_topic_is_a_claim_check(changed: Engine, settings: Settings) -> None:
    small_replies = replace(settings, reply_inline_max_bytes=200)
    request = RefreshRequested(str(uuid.uuid4()), COMPANY, None)
    [reply] = replies(small_replies, Handlers(changed, small_replies).refresh_requested(request))
    assert reply.result_location == f"/assessments/refresh-requests/{request.request_id}"
    assert "details" not in reply.body and reply.body["assessments_updated"] == len(OIDS)
    with changed.connect() as conn:
        stored = conn.execute(text("SELECT reply FROM processed_messages WHERE message_id = :id"),
                              {"id": request.request_id}).scalar()
    assert [d["oid"] for d in stored["details"]] == OIDS


def _slots(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT oid, section_idx, question_idx, qid, snapshot_version, snapshot "
                                 "FROM assessment_slots ORDER BY 1, 2, 3")).all()


def _restore(engine: Engine, rows: list[Any]) -> None:
    with engine.begin() as conn:
        for r in rows:
            conn.execute(
                text("UPDATE assessment_slots s SET qid = :qid, snapshot_version = :v, snapshot = CAST(:snapshot AS jsonb) "
                     "WHERE oid = :oid AND section_idx = :s AND question_idx = :q"),
                {"qid": r.qid, "v": r.snapshot_version, "snapshot": json.dumps(r.snapshot), "oid": r.oid,
                 "s": r.section_idx, "q": r.question_idx},
            )
