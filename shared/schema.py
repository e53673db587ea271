"""Database tables (SQLAlchemy Core). Alembic migrations create them; see shared/migrations."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

companies = Table(
    "companies",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
)

# Only a SHA-256 of each key is stored: keys are random 32-byte secrets, so a
# fast hash is enough (as for GitHub tokens) and lets us look a key up by index.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("company_id", BigInteger, ForeignKey("companies.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

questions = Table(
    "questions",
    metadata,
    Column("qid", BigInteger, primary_key=True, autoincrement=False),
    # NULL: a public bank question; otherwise private to that company.
    Column("company_id", BigInteger, ForeignKey("companies.id")),
    Column("type", Text, nullable=False),
    Column("skill", Text, nullable=False),
    Column("difficulty", Text, nullable=False),
    Column("content", JSONB, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("deleted", Boolean, nullable=False, server_default="false"),
    Column("deleted_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # occurred_at of the newest upstream event applied; older events are skipped.
    Column("event_time", DateTime(timezone=True)),
)
# Candidate look-up for replacements: active questions of one kind, public
# (company_id NULL) or one company's, each an index range (migration 0007).
Index(
    "ix_questions_kind_owner_active",
    questions.c.type,
    questions.c.skill,
    questions.c.difficulty,
    questions.c.company_id,
    postgresql_where=~questions.c.deleted,
)

assessments = Table(
    "assessments",
    metadata,
    Column("oid", BigInteger, primary_key=True, autoincrement=False),
    Column("company_id", BigInteger, ForeignKey("companies.id"), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("refreshed_at", DateTime(timezone=True)),
)

sections = Table(
    "assessment_sections",
    metadata,
    Column("oid", BigInteger, ForeignKey("assessments.oid", ondelete="CASCADE"), primary_key=True),
    Column("section_idx", SmallInteger, primary_key=True),
    Column("name", Text, nullable=False),
)

# Both tables keep room on each page (fillfactor, migration 0008): a refresh
# rewrites snapshots and stamps in place (HOT updates, no index writes).
slots = Table(
    "assessment_slots",
    metadata,
    Column("oid", BigInteger, primary_key=True),
    Column("section_idx", SmallInteger, primary_key=True),
    Column("question_idx", SmallInteger, primary_key=True),
    # No foreign key to questions (migration 0008): questions are never
    # deleted, the loader rejects unknown ones, and each statement writing a
    # qid reads that question; the per-row check cost more than the update.
    Column("qid", BigInteger, nullable=False, index=True),
    # The question's data as it was when this slot last took it from the bank.
    Column("snapshot", JSONB, nullable=False),
    Column("snapshot_version", Integer, nullable=False),
    ForeignKeyConstraint(
        ["oid", "section_idx"],
        ["assessment_sections.oid", "assessment_sections.section_idx"],
        ondelete="CASCADE",
    ),
    # A question appears at most once in an assessment: a double replacement
    # cannot be committed even if the code above it were wrong.
    UniqueConstraint("oid", "qid", name="uq_slot_question_once", deferrable=True, initially="DEFERRED"),
)

# Idempotency: one row per processed request id or event id, holding the reply
# (and the result events) so that a redelivery re-sends instead of redoing.
processed_messages = Table(
    "processed_messages",
    metadata,
    Column("message_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("company_id", BigInteger),
    Column("status", SmallInteger, nullable=False),
    Column("reply", JSONB, nullable=False),
    Column("events", JSONB, nullable=False, server_default="[]"),
    # True once the reply and events were delivered to the broker.
    Column("published", Boolean, nullable=False, server_default="false"),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
# Retention: published rows by age (migration 0005).
Index("processed_messages_published_at", processed_messages.c.processed_at, postgresql_where=processed_messages.c.published)

# Requests accepted in async mode (Prefer: respond-async), recorded before they
# are published: a row without a result is "pending", no row is "unknown".
# The result itself is in processed_messages; reply_status/reply keep the reply
# the accepting API saw, for those the consumer does not store (dead-lettered 500s).
refresh_requests = Table(
    "refresh_requests",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("company_id", BigInteger, ForeignKey("companies.id"), nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reply_status", SmallInteger),
    Column("reply", JSONB),
    Column("replied_at", DateTime(timezone=True)),
)
Index("refresh_requests_accepted_at", refresh_requests.c.accepted_at)

# A large refresh split into chunks (migration 0006; consumer/jobs.py): the job
# and its progress, and per chunk its assessments and, once done, its report.
refresh_jobs = Table(
    "refresh_jobs",
    metadata,
    Column("job_id", Text, primary_key=True),  # the id of the message that started it
    Column("kind", Text, nullable=False),
    Column("company_id", BigInteger),
    Column("reply_to", Text),
    Column("trigger", JSONB, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("chunks_done", Integer, nullable=False, server_default="0"),
    Column("assessments", Integer, nullable=False),
    Column("refreshed", Integer, nullable=False, server_default="0"),
    Column("changed", Integer, nullable=False, server_default="0"),
    Column("replaced", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
)
Index("refresh_jobs_completed_at", refresh_jobs.c.completed_at, postgresql_where=refresh_jobs.c.completed_at.isnot(None))

refresh_job_chunks = Table(
    "refresh_job_chunks",
    metadata,
    Column("job_id", Text, ForeignKey("refresh_jobs.job_id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("oids", ARRAY(BigInteger), nullable=False),
    Column("details", JSONB),  # the chunk's report entries in oid order; NULL until done
    Column("started_at", DateTime(timezone=True)),  # the chunk's transaction began
    Column("done_at", DateTime(timezone=True)),  # ... and was about to commit
)

# Each change a refresh made to a slot (migration 0009; shared/history.py):
# written by a statement-level trigger on assessment_slots, one INSERT per
# UPDATE statement, in the refresh's transaction.
assessment_history = Table(
    "assessment_history",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("oid", BigInteger, nullable=False),  # no foreign key: one check per row recorded (migration 0009)
    Column("section_idx", SmallInteger, nullable=False),
    Column("question_idx", SmallInteger, nullable=False),
    Column("old_qid", BigInteger, nullable=False),
    Column("new_qid", BigInteger, nullable=False),
    Column("old_version", Integer, nullable=False),
    Column("new_version", Integer, nullable=False),
    Column("kind", Text, nullable=False),  # refreshed | replaced
    Column("trigger", JSONB, nullable=False),  # as the refresh events' trigger
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_assessment_history_oid_newest", assessment_history.c.oid, assessment_history.c.changed_at.desc(),
      assessment_history.c.id.desc())
