"""Alembic environment: runs migrations on the connection handed in by shared.db.migrate."""

from __future__ import annotations

from alembic import context

from shared.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
