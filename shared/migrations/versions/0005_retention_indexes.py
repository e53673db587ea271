"""Indexes for retention: pruning finds old rows by time without a scan.

processed_messages is pruned only where published (a row not yet published
is what a redelivery re-sends), so the index covers just those rows.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_index("processed_messages_published_at", "processed_messages", ["processed_at"],
                    postgresql_where=sa.text("published"))
    op.create_index("refresh_requests_accepted_at", "refresh_requests", ["accepted_at"])


def downgrade() -> None:
    op.drop_index("refresh_requests_accepted_at", table_name="refresh_requests")
    op.drop_index("processed_messages_published_at", table_name="processed_messages")
