"""Refresh jobs: a refresh too large for one transaction, split into chunks.

A job is planned in the transaction of the message that asked for it (a REST
request, a question deletion): its assessments, in oid order, cut into chunks
of at most REFRESH_CHUNK_SIZE. Each chunk is then one message on the work
topic and one transaction of its own (consumer/chunk_handler.py); its inbox
row, keyed by the chunk's id (RefreshChunk.message_id), makes a redelivered
chunk re-send its results instead of refreshing again, and a crash redo only
the chunks that had not committed.

The job row counts the chunks done. The chunk that brings the count to the
total is the last one, whichever consumer runs it: the counter's row lock
orders the chunks' commits, so exactly one transaction sees the job complete
and assembles the full report from the chunks' stored details.

This module is the only one that touches refresh_jobs and refresh_job_chunks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

REQUEST = "request"
DELETION = "question.deleted"


def split(oids: Sequence[int], size: int) -> list[list[int]]:
    """The chunks of a job: the assessments in oid order, at most ``size`` each
    (each chunk locks its rows in that order, as every refresh does)."""
    ordered = sorted(set(oids))
    return [ordered[i : i + size] for i in range(0, len(ordered), max(1, size))]


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str  # REQUEST or DELETION
    company_id: int | None  # the requesting company (REQUEST), None for a deletion
    reply_to: str | None
    trigger: dict[str, Any]
    chunks: int


@dataclass(frozen=True)
class Progress:
    """A job's counters after a chunk committed its share."""

    chunks: int
    chunks_done: int
    assessments: int
    refreshed: int
    changed: int
    replaced: int
    failed: int

    @property
    def complete(self) -> bool:
        return self.chunks_done >= self.chunks

    def totals(self) -> dict[str, int]:
        return {
            "assessments": self.assessments,
            "changed": self.changed,
            "questions_refreshed": self.refreshed,
            "deleted_questions_replaced": self.replaced,
            "deleted_questions_not_replaced": self.failed,
            "chunks": self.chunks,
        }


def plan(conn: Connection, job: Job, chunks: Sequence[Sequence[int]], *, overwrite: bool) -> None:
    """Store a job and its chunks (two statements). ``overwrite`` (a replay)
    starts an existing job of that id over; otherwise an existing job is left
    as it is (the caller's inbox insert then reports the duplicate)."""
    if overwrite:
        conn.execute(text("DELETE FROM refresh_jobs WHERE job_id = :id"), {"id": job.job_id})
    conn.execute(
        text(
            "INSERT INTO refresh_jobs (job_id, kind, company_id, reply_to, trigger, chunks, assessments) "
            "VALUES (:id, :kind, :company, :reply_to, CAST(:trigger AS jsonb), :chunks, 0) "
            "ON CONFLICT (job_id) DO NOTHING"
        ),
        {"id": job.job_id, "kind": job.kind, "company": job.company_id, "reply_to": job.reply_to,
         "trigger": json.dumps(job.trigger), "chunks": len(chunks)},
    )
    conn.execute(
        text(
            "INSERT INTO refresh_job_chunks (job_id, idx, oids) "
            "SELECT :id, c.idx - 1, CAST(c.oids AS bigint[]) "
            "FROM unnest(CAST(:chunks AS text[])) WITH ORDINALITY AS c(oids, idx) "
            "ON CONFLICT (job_id, idx) DO NOTHING"
        ),
        # Arrays of unequal length cannot be a 2-d array: each chunk travels as '{1,2,3}'.
        {"id": job.job_id, "chunks": ["{" + ",".join(map(str, chunk)) + "}" for chunk in chunks]},
    )


def find(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(
        text("SELECT job_id, kind, company_id, reply_to, trigger, chunks FROM refresh_jobs WHERE job_id = :id"),
        {"id": job_id},
    ).first()
    return None if row is None else Job(row.job_id, row.kind, row.company_id, row.reply_to, row.trigger, row.chunks)


def unfinished_chunks(conn: Connection, job_id: str) -> list[int]:
    """The chunks not yet done, to be sent (again) to the work topic."""
    return list(conn.execute(
        text("SELECT idx FROM refresh_job_chunks WHERE job_id = :id AND done_at IS NULL ORDER BY idx"), {"id": job_id}
    ).scalars())


def chunk_oids(conn: Connection, job_id: str, idx: int) -> list[int] | None:
    """The chunk's assessments; None if there is no such chunk (its job was pruned)."""
    row = conn.execute(
        text("SELECT oids FROM refresh_job_chunks WHERE job_id = :id AND idx = :idx"), {"id": job_id, "idx": idx}
    ).first()
    return None if row is None else list(row.oids)


def finish_chunk(
    conn: Connection, job_id: str, idx: int, details: list[dict[str, Any]] | None, counts: dict[str, int]
) -> Progress:
    """Record a chunk's result and add its counts to the job: the job's row
    lock, taken last, is held only from here to the commit."""
    conn.execute(
        text(
            # now() is when the chunk's transaction began: the two give its length.
            "UPDATE refresh_job_chunks SET started_at = now(), done_at = clock_timestamp(), "
            "details = CAST(:details AS jsonb) "
            "WHERE job_id = :id AND idx = :idx"
        ),
        {"id": job_id, "idx": idx, "details": None if details is None else json.dumps(details)},
    )
    row = conn.execute(
        text(
            "UPDATE refresh_jobs SET chunks_done = chunks_done + 1, assessments = assessments + :assessments, "
            "refreshed = refreshed + :refreshed, changed = changed + :changed, replaced = replaced + :replaced, "
            "failed = failed + :failed, "
            "completed_at = CASE WHEN chunks_done + 1 >= chunks THEN now() END "
            "WHERE job_id = :id "
            "RETURNING chunks, chunks_done, assessments, refreshed, changed, replaced, failed"
        ),
        {"id": job_id, **counts},
    ).one()
    return Progress(row.chunks, row.chunks_done, row.assessments, row.refreshed, row.changed, row.replaced, row.failed)


def assembled_details(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """Every chunk's report entries, in chunk order and so in oid order."""
    return [
        entry
        for details in conn.execute(
            text("SELECT details FROM refresh_job_chunks WHERE job_id = :id ORDER BY idx"), {"id": job_id}
        ).scalars()
        for entry in details or ()
    ]


def progress_of(conn: Connection, job_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(chunks done, chunks) per job, for status reads."""
    rows = conn.execute(
        text("SELECT job_id, chunks_done, chunks FROM refresh_jobs WHERE job_id = ANY(:ids)"), {"ids": list(job_ids)}
    )
    return {row.job_id: (row.chunks_done, row.chunks) for row in rows}


def prune(conn: Connection, retention_s: float, batch: int) -> int:
    """Delete up to ``batch`` jobs completed longer ago than the retention,
    with their chunks. An unfinished job is never pruned: its chunks are still
    to run (or to be re-sent by a redelivery of the message that started it)."""
    return len(conn.execute(
        text(
            "DELETE FROM refresh_jobs WHERE job_id IN ("
            " SELECT job_id FROM refresh_jobs"
            " WHERE completed_at IS NOT NULL AND completed_at < now() - make_interval(secs => :retention)"
            " ORDER BY completed_at LIMIT :batch FOR UPDATE SKIP LOCKED) RETURNING job_id"
        ),
        {"retention": retention_s, "batch": batch},
    ).all())
