"""What PostgreSQL itself says about a measured stretch of work.

Per statement (pg_stat_statements: calls, time, shared blocks, WAL), WAL
written (pg_stat_wal), checkpoints (pg_stat_checkpointer) and autovacuum runs
(pg_stat_user_tables), as differences between two readings, plus the
server's settings. Where the extension is not loaded (an external server
without it) the statements are left out and said so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from assessment_refresh.pg_sizing import REPORTED

_STATEMENTS = text(
    """
    SELECT query, calls, total_exec_time, mean_exec_time, rows, shared_blks_hit, shared_blks_read,
           shared_blks_dirtied, shared_blks_written, wal_bytes, wal_fpi
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY total_exec_time DESC LIMIT :top
    """
)
_COUNTERS = text(
    """
    SELECT (SELECT wal_bytes FROM pg_stat_wal) AS wal_bytes,
           (SELECT wal_fpi FROM pg_stat_wal) AS wal_fpi,
           (SELECT num_timed FROM pg_stat_checkpointer) AS checkpoints_timed,
           (SELECT num_requested FROM pg_stat_checkpointer) AS checkpoints_requested,
           (SELECT buffers_written FROM pg_stat_checkpointer) AS checkpoint_buffers,
           (SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables) AS autovacuums,
           (SELECT coalesce(sum(autoanalyze_count), 0) FROM pg_stat_user_tables) AS autoanalyzes
    """
)


def server_settings(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, current_setting(name) AS value FROM pg_settings "
                                 "WHERE name = ANY(:names)"), {"names": list(REPORTED)})
        return {r.name: r.value for r in rows}


def enable_statements(engine: Engine) -> bool:
    """Create the extension in the bench's database; False where it cannot be."""
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            conn.execute(text("SELECT count(*) FROM pg_stat_statements"))
        return True
    except Exception:  # noqa: BLE001 - not in shared_preload_libraries: left out, said so
        return False


def checkpoint(engine: Engine) -> None:
    """A checkpoint before a timed stretch, so that the floor and the product
    each start right after one and pay the same full-page images (the first
    write of each page after a checkpoint logs the whole page: at 100,000
    assessments a checkpoint in the middle of a run was 700 MB of WAL)."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))
    except Exception:  # noqa: BLE001 - not allowed on an external server: its runs are timed as they come
        pass


@dataclass
class Reading:
    """Started by ``begin``, finished by ``end``: what the server did in between."""

    engine: Engine
    statements: bool
    _start: dict[str, Any] = field(default_factory=dict)

    def begin(self) -> Reading:
        with self.engine.begin() as conn:
            if self.statements:
                conn.execute(text("SELECT pg_stat_statements_reset()"))
            self._start = dict(conn.execute(_COUNTERS).one()._mapping)
        return self

    def end(self, top: int = 12) -> dict[str, Any]:
        with self.engine.connect() as conn:
            now = dict(conn.execute(_COUNTERS).one()._mapping)
            rows = conn.execute(_STATEMENTS, {"top": top}).all() if self.statements else []
        out: dict[str, Any] = {k: int(now[k] - self._start[k]) for k in now}
        out["statements"] = [
            {"query": _short(r.query), "calls": r.calls, "total_ms": round(r.total_exec_time, 1),
             "mean_ms": round(r.mean_exec_time, 3), "rows": r.rows, "hit": r.shared_blks_hit,
             "read": r.shared_blks_read, "dirtied": r.shared_blks_dirtied, "written": r.shared_blks_written,
             "wal_mb": round(float(r.wal_bytes) / 2**20, 1), "wal_fpi": r.wal_fpi}
            for r in rows
        ] if self.statements else "pg_stat_statements not loaded"
        return out


def _short(query: str, width: int = 90) -> str:
    one_line = re.sub(r"\s+", " ", query).strip()
    return one_line if len(one_line) <= width else one_line[: width - 3] + "..."


STATEMENT_HEADER = ["statement", "calls", "total ms", "mean ms", "rows", "hit", "read", "dirtied", "written",
                    "WAL MB", "FPI"]


def statement_rows(reading: dict[str, Any]) -> list[list[Any]]:
    if not isinstance(reading.get("statements"), list):
        return []
    return [[s["query"], s["calls"], s["total_ms"], s["mean_ms"], s["rows"], s["hit"], s["read"], s["dirtied"],
             s["written"], s["wal_mb"], s["wal_fpi"]] for s in reading["statements"]]


def markdown(title: str, reading: dict[str, Any]) -> str:
    """The per-statement table as markdown, with the stretch's totals."""
    lines = [f"### {title}", "",
             f"WAL {reading['wal_bytes'] / 2**20:.1f} MB ({reading['wal_fpi']} full-page images), "
             f"checkpoints {reading['checkpoints_timed']} timed + {reading['checkpoints_requested']} requested "
             f"({reading['checkpoint_buffers']} buffers), autovacuum {reading['autovacuums']}, "
             f"autoanalyze {reading['autoanalyzes']}", "",
             "| " + " | ".join(STATEMENT_HEADER) + " |", "|" + "---|" * len(STATEMENT_HEADER)]
    for row in statement_rows(reading):
        cells = [str(c).replace("|", "\\|") for c in row]
        lines.append("| `" + cells[0] + "` | " + " | ".join(cells[1:]) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(path: str) -> str:
    """The per-statement tables of a scenario-6 results file, with each
    timed refresh's floor, product time and ratio."""
    import json
    from pathlib import Path

    results = json.loads(Path(path).read_text())
    out = [f"# Per statement, from {path.rsplit('/', 1)[-1]}", ""]
    for broker, run in results["runs"].items():
        settings = run.get("postgres_settings", {})
        out += [f"## {broker}: PostgreSQL {settings.get('server_version', '?')}, shared_buffers "
                f"{settings.get('shared_buffers', '?')}, max_wal_size {settings.get('max_wal_size', '?')}", ""]
        for fraction, s6 in run.get("6_at_scale", {}).items():
            for part in ("fan_out", "company"):
                r = s6[part]
                title = (f"scale {fraction}, {part.replace('_', '-')} of {r['assessments']} assessments: "
                         f"{r['seconds']} s, floor {r.get('floor_seconds')} s, ratio {r.get('ratio_to_floor')}")
                if "postgres" in r:
                    out.append(markdown(title, r["postgres"]))
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(results_markdown(sys.argv[1]))
