"""Fixtures of the security and bad-input suite.

One consumer process and one API process (uvicorn) serve every module of this
package that asks for ``service`` (package scope: starting them once keeps the
suite fast); each test loads the world it needs through the ``engine`` fixture,
which empties the tables first. Tests that need processes configured otherwise
(LOG_LEVEL=DEBUG) start their own.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from shared.settings import Settings
from tests.conftest import unique_settings
from tests.processes import ServiceProcess, start_api, start_consumer

PATH = "/assessments/refresh-assessments"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this package runs alone with ``-m security``."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.security)


@dataclass
class Running:
    """The processes of the shared service."""

    api: ServiceProcess
    consumer: ServiceProcess


@pytest.fixture(scope="package")
def security_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-logs")


@pytest.fixture(scope="package")
def service_settings(database_url: str, bootstrap_servers: str) -> Settings:
    return unique_settings(database_url, bootstrap_servers)


@pytest.fixture(scope="package")
def running(service_settings: Settings, security_log_dir: Path) -> Iterator[Running]:
    consumer = start_consumer(service_settings, security_log_dir)
    try:
        api = start_api(service_settings, security_log_dir)
    except BaseException:
        consumer.stop()
        raise
    try:
        yield Running(api, consumer)
    finally:
        api.stop()
        consumer.stop()


@pytest.fixture(scope="package")
def service(running: Running) -> ServiceProcess:
    """The API process (its ``url``), as in tests/e2e."""
    return running.api


# -- database snapshots ----------------------------------------------------------

# What a request may never change unless it is a 200 for that assessment. The
# inbox (processed_messages) is left out: every 200 and 403 records its reply.
STATE_TABLES = ("companies", "api_keys", "questions", "assessments", "assessment_sections", "assessment_slots")


def table_dump(engine: Engine, tables: tuple[str, ...] = STATE_TABLES) -> dict[str, list[str]]:
    """Every row of these tables as sorted JSON text."""
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table in tables:
            out[table] = sorted(conn.execute(text(f'SELECT to_jsonb(t)::text FROM "{table}" t')).scalars())
    return out


def state_digest(engine: Engine) -> str:
    """One hash of every row of STATE_TABLES: cheap enough to take around every request."""
    return hashlib.sha256(json.dumps(table_dump(engine)).encode()).hexdigest()


def all_user_tables(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
                )
            ).scalars()
        )


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in all_user_tables(engine)}


# -- request statistics, printed at the end of the run ---------------------------

REQUEST_STATS: dict[str, Counter[int]] = {}


def record_status(group: str, status: int) -> None:
    REQUEST_STATS.setdefault(group, Counter())[status] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REQUEST_STATS:
        return
    terminalreporter.section("HTTP requests sent by tests/security")
    total: Counter[int] = Counter()
    for group, statuses in REQUEST_STATS.items():
        total.update(statuses)
        histogram = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        terminalreporter.write_line(f"{group}: {sum(statuses.values())} requests ({histogram})")
    histogram = ", ".join(f"{s}: {n}" for s, n in sorted(total.items()))
    terminalreporter.write_line(f"total: {sum(total.values())} requests ({histogram})")
