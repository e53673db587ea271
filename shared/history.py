"""The change history of each assessment (table assessment_history, migration 0009).

Every slot a refresh changes is recorded in the refresh's own transaction:
the assessment, the slot's position, the old and new question and version,
the kind of change (``refreshed``: same question, new version; ``replaced``:
a deleted question swapped for another) and what caused it, with its id (the
trigger of the refresh events: a request, a ``question.deleted`` event; a
replay says so). A statement-level trigger on assessment_slots writes the rows:
one INSERT ... SELECT per slot update statement (one per chunk), whatever
statement the refresh store uses, and only for slots whose question or
version changed, so a replay that changes nothing records nothing.

The consumer names the cause before it refreshes (``note_trigger``); the API
reads pages (``page``); retention prunes by age (``prune``). This module is the
only one that touches the table.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

REFRESHED = "refreshed"
REPLACED = "replaced"
# The transaction-local setting the trigger reads (migration 0009).
TRIGGER_SETTING = "assessment_refresh.trigger"
MAX_PAGE = 500
DEFAULT_PAGE = 50


def note_trigger(conn: Connection, trigger: dict[str, Any], *, replay: bool = False) -> None:
    """The slots updated from here to the end of the transaction (or the next
    note) are recorded as caused by ``trigger``."""
    cause = {**trigger, "replay": True} if replay else trigger
    conn.execute(text("SELECT set_config(:name, :cause, true)"), {"name": TRIGGER_SETTING, "cause": json.dumps(cause)})


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last change's time and id (opaque to clients)."""

    changed_at: datetime
    id: int

    def encode(self) -> str:
        raw = json.dumps([self.changed_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            at, ident = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            cursor = cls(datetime.fromisoformat(at), int(ident))
        except (ValueError, TypeError, binascii.Error):
            raise BadCursor("cursor is not one this endpoint returned") from None
        if cursor.changed_at.tzinfo is None:
            raise BadCursor("cursor is not one this endpoint returned")
        return cursor


@dataclass(frozen=True)
class Page:
    changes: list[dict[str, Any]]
    next_cursor: str | None


_PAGE = text(
    """
    SELECT id, section_idx, question_idx, old_qid, new_qid, old_version, new_version, kind, trigger, changed_at
    FROM assessment_history
    WHERE oid = :oid
      AND (CAST(:since AS timestamptz) IS NULL OR changed_at >= CAST(:since AS timestamptz))
      AND (CAST(:after_at AS timestamptz) IS NULL
           OR (changed_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS bigint)))
    ORDER BY changed_at DESC, id DESC
    LIMIT :limit
    """
)


def owned_by(conn: Connection, oid: int, company_id: int) -> bool:
    """The assessment exists and is the company's (its history may be read)."""
    return conn.execute(text("SELECT 1 FROM assessments WHERE oid = :oid AND company_id = :company"),
                        {"oid": oid, "company": company_id}).first() is not None


def page(conn: Connection, oid: int, *, limit: int, since: datetime | None = None,
         after: Cursor | None = None) -> Page:
    """One assessment's changes, newest first (by time, then id): up to
    ``limit``, changed at or after ``since``, older than ``after``."""
    rows = conn.execute(_PAGE, {
        "oid": oid, "since": since, "limit": limit + 1,
        "after_at": after.changed_at if after else None, "after_id": after.id if after else None,
    }).all()
    more, rows = len(rows) > limit, rows[:limit]
    changes = [
        {"section_idx": r.section_idx, "question_idx": r.question_idx, "old_qid": r.old_qid, "new_qid": r.new_qid,
         "old_version": r.old_version, "new_version": r.new_version, "kind": r.kind, "trigger": r.trigger,
         "changed_at": r.changed_at.isoformat().replace("+00:00", "Z")}
        for r in rows
    ]
    last = rows[-1] if rows else None
    return Page(changes, Cursor(last.changed_at, last.id).encode() if more and last is not None else None)


def prune(conn: Connection, retention_s: float, batch: int) -> int:
    """Delete up to ``batch`` changes older than the retention (oldest first);
    how many went. SKIP LOCKED, as the inbox's prune: each batch is short."""
    return len(conn.execute(
        text(
            "DELETE FROM assessment_history WHERE id IN ("
            " SELECT id FROM assessment_history"
            " WHERE changed_at < now() - make_interval(secs => :retention)"
            # The oldest by id, the primary key (ids grow with time): no index on changed_at to write.
            " ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED) RETURNING id"
        ),
        {"retention": retention_s, "batch": batch},
    ).all())
