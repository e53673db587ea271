"""The inbox (table processed_messages): one row per processed request or event
id, with what was answered and what was to be published.

A redelivered message finds its row and re-sends the stored reply and events
instead of doing the work again. The consumer writes rows in its handlers'
transactions; the API's async mode reads a refresh request's result
(``refresh_result``). This module is the only one that touches the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, text

from shared.messages import encode

# The kinds of rows, one per message type the consumer records.
REFRESH_REQUEST = "refresh.request"
QUESTION_DELETED = "question.deleted"
QUESTION_UPSERTED = "question.upserted"
REFRESH_CHUNK = "refresh.chunk"  # one chunk of a refresh job (consumer/jobs.py)
# A preview's report too large for the reply topic (consumer/preview.py): never
# a request's stored result, under a key no request id of ours can be.
REFRESH_PREVIEW = "refresh.preview"
# The status of a request or deletion whose refresh is a job still running:
# its row is updated with the final result when the last chunk commits.
IN_PROGRESS = 202


@dataclass(frozen=True)
class StoredResult:
    status: int
    reply: dict[str, Any]
    events: list[dict[str, Any]]
    published: bool = False
    # Whose result this is, as read from the inbox (None for one not stored yet).
    kind: str | None = None
    company_id: int | None = None

    @cached_property
    def encoded_events(self) -> list[bytes]:
        """Each event as the bytes published, encoded once: the inbox row
        stores them (joined into its JSON array) and Kafka gets the same
        bytes (measured: encoding 10,000 events twice was a tenth of the
        consumers' CPU in a fan-out)."""
        return [encode(e) for e in self.events]

    def events_json(self) -> str:
        return (b"[" + b",".join(self.encoded_events) + b"]").decode()


def find_many(conn: Connection, message_ids: list[str]) -> dict[str, StoredResult]:
    rows = conn.execute(
        text("SELECT message_id, kind, company_id, status, reply, events, published FROM processed_messages "
             "WHERE message_id = ANY(:ids)"),
        {"ids": message_ids},
    )
    return {row.message_id: StoredResult(row.status, row.reply, row.events, row.published, row.kind, row.company_id)
            for row in rows}


def record_many(
    conn: Connection,
    kind: str,
    results: dict[str, StoredResult],
    company_ids: dict[str, int | None] | None = None,
    *,
    overwrite: bool = False,
) -> bool:
    """Store results in the caller's transaction, in one statement. False if
    any id was already there (a concurrent duplicate won); with ``overwrite``
    (a replay), replace what is there."""
    if not results:
        return True
    conflict = (
        "DO UPDATE SET status = EXCLUDED.status, reply = EXCLUDED.reply, "
        "events = EXCLUDED.events, published = EXCLUDED.published, processed_at = now()"
        if overwrite
        else "DO NOTHING"
    )
    ids = list(results)
    inserted = conn.execute(
        text(
            "INSERT INTO processed_messages (message_id, kind, company_id, status, reply, events, published) "
            "SELECT v.id, :kind, v.company_id, v.status, v.reply, v.events, v.published FROM unnest("
            "CAST(:ids AS text[]), CAST(:company_ids AS bigint[]), CAST(:statuses AS smallint[]), "
            "CAST(:replies AS jsonb[]), CAST(:events AS jsonb[]), CAST(:published AS boolean[])) "
            "AS v(id, company_id, status, reply, events, published) "
            f"ON CONFLICT (message_id) {conflict} RETURNING message_id"
        ),
        {
            "kind": kind,
            "ids": ids,
            "company_ids": [(company_ids or {}).get(i) for i in ids],
            "statuses": [results[i].status for i in ids],
            "replies": [json.dumps(results[i].reply) for i in ids],
            "events": [results[i].events_json() for i in ids],
            # Nothing to publish is published already (so that retention can
            # prune the row); a job in progress still has its chunks to send.
            "published": [not results[i].events and results[i].status != IN_PROGRESS for i in ids],
        },
    ).all()
    return len(inserted) == len(ids)


def complete(conn: Connection, message_id: str, status: int, reply: dict[str, Any]) -> None:
    """A job's final result, on the row of the message that started it (the
    row a redelivery of that message, or an async poll, reads)."""
    conn.execute(
        text("UPDATE processed_messages SET status = :status, reply = CAST(:reply AS jsonb) WHERE message_id = :id"),
        {"id": message_id, "status": status, "reply": json.dumps(reply)},
    )


def mark_published(conn: Connection, message_ids: list[str]) -> None:
    """After delivery: a redelivery of these need not publish their events again."""
    if message_ids:
        conn.execute(
            text("UPDATE processed_messages SET published = true WHERE message_id = ANY(:ids) AND NOT published"),
            {"ids": message_ids},
        )


def refresh_result(conn: Connection, request_id: str, company_id: int) -> StoredResult | None:
    """The stored result of one company's refresh request, if the consumer has one."""
    row = conn.execute(
        text(
            "SELECT status, reply, events, published FROM processed_messages "
            "WHERE message_id = :id AND kind = :kind AND company_id = :company"
        ),
        {"id": request_id, "kind": REFRESH_REQUEST, "company": company_id},
    ).first()
    return None if row is None else StoredResult(row.status, row.reply, row.events, row.published)


def preview_key(request_id: str) -> str:
    return f"preview/{request_id}"


def record_preview(conn: Connection, request_id: str, company_id: int, reply: dict[str, Any]) -> None:
    """A preview's report, for the claim check. Published already (nothing to
    re-send: a redelivered preview is previewed again and overwrites it), so
    retention prunes it as any answered row."""
    conn.execute(
        text(
            "INSERT INTO processed_messages (message_id, kind, company_id, status, reply, events, published) "
            "VALUES (:id, :kind, :company, 200, CAST(:reply AS jsonb), '[]', true) "
            "ON CONFLICT (message_id) DO UPDATE SET reply = EXCLUDED.reply, processed_at = now()"
        ),
        {"id": preview_key(request_id), "kind": REFRESH_PREVIEW, "company": company_id, "reply": json.dumps(reply)},
    )


def preview_result(conn: Connection, request_id: str, company_id: int) -> dict[str, Any] | None:
    """A preview's stored report (claim check), if the consumer stored one."""
    return conn.execute(
        text("SELECT reply FROM processed_messages WHERE message_id = :id AND kind = :kind AND company_id = :company"),
        {"id": preview_key(request_id), "kind": REFRESH_PREVIEW, "company": company_id},
    ).scalar()


def prune(conn: Connection, retention_s: float, batch: int) -> int:
    """Delete up to ``batch`` rows older than the retention; how many went.

    Only published rows: an unpublished one is what a redelivery of its
    message must find and re-send. SKIP LOCKED, so a row a handler holds (or
    another pruner takes) is left for the next batch, and each batch is one
    short transaction."""
    return len(conn.execute(
        text(
            "DELETE FROM processed_messages WHERE message_id IN ("
            " SELECT message_id FROM processed_messages"
            " WHERE published AND processed_at < now() - make_interval(secs => :retention)"
            " ORDER BY processed_at LIMIT :batch FOR UPDATE SKIP LOCKED) RETURNING message_id"
        ),
        {"retention": retention_s, "batch": batch},
    ).all())
