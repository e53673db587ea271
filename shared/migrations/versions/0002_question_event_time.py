"""Remember the time of the newest upstream event applied to each question.

A replay of question.events then skips events older than what a question
already reflects, so replaying leaves the bank as one pass would have.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("questions", sa.Column("event_time", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("questions", "event_time")
