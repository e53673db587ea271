"""Writes to the question bank: set-based upserts and deletions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from enum import Enum

from sqlalchemy import Connection, text

from shared.questions import QuestionData

# A changed content bumps the version: that is what makes snapshots stale.
# Deleting stamps deleted_at once; un-deleting (an upsert with deleted=false)
# brings the question back.
_UPSERT_QUESTIONS = text(
    """
    INSERT INTO questions AS q
        (qid, company_id, type, skill, difficulty, content, deleted, deleted_at, event_time)
    SELECT v.qid, v.company_id, v.type, v.skill, v.difficulty, v.content, v.deleted,
           CASE WHEN v.deleted THEN now() END, v.event_time
    FROM unnest(CAST(:qids AS bigint[]), CAST(:company_ids AS bigint[]), CAST(:types AS text[]),
                CAST(:skills AS text[]), CAST(:difficulties AS text[]), CAST(:contents AS jsonb[]),
                CAST(:deleted AS boolean[]), CAST(:event_times AS timestamptz[]))
         AS v(qid, company_id, type, skill, difficulty, content, deleted, event_time)
    ON CONFLICT (qid) DO UPDATE SET
        company_id = EXCLUDED.company_id,
        type = EXCLUDED.type,
        skill = EXCLUDED.skill,
        difficulty = EXCLUDED.difficulty,
        content = EXCLUDED.content,
        version = q.version + CASE WHEN q.content IS DISTINCT FROM EXCLUDED.content THEN 1 ELSE 0 END,
        deleted = EXCLUDED.deleted,
        deleted_at = CASE WHEN NOT EXCLUDED.deleted THEN NULL ELSE coalesce(q.deleted_at, now()) END,
        updated_at = now(),
        event_time = greatest(q.event_time, EXCLUDED.event_time)
    WHERE (q.content IS DISTINCT FROM EXCLUDED.content
           OR q.deleted IS DISTINCT FROM EXCLUDED.deleted
           OR (q.company_id, q.type, q.skill, q.difficulty)
              IS DISTINCT FROM (EXCLUDED.company_id, EXCLUDED.type, EXCLUDED.skill, EXCLUDED.difficulty))
      -- an event older than what the question reflects (a replay) changes nothing
      AND (q.event_time IS NULL OR EXCLUDED.event_time IS NULL OR EXCLUDED.event_time >= q.event_time)
    RETURNING q.qid
    """
)


def upsert_questions(
    conn: Connection, questions: Sequence[QuestionData], event_time: datetime | None = None
) -> int:
    """Insert or update questions in one statement; returns how many rows changed.

    ``event_time`` is the upstream event's occurred_at (None for file loads)."""
    return len(upsert_changed(conn, questions, [event_time] * len(questions)))


def upsert_changed(
    conn: Connection, questions: Sequence[QuestionData], event_times: Sequence[datetime | None]
) -> list[int]:
    """Upsert questions, each with its own event time, in one statement; the
    qids of the rows that changed. At most one entry per qid (PostgreSQL cannot
    update a row twice in one statement)."""
    if not questions:
        return []
    result = conn.execute(
        _UPSERT_QUESTIONS,
        {
            "qids": [q.qid for q in questions],
            "company_ids": [q.company_id for q in questions],
            "types": [q.type for q in questions],
            "skills": [q.skill for q in questions],
            "difficulties": [q.difficulty for q in questions],
            "contents": [json.dumps(q.content) for q in questions],
            "deleted": [q.deleted for q in questions],
            "event_times": list(event_times),
        },
    )
    return list(result.scalars())


class Deletion(Enum):
    APPLIED = "applied"  # marked deleted now, or it already was
    UNKNOWN = "unknown"  # no such question in the bank
    STALE = "stale"  # the question reflects a newer event (a replayed old deletion)


def mark_deleted(conn: Connection, qid: int, event_time: datetime | None = None) -> Deletion:
    """Mark a question deleted (idempotent), unless a newer event already shaped it."""
    current = conn.execute(
        text("SELECT event_time FROM questions WHERE qid = :qid FOR UPDATE"), {"qid": qid}
    ).first()
    if current is None:
        return Deletion.UNKNOWN
    if event_time is not None and current.event_time is not None and event_time < current.event_time:
        return Deletion.STALE
    conn.execute(
        text(
            "UPDATE questions SET deleted = true, deleted_at = coalesce(deleted_at, now()), "
            "updated_at = now(), event_time = greatest(event_time, CAST(:t AS timestamptz)) WHERE qid = :qid"
        ),
        {"qid": qid, "t": event_time},
    )
    return Deletion.APPLIED
