"""Message handlers: (message, engine) -> messages to publish.

Each handler does its database work in one transaction, records the result in
the inbox in that same transaction, and returns what must be published
(reply, result events). The poll loop publishes them and only then stores the
offset, so a crash anywhere re-runs the handler, which then finds the inbox
row and re-publishes the stored result instead of refreshing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from consumer import inbox
from consumer.bank import Deletion, QuestionData, mark_deleted, upsert_changed
from consumer.consumer_metrics import count_refreshes
from consumer.loader import LoadError, parse_question
from consumer.refresh_rules import RefreshPlan
from consumer.refresh_store import (
    AssessmentsNotOwned,
    lock_assessments,
    lock_by_oids,
    lock_for_run,
    refresh_locked,
)
from shared.kafka import is_topic_name
from shared.log_setup import bind
from shared.messages import (
    CONTENT_TYPE_JSON,
    HEADER_CONTENT_TYPE,
    HEADER_CORRELATION_ID,
    QUESTION_DELETED,
    QUESTION_UPSERTED,
    REFRESH_REQUEST_KIND,
    Headers,
    MessageError,
    QuestionEvent,
    RefreshReply,
    RefreshRequested,
    encode,
    parse_timestamp,
    refresh_event,
)
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


@dataclass(frozen=True)
class Handled:
    """What to publish for one record, and the inbox row to mark published after."""

    outgoing: list[Outgoing]
    inbox_id: str | None = None
    dead_lettered: bool = False


class DuplicateInFlight(Exception):
    """Another consumer recorded the same message id first; retrying finds its result."""


def success_body(company_id: int, plans: Sequence[RefreshPlan]) -> dict[str, Any]:
    details = [plan.report() for plan in sorted(plans, key=lambda p: p.oid)]
    return {
        "message": f"Successfully refreshed {len(details)} assessments",
        "company_id": company_id,
        "assessments_updated": len(details),
        "details": details,
    }


def error_reply(request_id: str, status: int, message: str) -> RefreshReply:
    return RefreshReply(request_id, status, {"error": message})


def _events_for(plans: Sequence[RefreshPlan], company_of: dict[int, int], trigger: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        refresh_event(oid=p.oid, company_id=company_of[p.oid], trigger=trigger, detail=p.report())
        for p in plans
        if p.changed
    ]


class Handlers:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        # Reports of the refreshes in the open transaction, counted in the
        # metrics once it commits (a rolled-back refresh counts nothing).
        self._reports: list[tuple[str, dict[str, Any]]] = []

    def _count_committed(self) -> None:
        for trigger, report in self._reports:
            count_refreshes(trigger, [report])
        self._reports.clear()

    # -- outgoing messages -------------------------------------------------

    def reply_message(self, reply_to: str | None, reply: RefreshReply) -> Outgoing:
        if reply_to is not None and not is_topic_name(reply_to):
            # Not a topic anyone can read: answer on our own reply topic (the API
            # replicas drop ids they do not wait for) rather than never moving on.
            log.warning("request %s: reply_to is not a valid topic name, replying on %s",
                        reply.request_id, self.settings.reply_topic)
            reply_to = None
        return Outgoing(
            reply_to or self.settings.reply_topic,
            reply.request_id.encode(),
            reply.to_json(),
            [(HEADER_CORRELATION_ID, reply.request_id.encode()), (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode())],
        )

    def _events(self, events: list[dict[str, Any]], correlation_id: str) -> list[Outgoing]:
        return [
            Outgoing(
                self.settings.refresh_events_topic,
                str(e["oid"]).encode(),
                encode(e),
                [(HEADER_CORRELATION_ID, correlation_id.encode()), (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode())],
            )
            for e in events
        ]

    # -- refresh requested (REST) -----------------------------------------

    def refresh_requested(
        self, request: RefreshRequested, reply_to: str | None, *, replay: bool = False
    ) -> Handled:
        """Refresh and answer. On replay, re-run the refresh (no stored-reply
        shortcut) and publish result events, but send no reply: the caller is gone."""
        return self.refresh_requests([(request, reply_to)], replay=replay)[0]

    def refresh_requests(
        self, items: Sequence[tuple[RefreshRequested, str | None]], *, replay: bool = False
    ) -> list[Handled]:
        """Refresh and answer a run of requests in one transaction.

        Each refresh is planned and applied on its own (a 403 changes nothing);
        the inbox lookup, the inbox insert and the commit are shared by the run,
        which is what bounds a busy consumer's throughput (requests queued for
        one company are served one after another). A failure anywhere undoes
        the whole run; the caller retries it, or handles its records one by one."""
        self._reports.clear()
        with self.engine.begin() as conn:
            stored = {} if replay else inbox.find_many(conn, [request.request_id for request, _ in items])
            todo = [request for request, _ in items if request.request_id not in stored]
            if len(todo) > 1:
                lock_for_run(
                    conn,
                    [r.company_id for r in todo if not r.assessment_ids],
                    [oid for r in todo for oid in r.assessment_ids or ()],
                )
            fresh: dict[str, inbox.StoredResult] = {}
            owners: dict[str, int | None] = {}
            for request, _ in items:
                request_id = request.request_id
                if request_id not in stored and request_id not in fresh:
                    fresh[request_id] = self._refresh(conn, request)
                    owners[request_id] = request.company_id
            if not inbox.record_many(conn, REFRESH_REQUEST_KIND, fresh, owners, overwrite=replay):
                raise DuplicateInFlight(f"one of {len(fresh)} requests")
        self._count_committed()
        for request, _ in items:
            with bind(correlation_id=request.request_id):
                if request.request_id in fresh:
                    result = fresh[request.request_id]
                    log.info("refresh request handled: %d, %d assessment(s)", result.status,
                             len(result.reply.get("details", [])))
                else:
                    log.info("refresh request seen before: re-sending its stored reply")
        results = {**stored, **fresh}
        handled, events_sent = [], set()
        for request, reply_to in items:
            request_id = request.request_id
            result = results[request_id]
            # The reply is always (re)sent: a caller may still wait for it. Events
            # only until they are known to be delivered, so downstream sees each once.
            events = [] if result.published or request_id in events_sent else self._events(result.events, request_id)
            events_sent.add(request_id)
            out = list(events)
            if not replay:
                out.append(self.reply_message(reply_to, RefreshReply(request_id, result.status, result.reply)))
            # Marked published after delivery only when there were events to publish.
            handled.append(Handled(out, request_id if events else None))
        return handled

    def _refresh(self, conn: Connection, request: RefreshRequested) -> inbox.StoredResult:
        try:
            locked = lock_assessments(conn, request.company_id, request.assessment_ids)
        except AssessmentsNotOwned as exc:
            return inbox.StoredResult(403, {"error": str(exc)}, [])
        plans = refresh_locked(conn, locked)
        self._reports += [("request", plan.report()) for plan in plans]
        trigger = {"type": "request", "request_id": request.request_id}
        events = _events_for(plans, {oid: company for oid, company, _ in locked}, trigger)
        return inbox.StoredResult(200, success_body(request.company_id, plans), events)

    # -- question events (upstream bank) ------------------------------------

    def question_event(self, event: QuestionEvent, *, replay: bool = False) -> Handled:
        if event.type != QUESTION_DELETED:
            try:
                question = parse_question(event.question, f"event {event.event_id}")
            except LoadError as exc:  # a bad question is a bad message: dead-letter at once
                raise MessageError(str(exc)) from exc
            return self.question_upserts([(event, question)], replay=replay)[0]
        assert event.qid is not None
        self._reports.clear()
        with self.engine.begin() as conn:
            stored = None if replay else inbox.find(conn, event.event_id)
            if stored is None:
                stored = self._question_deleted(conn, event.event_id, event.qid, parse_timestamp(event.occurred_at))
                if not inbox.record(conn, event.event_id, event.type, None, stored, overwrite=replay):
                    raise DuplicateInFlight(event.event_id)
        self._count_committed()
        with bind(event_id=event.event_id):
            log.info("%s %d: %d %s", event.type, event.qid, stored.status, json.dumps(stored.reply))
        events = [] if stored.published else self._events(stored.events, event.event_id)
        return Handled(events, event.event_id if events else None)

    def question_upserts(
        self, items: Sequence[tuple[QuestionEvent, QuestionData]], *, replay: bool = False
    ) -> list[Handled]:
        """A run of checked question.upserted events in one transaction, with
        a number of statements that does not grow with the run's length
        (replay reads them by the hundred thousand).

        Events for one qid are applied in order, one statement per round: round
        k writes the k-th event of every qid in the run, so the rows end as
        applying the events one by one would leave them (versions included).
        Nothing is published."""
        with self.engine.begin() as conn:
            done = {} if replay else inbox.find_many(conn, [event.event_id for event, _ in items])
            todo: dict[str, tuple[QuestionEvent, QuestionData]] = {}
            for event, question in items:
                if event.event_id not in done and event.event_id not in todo:
                    todo[event.event_id] = (event, question)
            rounds: list[list[tuple[str, QuestionData, datetime]]] = []
            seen: dict[int, int] = {}
            for event_id, (event, question) in todo.items():
                k = seen.get(question.qid, 0)
                seen[question.qid] = k + 1
                if k == len(rounds):
                    rounds.append([])
                rounds[k].append((event_id, question, parse_timestamp(event.occurred_at)))
            changed_events: set[str] = set()
            for writes in rounds:
                changed = set(upsert_changed(conn, [q for _, q, _ in writes], [at for _, _, at in writes]))
                changed_events.update(event_id for event_id, q, _ in writes if q.qid in changed)
            results = {
                event_id: inbox.StoredResult(200, {"applied": event.type, "changed": int(event_id in changed_events)}, [])
                for event_id, (event, _) in todo.items()
            }
            if not inbox.record_many(conn, QUESTION_UPSERTED, results, overwrite=replay):
                raise DuplicateInFlight(f"one of {len(results)} question events")
        log.info("%d question.upserted event(s) applied, %d changed the bank", len(results), len(changed_events))
        return [Handled([]) for _ in items]

    def _question_deleted(
        self, conn: Connection, event_id: str, qid: int, occurred_at: datetime
    ) -> inbox.StoredResult:
        outcome = mark_deleted(conn, qid, occurred_at)
        if outcome is Deletion.UNKNOWN:
            log.warning("question.deleted %s names unknown question %d: nothing to do", event_id, qid)
            return inbox.StoredResult(404, {"error": f"unknown question {qid}"}, [])
        if outcome is Deletion.STALE:
            return inbox.StoredResult(409, {"error": f"question {qid} reflects a newer event"}, [])
        oids = list(
            conn.execute(
                text("SELECT DISTINCT oid FROM assessment_slots WHERE qid = :qid ORDER BY oid"), {"qid": qid}
            ).scalars()
        )
        locked = lock_by_oids(conn, oids)
        plans = refresh_locked(conn, locked)
        self._reports += [(QUESTION_DELETED, plan.report()) for plan in plans]
        trigger = {"type": QUESTION_DELETED, "event_id": event_id, "qid": qid}
        events = _events_for(plans, {oid: company for oid, company, _ in locked}, trigger)
        return inbox.StoredResult(200, {"assessments_refreshed": len(plans), "changed": len(events)}, events)

