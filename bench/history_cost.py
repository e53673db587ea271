"""What the assessment history costs a fan-out (scenario 6): the time
PostgreSQL spent in its trigger (record_assessment_history, migration 0009),
as a share of the fan-out's chunk transactions.

The trigger's time comes from pg_stat_user_functions (track_functions = 'pl'
for the bench database, set before the consumers connect); the chunks' from
refresh_job_chunks (each chunk's transaction start to its commit). The
trigger's time counted includes the small REST refreshes sent during the
fan-out, so the share is an upper bound.

BENCH_HISTORY=off runs the scenario with the trigger disabled, for the
fan-out's time without the history next to the time with it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import Engine, text

FUNCTION = "record_assessment_history"


def track(engine: Engine, database: str) -> None:
    """Time PL/pgSQL functions in every session opened from now on."""
    with engine.begin() as conn:
        conn.execute(text(f"ALTER DATABASE \"{database}\" SET track_functions = 'pl'"))
        on = os.environ.get("BENCH_HISTORY", "on") != "off"
        conn.execute(text(f"ALTER TABLE assessment_slots {'ENABLE' if on else 'DISABLE'} TRIGGER assessment_slots_history"))


def trigger_ms(engine: Engine) -> float:
    """The trigger's total time so far (after the backends' statistics flush, about a second)."""
    time.sleep(2.0)
    with engine.connect() as conn:
        value = conn.execute(text("SELECT coalesce(sum(total_time), 0) FROM pg_stat_user_functions "
                                  "WHERE funcname = :f"), {"f": FUNCTION}).scalar()
    return float(value or 0.0)


def share(engine: Engine, job_id: str, trigger_ms_before: float) -> dict[str, Any]:
    """The history's time against the fan-out's chunk transactions."""
    spent_ms = trigger_ms(engine) - trigger_ms_before
    with engine.connect() as conn:
        chunks_s = conn.execute(text("SELECT coalesce(sum(extract(epoch FROM done_at - started_at)), 0) "
                                     "FROM refresh_job_chunks WHERE job_id = :id"), {"id": job_id}).scalar()
        rows = conn.execute(text("SELECT count(*) FROM assessment_history WHERE trigger ->> 'event_id' = :id"),
                            {"id": job_id}).scalar()
    chunks_ms = 1000 * float(chunks_s or 0)
    return {"trigger_ms": round(spent_ms, 1), "chunk_transactions_ms": round(chunks_ms, 1), "rows": rows,
            "share": round(spent_ms / chunks_ms, 3) if chunks_ms else None}
