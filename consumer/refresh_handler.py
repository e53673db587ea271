"""RefreshRequested: refresh a company's assessments and answer the caller
(its correlation_id, its reply_to), with one result event per changed assessment."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from consumer.bus import Failed
from consumer.consumer_metrics import count_refreshes
from consumer.outgoing import refresh_events, reply
from consumer.refresh_rules import RefreshPlan
from consumer.refresh_store import AssessmentsNotOwned, lock_assessments, lock_for_run, refresh_locked
from consumer.unit_of_work import UnitOfWork
from shared import inbox
from shared.inbox import StoredResult
from shared.log_setup import bind
from shared.messages import HEADER_CORRELATION_ID, HEADER_REPLY_TO, RefreshRequested, header, refresh_event
from shared.settings import Settings

log = logging.getLogger(__name__)


def refresh_requests(settings: Settings, requests: Sequence[RefreshRequested], uow: UnitOfWork) -> None:
    """Refresh and answer a run of requests in one transaction.

    Each refresh is planned and applied on its own (a 403 changes nothing);
    the inbox lookup, the inbox insert and the commit are shared by the run,
    which is what bounds a busy consumer's throughput (requests queued for one
    company are served one after another). A request seen before gets its
    stored reply again and refreshes nothing."""
    stored = uow.stored([r.request_id for r in requests])
    todo: dict[str, RefreshRequested] = {}
    for r in requests:
        if r.request_id not in stored:
            todo.setdefault(r.request_id, r)
    if len(todo) > 1:
        # A run locks all it may touch first, in oid order: no deadlocks between runs.
        lock_for_run(uow.conn, [r.company_id for r in todo.values() if not r.assessment_ids],
                     [oid for r in todo.values() for oid in r.assessment_ids or ()])
    fresh = {request_id: _refresh(uow, r) for request_id, r in todo.items()}
    uow.record(inbox.REFRESH_REQUEST, fresh, {request_id: r.company_id for request_id, r in todo.items()})
    uow.after_commit(lambda: _log_handled(requests, fresh))
    results, events_sent = {**stored, **fresh}, set()
    for request in requests:
        result = results[request.request_id]
        # Events only until they are known to be delivered, so downstream sees
        # each once; the reply always, as a caller may still be waiting for it.
        if result.events and not result.published and request.request_id not in events_sent:
            uow.publish(*refresh_events(settings, result.events, request.request_id))
            uow.mark_published_after_delivery(request.request_id)
        events_sent.add(request.request_id)
        uow.reply(reply(settings, request.reply_to, request.request_id, result.status, result.reply))


def answer_failed_request(settings: Settings, failed: Failed, uow: UnitOfWork) -> None:
    """Given up: dead-letter the record, and answer a waiting caller 500 rather than leave it to time out."""
    uow.publish(failed.dead_letter())
    request = failed.message if isinstance(failed.message, RefreshRequested) else None
    headers = failed.record.headers()
    correlation_id = request.request_id if request else header(headers, HEADER_CORRELATION_ID)
    if correlation_id:
        reply_to = request.reply_to if request else header(headers, HEADER_REPLY_TO)
        body = {"error": f"Error refreshing assessment data: {failed.reason}"}
        uow.reply(reply(settings, reply_to, correlation_id, 500, body))


def _refresh(uow: UnitOfWork, request: RefreshRequested) -> StoredResult:
    try:
        locked = lock_assessments(uow.conn, request.company_id, request.assessment_ids)
    except AssessmentsNotOwned as exc:
        return StoredResult(403, {"error": str(exc)}, [])
    plans = refresh_locked(uow.conn, locked)
    reports = [plan.report() for plan in plans]
    uow.after_commit(lambda: count_refreshes("request", reports))
    trigger = {"type": "request", "request_id": request.request_id}
    company_of = {oid: company for oid, company, _ in locked}
    events = [refresh_event(oid=p.oid, company_id=company_of[p.oid], trigger=trigger, detail=p.report())
              for p in plans if p.changed]
    return StoredResult(200, success_body(request.company_id, plans), events)


def success_body(company_id: int, plans: Sequence[RefreshPlan]) -> dict[str, Any]:
    details = [plan.report() for plan in sorted(plans, key=lambda p: p.oid)]
    return {
        "message": f"Successfully refreshed {len(details)} assessment{'' if len(details) == 1 else 's'}",
        "company_id": company_id,
        "assessments_updated": len(details),
        "details": details,
    }


def _log_handled(requests: Sequence[RefreshRequested], fresh: dict[str, StoredResult]) -> None:
    for request in requests:
        with bind(correlation_id=request.request_id):
            result = fresh.get(request.request_id)
            if result is None:
                log.info("refresh request seen before: re-sending its stored reply")
            else:
                log.info("refresh request handled: %d, %d assessment(s)", result.status, len(result.reply.get("details", [])))
