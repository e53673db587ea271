"""Refresh requests accepted in async mode (``Prefer: respond-async``).

The API records a request before publishing it, so that
``GET /assessments/refresh-requests/{id}`` can tell "pending" (a row here, no
result yet) from "unknown" (no row) and check that the caller's company owns
the id. Results are read from processed_messages; the reply columns hold the
reply as the accepting API saw it on the reply topic, for the replies the
consumer does not store (a dead-lettered request's 500).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "refresh_requests",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("company_id", sa.BigInteger, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("accepted_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("reply_status", sa.SmallInteger),
        sa.Column("reply", JSONB),
        sa.Column("replied_at", TS),
    )


def downgrade() -> None:
    op.drop_table("refresh_requests")
