"""RefreshRequested: refresh a company's assessments and answer the caller
(its correlation_id, its reply_to), with one result event per changed assessment."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from consumer import jobs
from consumer.bus import Failed
from consumer.chunk_handler import resend_chunks, start_job
from consumer.consumer_metrics import count_refreshes
from consumer.outgoing import refresh_events, reply
from consumer.preview import preview_requests
from consumer.refresh_rules import success_body
from consumer.refresh_store import (
    AssessmentsNotOwned,
    company_sizes,
    lock_assessments,
    lock_for_run,
    owned_oids,
    refresh_locked,
)
from consumer.unit_of_work import UnitOfWork
from shared import history, inbox
from shared.inbox import StoredResult
from shared.log_setup import bind
from shared.messages import (
    HEADER_CORRELATION_ID,
    HEADER_REPLY_TO,
    MessageError,
    RefreshRequested,
    UnexpectedFields,
    header,
    refresh_event,
    request_trigger,
)
from shared.settings import Settings

log = logging.getLogger(__name__)


class ForeignRequestId(MessageError):
    """A request whose id is already another company's (stored, or earlier in
    the run): never answered with that company's result, nor refreshed."""


def refresh_requests(settings: Settings, requests: Sequence[RefreshRequested], uow: UnitOfWork) -> None:
    """Refresh and answer a run of requests in one transaction.

    Each refresh is planned and applied on its own (a 403 changes nothing);
    the inbox lookup, the inbox insert and the commit are shared by the run,
    which is what bounds a busy consumer's throughput (requests queued for one
    company are served one after another). A request seen before gets its
    stored reply again and refreshes nothing.

    A request for more than REFRESH_CHUNK_SIZE assessments is not refreshed
    here: it becomes a job of chunks on the work topic (consumer/chunk_handler),
    whose last chunk answers the caller, so the run moves on at once.

    Previews (``dry_run``) are answered after the run's refreshes, in its
    transaction, and never touch the inbox (consumer/preview.py)."""
    previews = [r for r in requests if r.dry_run]
    if previews:
        refresh_requests(settings, [r for r in requests if not r.dry_run], uow)
        preview_requests(settings, previews, uow)
        return
    stored = uow.stored([r.request_id for r in requests])
    check_owners(requests, stored)
    todo: dict[str, RefreshRequested] = {}
    for r in requests:
        if r.request_id not in stored:
            todo.setdefault(r.request_id, r)
    fresh = _start_jobs(settings, uow, list(todo.values()))
    inline = {request_id: r for request_id, r in todo.items() if request_id not in fresh}
    if len(inline) > 1:
        # A run locks all it may touch first, in oid order: no deadlocks between runs.
        lock_for_run(uow.conn, [r.company_id for r in inline.values() if not r.assessment_ids],
                     [oid for r in inline.values() for oid in r.assessment_ids or ()])
    fresh.update({request_id: _refresh(uow, r) for request_id, r in inline.items()})
    uow.record(inbox.REFRESH_REQUEST, fresh, {request_id: r.company_id for request_id, r in todo.items()})
    uow.after_commit(lambda: _log_handled(requests, fresh))
    results, handled = {**stored, **fresh}, set()
    for request in requests:
        result = results[request.request_id]
        first = request.request_id not in handled
        handled.add(request.request_id)
        if result.status == inbox.IN_PROGRESS:
            # A job's last chunk answers; a redelivery re-sends chunks that may not have gone out.
            if first and request.request_id in stored and not result.published:
                resend_chunks(settings, uow, request.request_id)
            continue
        # Events only until they are known to be delivered, so downstream sees
        # each once; the reply always, as a caller may still be waiting for it.
        if first and result.events and not result.published:
            uow.publish(*refresh_events(settings, result, request.request_id))
            uow.mark_published_after_delivery(request.request_id)
        uow.reply(reply(settings, request.reply_to, request.request_id, result.status, result.reply))


def check_owners(requests: Sequence[RefreshRequested], stored: dict[str, StoredResult]) -> None:
    """A second line of defence behind the broker's ACLs (docs/security.md):
    a stored result goes only to a request of the company it belongs to.

    Only the API's principal may write requests, so a request id reused by
    another company is a forged or broken record: it is given up (the DLQ,
    with this reason, and no reply: its reply_to is not to be trusted) before
    anything is refreshed. Raised for the whole run, the bus then handles its
    records one by one and gives up this one alone."""
    owners = {request_id: (result.kind, result.company_id) for request_id, result in stored.items()}
    for r in requests:
        owner = owners.setdefault(r.request_id, (inbox.REFRESH_REQUEST, r.company_id))
        if owner != (inbox.REFRESH_REQUEST, r.company_id):
            raise ForeignRequestId("the request id is another company's request (or another message's): "
                                   f"nothing refreshed, nothing sent; id {r.request_id}")


def _start_jobs(settings: Settings, uow: UnitOfWork, requests: Sequence[RefreshRequested]) -> dict[str, StoredResult]:
    """The requests too large for one transaction, planned as jobs (or
    answered 403 when they name assessments that are not the company's)."""
    limit = settings.refresh_chunk_size
    sizes = company_sizes(uow.conn, [r.company_id for r in requests if not r.assessment_ids])
    started: dict[str, StoredResult] = {}
    for r in requests:
        size = len(set(r.assessment_ids)) if r.assessment_ids else sizes.get(r.company_id, 0)
        if size <= limit:
            continue
        try:
            oids = owned_oids(uow.conn, r.company_id, r.assessment_ids)
        except AssessmentsNotOwned as exc:
            started[r.request_id] = StoredResult(403, {"error": str(exc)}, [])
            continue
        trigger = request_trigger(r.request_id)
        job = jobs.Job(r.request_id, jobs.REQUEST, r.company_id, r.reply_to, trigger, 0)
        started[r.request_id] = start_job(settings, uow, job, oids)
    return started


def answer_failed_request(settings: Settings, failed: Failed, uow: UnitOfWork) -> None:
    """Given up: dead-letter the record, and answer a waiting caller rather
    than leave it to time out: 400 for fields a request may not name (as over
    REST), 500 otherwise; a request reusing another company's id gets nothing."""
    uow.publish(failed.dead_letter())
    if isinstance(failed.error, ForeignRequestId):
        return  # its reply_to is the forger's: not a word goes there
    request = failed.message if isinstance(failed.message, RefreshRequested) else None
    headers = failed.record.headers()
    correlation_id = request.request_id if request else header(headers, HEADER_CORRELATION_ID)
    if correlation_id:
        reply_to = request.reply_to if request else header(headers, HEADER_REPLY_TO)
        if isinstance(failed.error, UnexpectedFields):
            status, body = 400, {"error": str(failed.error)}
        else:
            status, body = 500, {"error": f"Error refreshing assessment data: {failed.reason}"}
        uow.reply(reply(settings, reply_to, correlation_id, status, body))


def _refresh(uow: UnitOfWork, request: RefreshRequested) -> StoredResult:
    try:
        locked = lock_assessments(uow.conn, request.company_id, request.assessment_ids)
    except AssessmentsNotOwned as exc:
        return StoredResult(403, {"error": str(exc)}, [])
    trigger = request_trigger(request.request_id)
    history.note_trigger(uow.conn, trigger, replay=not uow.policy.stored_results)
    plans = refresh_locked(uow.conn, locked)
    reports = [plan.report() for plan in plans]
    uow.after_commit(lambda: count_refreshes("request", reports))
    company_of = {oid: company for oid, company, _ in locked}
    events = [refresh_event(oid=p.oid, company_id=company_of[p.oid], trigger=trigger, detail=p.report())
              for p in plans if p.changed]
    return StoredResult(200, success_body(request.company_id, [p.report() for p in sorted(plans, key=lambda p: p.oid)]),
                        events)


def _log_handled(requests: Sequence[RefreshRequested], fresh: dict[str, StoredResult]) -> None:
    for request in requests:
        with bind(correlation_id=request.request_id):
            result = fresh.get(request.request_id)
            if result is None:
                log.info("refresh request seen before: re-sending its stored reply")
            else:
                size = result.reply.get("assessments", len(result.reply.get("details", [])))
                log.info("refresh request handled: %d, %d assessment(s)", result.status, size)
