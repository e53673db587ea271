"""A preview (``dry_run``): the report a refresh would give now, and no change.

The preview runs the refresh itself, so that it chooses exactly what the
refresh would: the same ownership check (a 403), the same planner and the
same write statements, in chunks of at most REFRESH_CHUNK_SIZE assessments.
Each chunk runs in a savepoint that is rolled back at once: its slot
updates, its history rows and its row locks end with it (PostgreSQL
releases the locks taken under a savepoint rolled back), so no lock outlives
a chunk and nothing is left when the answer goes out.

Unlike a refresh, a preview is not an inbox entry: it is not looked up (a
redelivered preview is previewed again, never answered with a refresh's
result, and never becomes a refresh) and not recorded, so a later request
cannot be answered with it. The one exception is a report too large for the
reply topic: the claim check needs it stored, under its own kind and key
(shared.inbox.record_preview), where only a preview's reader looks.

A large company's preview is planned chunk by chunk in this handler rather
than as a job on the work topic: a job's rows and records are changes, and a
preview makes none. Its locks are held a chunk at a time, as a job's are.
"""

from __future__ import annotations

import logging
from typing import Any

from consumer import jobs
from consumer.outgoing import reply
from consumer.refresh_rules import RefreshPlan, preview_body
from consumer.refresh_store import AssessmentsNotOwned, lock_by_oids, owned_oids, refresh_locked
from consumer.unit_of_work import UnitOfWork
from shared import inbox
from shared.log_setup import bind
from shared.messages import RefreshReply, RefreshRequested
from shared.settings import Settings

log = logging.getLogger(__name__)


def preview_requests(settings: Settings, requests: list[RefreshRequested], uow: UnitOfWork) -> None:
    for request in requests:
        with bind(correlation_id=request.request_id):
            status, body = _preview(settings, uow, request)
            answer = reply(settings, request.reply_to, request.request_id, status, body)
            if RefreshReply.from_json(answer.value).result_location is not None:
                # Too large to travel inline: stored where the API's preview reader finds it.
                inbox.record_preview(uow.conn, request.request_id, request.company_id, body)
            uow.reply(answer)
            log.info("refresh preview answered %d, %d assessment(s), nothing changed", status,
                     len(body.get("details", ())))


def _preview(settings: Settings, uow: UnitOfWork, request: RefreshRequested) -> tuple[int, dict[str, Any]]:
    try:
        oids = owned_oids(uow.conn, request.company_id, request.assessment_ids)
    except AssessmentsNotOwned as exc:
        return 403, {"error": str(exc)}
    plans: list[RefreshPlan] = []
    for chunk in jobs.split(oids, settings.refresh_chunk_size):
        savepoint = uow.conn.begin_nested()
        try:
            plans += refresh_locked(uow.conn, lock_by_oids(uow.conn, chunk))
        finally:
            savepoint.rollback()
    return 200, preview_body(request.company_id, [p.report() for p in sorted(plans, key=lambda p: p.oid)])
