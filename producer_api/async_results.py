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

A synchronous call answered 504 is recorded here too, pending. If its
delivery to the broker was not confirmed, the request may never have been
written: its row says so (``reply`` holds ``UNCONFIRMED``), and once
``unconfirmed_bound_s`` has passed without a result the request is answered
as never received. A result that arrives after all still wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from shared import inbox
from shared.messages import RefreshReply
from shared.settings import Settings

# The reply column of a request whose delivery was not confirmed (no reply yet).
UNCONFIRMED = {"delivery": "unconfirmed"}


@dataclass(frozen=True)
class StoredOutcome:
    status: int | None  # None: pending (or, if not received, never to come)
    body: dict[str, Any] | None
    received: bool = True  # False: delivery unconfirmed and no result within the bound


def unconfirmed_bound_s(settings: Settings) -> float:
    """After its 504, how long a request whose delivery was not confirmed stays
    pending: long enough for librdkafka's last retry (within BROKER_TIMEOUT_S,
    which the 504 already waited out) to be read and answered by a consumer
    (REPLY_TIMEOUT_S), with a BROKER_TIMEOUT_S to spare for a consumer that
    is itself riding out the election."""
    return settings.broker_timeout_s + settings.reply_timeout_s


def record_accepted(engine: Engine, request_id: str, company_id: int, delivery_confirmed: bool = True) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO refresh_requests (request_id, company_id, reply) "
                 "VALUES (:id, :company, CAST(:reply AS jsonb)) ON CONFLICT (request_id) DO NOTHING"),
            {"id": request_id, "company": company_id,
             "reply": None if delivery_confirmed else json.dumps(UNCONFIRMED)},
        )


def stored_result(engine: Engine, request_id: str, company_id: int) -> StoredOutcome | None:
    """The consumer's stored result of a request, whether or not it was accepted in async mode."""
    with engine.connect() as conn:
        result = inbox.refresh_result(conn, request_id, company_id)
    return None if result is None else StoredOutcome(result.status, result.reply)


def stored_preview(engine: Engine, request_id: str, company_id: int) -> StoredOutcome | None:
    """A preview's report, stored only when too large for the reply topic (its claim check)."""
    with engine.connect() as conn:
        body = inbox.preview_result(conn, request_id, company_id)
    return None if body is None else StoredOutcome(200, body)


def mark_unconfirmed(engine: Engine, request_id: str) -> None:
    """An accepted request's delivery was not confirmed (async mode's 504)."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE refresh_requests SET reply = CAST(:reply AS jsonb), accepted_at = now() "
                 "WHERE request_id = :id AND reply_status IS NULL"),
            {"id": request_id, "reply": json.dumps(UNCONFIRMED)},
        )


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


def find(engine: Engine, request_id: str, company_id: int, unconfirmed_bound: float) -> StoredOutcome | None:
    """None if the company has no such request: neither accepted here (async
    mode, a timed-out wait) nor answered by the consumer (whatever client sent
    it: a reply too large for the reply topic points here). A request whose
    delivery was not confirmed and that has no result ``unconfirmed_bound``
    seconds after it was recorded is not received."""
    with engine.connect() as conn:
        result = inbox.refresh_result(conn, request_id, company_id)
        accepted = conn.execute(
            text("SELECT reply_status, reply, accepted_at < now() - make_interval(secs => :bound) AS overdue "
                 "FROM refresh_requests WHERE request_id = :id AND company_id = :company"),
            {"id": request_id, "company": company_id, "bound": unconfirmed_bound},
        ).first()
    if result is not None and result.status != inbox.IN_PROGRESS:
        return StoredOutcome(result.status, result.reply)
    if result is not None:
        return StoredOutcome(None, None)  # a job whose last chunk has not committed yet
    if accepted is None:
        return None
    if accepted.reply_status is None and accepted.reply == UNCONFIRMED:
        return StoredOutcome(None, None, received=not accepted.overdue)
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
