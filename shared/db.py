"""Engine creation and schema migration."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine

from shared.tracing import trace_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(database_url: str, **kwargs: object) -> Engine:
    # pool_pre_ping: survive a PostgreSQL restart without handing out dead connections.
    # hide_parameters: error texts (logged, dead-lettered) never carry bound
    # values, which hold question content and API key hashes.
    engine = create_engine(database_url, pool_pre_ping=True, hide_parameters=True, future=True, **kwargs)
    trace_engine(engine)  # statement spans, when tracing is on
    return engine


def ping(engine: Engine) -> bool:
    """True when the database answers (raises when it does not)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    return True


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Safe to run from several processes at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        # One migrator at a time: two API replicas starting together must not race.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
