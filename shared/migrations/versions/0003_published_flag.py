"""Remember that a processed message's reply and events were delivered.

A redelivered message whose results were already published then re-sends
only the reply (a caller may still wait for it) and no duplicate events.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column(
        "processed_messages", sa.Column("published", sa.Boolean, nullable=False, server_default="false")
    )


def downgrade() -> None:
    op.drop_column("processed_messages", "published")
