"""Initial schema: companies, API keys, question bank, assessments, slots, inbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("company_id", sa.BigInteger, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS),
    )
    op.create_table(
        "questions",
        sa.Column("qid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("company_id", sa.BigInteger, sa.ForeignKey("companies.id")),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("skill", sa.Text, nullable=False),
        sa.Column("difficulty", sa.Text, nullable=False),
        sa.Column("content", JSONB, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("deleted_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index(
        "ix_questions_kind_active",
        "questions",
        ["type", "skill", "difficulty"],
        postgresql_where=sa.text("NOT deleted"),
    )
    op.create_table(
        "assessments",
        sa.Column("oid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("company_id", sa.BigInteger, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("refreshed_at", TS),
    )
    op.create_index("ix_assessments_company_id", "assessments", ["company_id"])
    op.create_table(
        "assessment_sections",
        sa.Column(
            "oid",
            sa.BigInteger,
            sa.ForeignKey("assessments.oid", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("section_idx", sa.SmallInteger, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    op.create_table(
        "assessment_slots",
        sa.Column("oid", sa.BigInteger, primary_key=True),
        sa.Column("section_idx", sa.SmallInteger, primary_key=True),
        sa.Column("question_idx", sa.SmallInteger, primary_key=True),
        sa.Column("qid", sa.BigInteger, sa.ForeignKey("questions.qid"), nullable=False),
        sa.Column("snapshot", JSONB, nullable=False),
        sa.Column("snapshot_version", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(
            ["oid", "section_idx"],
            ["assessment_sections.oid", "assessment_sections.section_idx"],
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "oid", "qid", name="uq_slot_question_once", deferrable=True, initially="DEFERRED"
        ),
    )
    op.create_index("ix_assessment_slots_qid", "assessment_slots", ["qid"])
    op.create_table(
        "processed_messages",
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("company_id", sa.BigInteger),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("reply", JSONB, nullable=False),
        sa.Column("events", JSONB, nullable=False, server_default="[]"),
        sa.Column("processed_at", TS, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    for table in (
        "processed_messages",
        "assessment_slots",
        "assessment_sections",
        "assessments",
        "questions",
        "api_keys",
        "companies",
    ):
        op.drop_table(table)
