"""The change history of each assessment: one row per slot a refresh changed.

assessment_history is written by a statement-level trigger on
assessment_slots: whatever statement a refresh updates its slots with (one
per chunk), the trigger adds its changes in one INSERT ... SELECT over the
statement's old and new rows (transition tables), in the same transaction.
It records only updates made under a refresh's trigger (shared/history.py,
``note_trigger``, a transaction-local setting), and only slots whose question
or version changed: an update that changes nothing records nothing.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "assessment_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        # No foreign key to assessments: its check would run once per row recorded
        # (the cost migration 0008 took off the slots), and the service never
        # deletes an assessment.
        sa.Column("oid", sa.BigInteger, nullable=False),
        sa.Column("section_idx", sa.SmallInteger, nullable=False),
        sa.Column("question_idx", sa.SmallInteger, nullable=False),
        sa.Column("old_qid", sa.BigInteger, nullable=False),
        sa.Column("new_qid", sa.BigInteger, nullable=False),
        sa.Column("old_version", sa.Integer, nullable=False),
        sa.Column("new_version", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),  # refreshed | replaced
        # What caused it, as the refresh events say it ({"type": "request", "request_id": ...}).
        sa.Column("trigger", postgresql.JSONB, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Newest first per assessment (the history endpoint's pages). Retention
    # reads the oldest by id (the primary key): no second index to write per row.
    op.create_index("ix_assessment_history_oid_newest", "assessment_history",
                    ["oid", sa.text("changed_at DESC"), sa.text("id DESC")])
    op.execute(
        """
        CREATE FUNCTION record_assessment_history() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            cause jsonb := nullif(current_setting('assessment_refresh.trigger', true), '')::jsonb;
        BEGIN
            IF cause IS NULL THEN
                RETURN NULL;  -- not a refresh (a load, an operator's SQL): not this history's business
            END IF;
            INSERT INTO assessment_history
                (oid, section_idx, question_idx, old_qid, new_qid, old_version, new_version, kind, trigger)
            SELECT n.oid, n.section_idx, n.question_idx, o.qid, n.qid, o.snapshot_version, n.snapshot_version,
                   CASE WHEN o.qid = n.qid THEN 'refreshed' ELSE 'replaced' END, cause
            FROM new_slots n JOIN old_slots o USING (oid, section_idx, question_idx)
            WHERE o.qid <> n.qid OR o.snapshot_version <> n.snapshot_version;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER assessment_slots_history AFTER UPDATE ON assessment_slots "
        "REFERENCING OLD TABLE AS old_slots NEW TABLE AS new_slots "
        "FOR EACH STATEMENT EXECUTE FUNCTION record_assessment_history()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER assessment_slots_history ON assessment_slots")
    op.execute("DROP FUNCTION record_assessment_history()")
    op.drop_table("assessment_history")
