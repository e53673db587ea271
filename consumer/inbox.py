"""Idempotency: processed request and event ids, with what was answered and published.

A redelivered message finds its row and re-sends the stored reply and events
instead of doing the work again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text


@dataclass(frozen=True)
class StoredResult:
    status: int
    reply: dict[str, Any]
    events: list[dict[str, Any]]
    published: bool = False


def find(conn: Connection, message_id: str) -> StoredResult | None:
    return find_many(conn, [message_id]).get(message_id)


def find_many(conn: Connection, message_ids: list[str]) -> dict[str, StoredResult]:
    rows = conn.execute(
        text("SELECT message_id, status, reply, events, published FROM processed_messages WHERE message_id = ANY(:ids)"),
        {"ids": message_ids},
    )
    return {row.message_id: StoredResult(row.status, row.reply, row.events, row.published) for row in rows}


def record(
    conn: Connection,
    message_id: str,
    kind: str,
    company_id: int | None,
    result: StoredResult,
    *,
    overwrite: bool = False,
) -> bool:
    """Store a result in the caller's transaction. False if the id was already
    there (a concurrent duplicate won); with ``overwrite`` (replay), replace it."""
    return record_many(conn, kind, {message_id: result}, {message_id: company_id}, overwrite=overwrite)


def record_many(
    conn: Connection,
    kind: str,
    results: dict[str, StoredResult],
    company_ids: dict[str, int | None] | None = None,
    *,
    overwrite: bool = False,
) -> bool:
    """``record`` for many ids in one statement; False if any was already there."""
    if not results:
        return True
    conflict = (
        "DO UPDATE SET status = EXCLUDED.status, reply = EXCLUDED.reply, "
        "events = EXCLUDED.events, published = false, processed_at = now()"
        if overwrite
        else "DO NOTHING"
    )
    ids = list(results)
    inserted = conn.execute(
        text(
            "INSERT INTO processed_messages (message_id, kind, company_id, status, reply, events) "
            "SELECT v.id, :kind, v.company_id, v.status, v.reply, v.events FROM unnest("
            "CAST(:ids AS text[]), CAST(:company_ids AS bigint[]), CAST(:statuses AS smallint[]), "
            "CAST(:replies AS jsonb[]), CAST(:events AS jsonb[])) AS v(id, company_id, status, reply, events) "
            f"ON CONFLICT (message_id) {conflict} RETURNING message_id"
        ),
        {
            "kind": kind,
            "ids": ids,
            "company_ids": [(company_ids or {}).get(i) for i in ids],
            "statuses": [results[i].status for i in ids],
            "replies": [json.dumps(results[i].reply) for i in ids],
            "events": [json.dumps(results[i].events) for i in ids],
        },
    ).all()
    return len(inserted) == len(ids)


def mark_published(engine: Engine, message_ids: list[str]) -> None:
    """After delivery: a redelivery of these need not publish their events again."""
    if message_ids:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE processed_messages SET published = true WHERE message_id = ANY(:ids) AND NOT published"),
                {"ids": message_ids},
            )
