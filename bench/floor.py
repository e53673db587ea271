"""The one-statement floors of scenario 6: what the database alone takes.

Each floor is the work the product does, written by hand as one set-based
statement: for the fan-out, every slot holding the deleted question gets a
valid alternative of the same kind that its assessment does not hold yet,
its snapshot copied from the bank; for the company, every stale slot gets
the bank's snapshot and every deleted one an alternative. It runs in a
transaction that is rolled back (then VACUUM), so the product's run, timed
next, sees the same data on the same server. No chunks, no inbox, no events,
no report: the floor is what a refresh cannot be cheaper than.

Candidates are ordered by a cheap stable hash of (oid, qid), the same for
every slot of an assessment, so the k-th deleted slot of a kind takes the
k-th candidate and no assessment gets one question twice.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, text

from bench.pg_stats import checkpoint

_REPLACE = """
    d AS (
        SELECT s.oid, s.section_idx, s.question_idx, a.company_id, q.type, q.skill, q.difficulty,
               row_number() OVER (PARTITION BY s.oid, q.type, q.skill, q.difficulty
                                  ORDER BY s.section_idx, s.question_idx) AS k
        FROM assessment_slots s JOIN assessments a ON a.oid = s.oid JOIN questions q ON q.qid = s.qid
        WHERE q.deleted AND {scope}
    ), pick AS (
        SELECT d.oid, d.section_idx, d.question_idx, c.qid AS new_qid
        FROM d CROSS JOIN LATERAL (
            SELECT q.qid FROM questions q
            WHERE q.type = d.type AND q.skill = d.skill AND q.difficulty = d.difficulty AND NOT q.deleted
              AND (q.company_id IS NULL OR q.company_id = d.company_id)
              AND NOT EXISTS (SELECT 1 FROM assessment_slots u WHERE u.oid = d.oid AND u.qid = q.qid)
            ORDER BY (q.qid * 48271 + d.oid) % 2147483647 LIMIT 1 OFFSET d.k - 1) c
    ), replaced AS (
        UPDATE assessment_slots s SET qid = p.new_qid, snapshot = q.content, snapshot_version = q.version
        FROM pick p JOIN questions q ON q.qid = p.new_qid
        WHERE s.oid = p.oid AND s.section_idx = p.section_idx AND s.question_idx = p.question_idx
        RETURNING 1
    )"""

FAN_OUT = text(
    "WITH" + _REPLACE.format(scope="s.qid = :qid") + " SELECT 0 AS refreshed, (SELECT count(*) FROM replaced) AS replaced"
)
COMPANY = text(
    "WITH" + _REPLACE.format(scope="a.company_id = :company") + """,
    refreshed AS (
        UPDATE assessment_slots s SET snapshot = q.content, snapshot_version = q.version
        FROM assessments a, questions q
        WHERE a.company_id = :company AND s.oid = a.oid AND q.qid = s.qid
          AND NOT q.deleted AND q.version <> s.snapshot_version
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM refreshed) AS refreshed, (SELECT count(*) FROM replaced) AS replaced"""
)


def _timed(engine: Engine, statements: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    """Run ``statements`` in one transaction, rolled back; the last one's counts."""
    checkpoint(engine)
    with engine.connect() as conn:
        tx = conn.begin()
        started = time.perf_counter()
        *setup, (statement, params) = statements
        for before, before_params in setup:
            conn.execute(before, before_params)
        row = conn.execute(statement, params).one()
        seconds = time.perf_counter() - started
        tx.rollback()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM assessment_slots, questions"))
    return {"seconds": round(seconds, 3), "refreshed": row.refreshed, "replaced": row.replaced}


def fan_out(engine: Engine, qid: int) -> dict[str, Any]:
    """The deletion of ``qid`` and its whole fan-out, as one statement."""
    mark = text("UPDATE questions SET deleted = true, deleted_at = now() WHERE qid = :qid")
    return _timed(engine, [(mark, {"qid": qid}), (FAN_OUT, {"qid": qid})])


def company(engine: Engine, company_id: int) -> dict[str, Any]:
    """The refresh of every assessment of ``company_id``, as one statement."""
    return _timed(engine, [(COMPANY, {"company": company_id})])
