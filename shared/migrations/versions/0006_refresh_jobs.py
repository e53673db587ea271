"""Refresh jobs: a large refresh split into chunks, each its own transaction.

refresh_jobs holds one row per large refresh (a REST request or a deletion's
fan-out) with its progress; refresh_job_chunks the assessments of each chunk
and, once done, the chunk's report details, from which the full report is
assembled when the last chunk commits.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "refresh_jobs",
        # The id of the message that started it (request id or event id).
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("company_id", sa.BigInteger),
        sa.Column("reply_to", sa.Text),
        sa.Column("trigger", postgresql.JSONB, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("chunks_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("assessments", sa.Integer, nullable=False),
        sa.Column("refreshed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("changed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("replaced", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("refresh_jobs_completed_at", "refresh_jobs", ["completed_at"],
                    postgresql_where=sa.text("completed_at IS NOT NULL"))
    op.create_table(
        "refresh_job_chunks",
        sa.Column("job_id", sa.Text, sa.ForeignKey("refresh_jobs.job_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("oids", postgresql.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("details", postgresql.JSONB),  # the chunk's report entries, in oid order; NULL until done
        # The chunk's transaction: when it began and when it was about to commit.
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("done_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("refresh_job_chunks")
    op.drop_index("refresh_jobs_completed_at", table_name="refresh_jobs")
    op.drop_table("refresh_jobs")
