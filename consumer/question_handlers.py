"""The question bank's events: QuestionDeleted refreshes every assessment that
uses the question; QuestionUpserted writes the bank and refreshes nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from sqlalchemy import text

from consumer import jobs
from consumer.bank import Deletion, mark_deleted, upsert_changed
from consumer.chunk_handler import resend_chunks, start_job
from consumer.consumer_metrics import count_refreshes
from consumer.outgoing import refresh_events
from consumer.refresh_store import lock_by_oids, refresh_locked
from consumer.unit_of_work import UnitOfWork
from shared import history, inbox
from shared.inbox import StoredResult
from shared.log_setup import bind
from shared.messages import (
    QUESTION_DELETED,
    QUESTION_UPSERTED,
    QuestionDeleted,
    QuestionUpserted,
    deletion_trigger,
    refresh_completed_event,
    refresh_event,
)
from shared.questions import QuestionData
from shared.settings import Settings

log = logging.getLogger(__name__)


def question_deleted(settings: Settings, events: Sequence[QuestionDeleted], uow: UnitOfWork) -> None:
    """Mark the question deleted and refresh, in every company, each assessment
    that uses it; one result event per changed assessment, then one
    ``refresh.completed`` summary. More than REFRESH_CHUNK_SIZE assessments
    are refreshed as a job of chunks (consumer/chunk_handler.py), whose last
    chunk publishes the summary."""
    for event in events:
        stored = uow.stored([event.event_id]).get(event.event_id)
        if stored is None:
            stored = _delete_and_refresh(settings, uow, event)
            uow.record(inbox.QUESTION_DELETED, {event.event_id: stored})
        elif stored.status == inbox.IN_PROGRESS and not stored.published:
            resend_chunks(settings, uow, event.event_id)  # a redelivery: its chunks may never have gone out
        uow.after_commit(partial(_log_deleted, event, stored))
        if stored.events and not stored.published:
            uow.publish(*refresh_events(settings, stored, event.event_id))
            uow.mark_published_after_delivery(event.event_id)


def _delete_and_refresh(settings: Settings, uow: UnitOfWork, event: QuestionDeleted) -> StoredResult:
    outcome = mark_deleted(uow.conn, event.qid, event.occurred_at)
    if outcome is Deletion.UNKNOWN:
        log.warning("question.deleted %s names unknown question %d: nothing to do", event.event_id, event.qid)
        return StoredResult(404, {"error": f"unknown question {event.qid}"}, [])
    if outcome is Deletion.STALE:
        return StoredResult(409, {"error": f"question {event.qid} reflects a newer event"}, [])
    oids = list(uow.conn.execute(
        text("SELECT DISTINCT oid FROM assessment_slots WHERE qid = :qid ORDER BY oid"), {"qid": event.qid}
    ).scalars())
    trigger = deletion_trigger(event.event_id, event.qid)
    if len(oids) > settings.refresh_chunk_size:
        return start_job(settings, uow, jobs.Job(event.event_id, jobs.DELETION, None, None, trigger, 0), oids)
    locked = lock_by_oids(uow.conn, oids)
    history.note_trigger(uow.conn, trigger, replay=not uow.policy.stored_results)
    plans = refresh_locked(uow.conn, locked)
    reports = [plan.report() for plan in plans]
    uow.after_commit(lambda: count_refreshes(QUESTION_DELETED, reports))
    company_of = {oid: company for oid, company, _ in locked}
    events = [refresh_event(oid=p.oid, company_id=company_of[p.oid], trigger=trigger, detail=p.report())
              for p in plans if p.changed]
    totals = {
        "assessments": len(plans),
        "changed": len(events),
        "questions_refreshed": sum(len(p.refreshed_qids) for p in plans),
        "deleted_questions_replaced": sum(len(p.replacements) for p in plans),
        "deleted_questions_not_replaced": sum(len(p.failures) for p in plans),
        "chunks": 0,
    }
    return StoredResult(200, totals, [*events, refresh_completed_event(trigger=trigger, totals=totals)])


def _log_deleted(event: QuestionDeleted, stored: StoredResult) -> None:
    with bind(event_id=event.event_id):
        log.info("%s %d: %d %s", QUESTION_DELETED, event.qid, stored.status, json.dumps(stored.reply))


def question_upserts(events: Sequence[QuestionUpserted], uow: UnitOfWork) -> None:
    """A run of question.upserted events in one transaction, with a number of
    statements that does not grow with the run's length (replay reads them by
    the hundred thousand).

    Events for one qid are applied in order, one statement per round: round k
    writes the k-th event of every qid in the run, so the rows end as applying
    the events one by one would leave them (versions included). Nothing is
    published."""
    done = uow.stored([event.event_id for event in events])
    todo: dict[str, QuestionUpserted] = {}
    for event in events:
        if event.event_id not in done:
            todo.setdefault(event.event_id, event)
    rounds: list[list[tuple[str, QuestionData, datetime]]] = []
    seen: dict[int, int] = {}
    for event_id, event in todo.items():
        k = seen.get(event.question.qid, 0)
        seen[event.question.qid] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append((event_id, event.question, event.occurred_at))
    changed_events: set[str] = set()
    for writes in rounds:
        changed = set(upsert_changed(uow.conn, [q for _, q, _ in writes], [at for _, _, at in writes]))
        changed_events.update(event_id for event_id, q, _ in writes if q.qid in changed)
    results = {
        event_id: StoredResult(200, {"applied": QUESTION_UPSERTED, "changed": int(event_id in changed_events)}, [])
        for event_id in todo
    }
    uow.record(inbox.QUESTION_UPSERTED, results)
    uow.after_commit(lambda: log.info("%d question.upserted event(s) applied, %d changed the bank",
                                      len(results), len(changed_events)))
