"""`python -m bench.explain [--fraction F]`: EXPLAIN (ANALYZE, BUFFERS, WAL) of
every statement a fan-out chunk and a company refresh send, as the consumer
sends them.

Loads the scale world (bench/scale_world.py) at ``F`` into a fresh database
(embedded PostgreSQL sized as the benchmark's, unless DATABASE_URL), then runs
the deletion of the popular question and the big company's refresh through
the real handlers, in-process, with auto_explain in every session (its plans
come back as notices). Prints one plan per distinct statement (the first
chunk's; later chunks send the same statements) with its time.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, text

from assessment_refresh.loader import load_world, parse_world
from bench.env import database
from bench.scale_world import BIG_COMPANY, POPULAR_QID, ScaleSizes, build
from bench.world import company_changes
from consumer.handlers import Handlers
from shared.db import make_engine
from shared.messages import QUESTION_DELETED, QuestionEvent, RefreshRequested, new_id, utc_now_iso
from shared.settings import Settings

_SETUP = ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0", "SET auto_explain.log_analyze = on",
          "SET auto_explain.log_buffers = on", "SET auto_explain.log_wal = on",
          "SET auto_explain.log_nested_statements = on", "SET auto_explain.log_triggers = on",
          "SET client_min_messages = log")


@contextmanager
def explained(engine: Engine) -> Iterator[list[str]]:
    """Every plan the engine's sessions log meanwhile (as notices)."""
    plans: list[str] = []
    connections: list[Any] = []

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            for statement in _SETUP:
                cur.execute(statement)
        dbapi_conn.notices.clear()
        connections.append(dbapi_conn)

    def after_execute(conn: Any, *_args: Any) -> None:
        raw = conn.connection.dbapi_connection
        plans.extend(n for n in raw.notices if "duration:" in n)
        raw.notices.clear()

    engine.dispose()
    event.listen(engine, "connect", on_connect)
    event.listen(engine, "after_cursor_execute", after_execute)
    try:
        yield plans
    finally:
        event.remove(engine, "after_cursor_execute", after_execute)
        event.remove(engine, "connect", on_connect)
        engine.dispose()


def distinct(plans: list[str]) -> list[str]:
    """The first plan of each statement (by its text without literals)."""
    seen: set[str] = set()
    out = []
    for plan in plans:
        query = " ".join(plan.split("Query Text:", 1)[-1].split())
        key = re.sub(r"'[^']*'|\d+", "?", query)[:120]
        if key not in seen:
            seen.add(key)
            out.append(plan)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fraction", type=float, default=0.01)
    args = p.parse_args()
    sizes = ScaleSizes(args.fraction)
    with database(os.environ.get("DATABASE_URL")) as url:
        engine = make_engine(url, pool_size=2)
        load_world(engine, parse_world(build(sizes), "scale world"), "scale world")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))  # outside a transaction, or it leaves no statistics
        handlers = Handlers(engine, Settings.from_env(database_url=url))
        with explained(engine) as plans:
            handlers.question_event(QuestionEvent(new_id(), QUESTION_DELETED, utc_now_iso(), qid=POPULAR_QID))
        print(f"==== fan-out of question {POPULAR_QID}: {len(plans)} statements, first of each\n")
        print("\n\n".join(distinct(plans)))
        with engine.connect() as conn:
            changes = company_changes(conn, [BIG_COMPANY], rep=0)
        load_world(engine, parse_world(changes, "big company changes"), "big company changes")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE questions"))
        with explained(engine) as plans:
            handlers.refresh_requested(RefreshRequested(new_id(), BIG_COMPANY, None), None)
        print(f"\n==== the big company's refresh: {len(plans)} statements, first of each\n")
        print("\n\n".join(distinct(plans)))
        engine.dispose()


if __name__ == "__main__":
    main()
