"""Writes to the question bank: set-based upserts and deletions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class QuestionData:
    qid: int
    company_id: int | None
    type: str
    skill: str
    difficulty: str
    content: dict[str, Any]
    deleted: bool = False


# A changed content bumps the version: that is what makes snapshots stale.
# Deleting stamps deleted_at once; un-deleting (an upsert with deleted=false)
# brings the question back.
_UPSERT_QUESTIONS = text(
    """
    INSERT INTO questions AS q (qid, company_id, type, skill, difficulty, content, deleted, deleted_at)
    SELECT v.qid, v.company_id, v.type, v.skill, v.difficulty, v.content, v.deleted,
           CASE WHEN v.deleted THEN now() END
    FROM unnest(CAST(:qids AS bigint[]), CAST(:company_ids AS bigint[]), CAST(:types AS text[]),
                CAST(:skills AS text[]), CAST(:difficulties AS text[]), CAST(:contents AS jsonb[]),
                CAST(:deleted AS boolean[]))
         AS v(qid, company_id, type, skill, difficulty, content, deleted)
    ON CONFLICT (qid) DO UPDATE SET
        company_id = EXCLUDED.company_id,
        type = EXCLUDED.type,
        skill = EXCLUDED.skill,
        difficulty = EXCLUDED.difficulty,
        content = EXCLUDED.content,
        version = q.version + CASE WHEN q.content IS DISTINCT FROM EXCLUDED.content THEN 1 ELSE 0 END,
        deleted = EXCLUDED.deleted,
        deleted_at = CASE WHEN NOT EXCLUDED.deleted THEN NULL ELSE coalesce(q.deleted_at, now()) END,
        updated_at = now()
    WHERE q.content IS DISTINCT FROM EXCLUDED.content
       OR q.deleted IS DISTINCT FROM EXCLUDED.deleted
       OR (q.company_id, q.type, q.skill, q.difficulty)
          IS DISTINCT FROM (EXCLUDED.company_id, EXCLUDED.type, EXCLUDED.skill, EXCLUDED.difficulty)
    """
)


def upsert_questions(conn: Connection, questions: Sequence[QuestionData]) -> int:
    """Insert or update questions in one statement; returns how many rows changed."""
    if not questions:
        return 0
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
        },
    )
    return result.rowcount


def mark_deleted(conn: Connection, qid: int) -> bool:
    """Mark a question deleted. False when it does not exist (it may already be deleted)."""
    row = conn.execute(
        text(
            "UPDATE questions SET deleted = true, deleted_at = coalesce(deleted_at, now()), "
            "updated_at = now() WHERE qid = :qid RETURNING qid"
        ),
        {"qid": qid},
    ).first()
    return row is not None
