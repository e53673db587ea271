"""Replacement candidates by kind and owner: the public ones and one company's,
each an index range, whatever the number of companies with questions of their own.

The set-based refresh ranks, per deleted slot, the active questions of its
kind that the assessment's company may see. With an index on the kind alone,
every company's own questions of that kind were read and filtered out: at
10,000 companies with two questions each, about 380 rows per slot for 50
candidates (measured in the at-scale benchmark). The owner as a fourth column
makes it two range scans: company_id IS NULL, and company_id = the company.
The old three-column index is a prefix of this one and goes.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_index("ix_questions_kind_owner_active", "questions", ["type", "skill", "difficulty", "company_id"],
                    postgresql_where=sa.text("NOT deleted"))
    op.drop_index("ix_questions_kind_active", table_name="questions")


def downgrade() -> None:
    op.create_index("ix_questions_kind_active", "questions", ["type", "skill", "difficulty"],
                    postgresql_where=sa.text("NOT deleted"))
    op.drop_index("ix_questions_kind_owner_active", table_name="questions")
