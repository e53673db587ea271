"""The read model of async mode: where an accepted request's result is read from.

A request accepted with ``Prefer: respond-async`` is recorded here
(refresh_requests, this module's table) before it is published: a row without
a result is pending, no row is unknown (or another company's).

Its result is what the consumer stored in its inbox, read through the inbox's
own module (shared.inbox): every reply the consumer computes is stored there,
so any API replica can answer. A request that fails for good is dead-lettered
and its 500 is only published, never stored (the refresh transaction rolled
back), so the accepting API also keeps the reply it saw on the reply topic
here. The consumer's record wins: a replay from the dead-letter topic may have
replaced a 500 with a success since.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from shared import inbox
from shared.messages import RefreshReply


@dataclass(frozen=True)
class StoredOutcome:
    status: int | None  # None: pending
    body: dict[str, Any] | None


def record_accepted(engine: Engine, request_id: str, company_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO refresh_requests (request_id, company_id) VALUES (:id, :company) "
                 "ON CONFLICT (request_id) DO NOTHING"),
            {"id": request_id, "company": company_id},
        )


def stored_result(engine: Engine, request_id: str, company_id: int) -> StoredOutcome | None:
    """The consumer's stored result of a request, whether or not it was accepted in async mode."""
    with engine.connect() as conn:
        result = inbox.refresh_result(conn, request_id, company_id)
    return None if result is None else StoredOutcome(result.status, result.reply)


def forget_accepted(engine: Engine, request_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM refresh_requests WHERE request_id = :id"), {"id": request_id})


def keep_reply(engine: Engine, request_id: str, reply: RefreshReply) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE refresh_requests SET reply_status = :status, reply = CAST(:reply AS jsonb), "
                "replied_at = now() WHERE request_id = :id"
            ),
            {"id": request_id, "status": reply.status, "reply": json.dumps(reply.body)},
        )


def find(engine: Engine, request_id: str, company_id: int) -> StoredOutcome | None:
    """None if the company has no such request: neither accepted here (async
    mode, a timed-out wait) nor answered by the consumer (whatever client sent
    it: a reply too large for the reply topic points here)."""
    with engine.connect() as conn:
        result = inbox.refresh_result(conn, request_id, company_id)
        accepted = conn.execute(
            text("SELECT reply_status, reply FROM refresh_requests WHERE request_id = :id AND company_id = :company"),
            {"id": request_id, "company": company_id},
        ).first()
    if result is not None and result.status != inbox.IN_PROGRESS:
        return StoredOutcome(result.status, result.reply)
    if result is not None:
        return StoredOutcome(None, None)  # a job whose last chunk has not committed yet
    if accepted is None:
        return None
    return StoredOutcome(accepted.reply_status, accepted.reply)


def prune(engine: Engine, retention_s: float, batch: int) -> int:
    """Delete up to ``batch`` accepted requests older than the retention (a poll
    for one of them is then answered 404, as for an unknown id)."""
    with engine.begin() as conn:
        return len(conn.execute(
            text(
                "DELETE FROM refresh_requests WHERE request_id IN ("
                " SELECT request_id FROM refresh_requests"
                " WHERE accepted_at < now() - make_interval(secs => :retention)"
                " ORDER BY accepted_at LIMIT :batch FOR UPDATE SKIP LOCKED) RETURNING request_id"
            ),
            {"retention": retention_s, "batch": batch},
        ).all())
