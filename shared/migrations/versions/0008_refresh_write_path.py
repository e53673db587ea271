"""The refresh's write path as cheap as one SQL statement's (issue 19).

Measured with pg_stat_statements and EXPLAIN (ANALYZE, BUFFERS, WAL) of every
statement of a 500-assessment chunk (bench/explain.py):

- HOT updates. A stale slot's refresh changes only its snapshot, and a
  stamp only refreshed_at, none of them indexed: with room left on the page
  (fillfactor) the new row version stays on it and no index is touched. At
  fillfactor 100 every such update moved the row and wrote every index.
  Takes effect for pages written from now on (a VACUUM FULL rewrites the rest).
- The foreign key from a slot's qid to questions. Its check runs once per
  changed slot (an SPI look-up and a key-share lock: 12 of 17 ms of a
  chunk's slot update). Questions are never deleted (a deletion is a flag),
  the loader rejects unknown qids, and every statement that writes a slot's
  qid reads that question in the same statement (and share-locks it), so
  the check only repeated what was known.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"

SLOTS_FILLFACTOR = 85
ASSESSMENTS_FILLFACTOR = 80


def upgrade() -> None:
    op.execute(f"ALTER TABLE assessment_slots SET (fillfactor = {SLOTS_FILLFACTOR})")
    op.execute(f"ALTER TABLE assessments SET (fillfactor = {ASSESSMENTS_FILLFACTOR})")
    op.drop_constraint("assessment_slots_qid_fkey", "assessment_slots", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key("assessment_slots_qid_fkey", "assessment_slots", "questions", ["qid"], ["qid"])
    op.execute("ALTER TABLE assessments RESET (fillfactor)")
    op.execute("ALTER TABLE assessment_slots RESET (fillfactor)")
