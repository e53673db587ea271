"""PostgreSQL server settings sized for the service's work, in one place.

Every PostgreSQL this project starts takes its settings from here: the
embedded server of `dev`, of the test suite and of the benchmark
(assessment_refresh.local_servers), and docker-compose's (its ``command:``
passes ``compose_settings()`` as ``-c`` flags; tests/unit/test_pg_sizing.py
checks the two agree).

Why these four: a refresh rewrites slots (and their TOASTed snapshots) in
bulk. PostgreSQL's defaults (128 MB of shared buffers, 1 GB of WAL between
checkpoints, a checkpoint every 5 minutes) make a large refresh read the
slots from the OS cache again and again and checkpoint in the middle of it,
writing every dirtied page a second time (full-page images). Measured at
100,000 assessments: 218 s on the defaults, 69 s sized (issue 19).

Sizing follows PostgreSQL's usual advice: shared_buffers a quarter of the
memory the server may use, effective_cache_size three quarters (it only
steers the planner), a WAL budget large enough that a refresh of the whole
world does not force a checkpoint, and checkpoints by time rather than by WAL.
"""

from __future__ import annotations

import os
from typing import Literal

MB = 2**20
# "defaults": PostgreSQL's own settings (the benchmark compares the two).
Role = Literal["dev", "test", "bench", "defaults"]

# The share of the machine's memory each role may plan for, and a cap: a test
# server shares the machine with several test sessions (and their brokers);
# `dev` is a laptop's background process; the benchmark has the machine.
_BUDGET: dict[str, tuple[float, int]] = {
    "test": (0.05, 512 * MB),
    "dev": (0.25, 2048 * MB),
    "bench": (0.5, 16384 * MB),
}
# EMBEDDED_PG_MEMORY_MB overrides the budget (e.g. a bigger test machine, or
# a benchmark run on the defaults' scale).
MEMORY_ENV = "EMBEDDED_PG_MEMORY_MB"

# pg_stat_statements is how the time per statement is found (bench, operators);
# loading it costs a few percent at most and nothing until queried.
_ALWAYS = {"shared_preload_libraries": "pg_stat_statements"}


def memory_budget(role: Role, total_memory: int | None = None) -> int:
    """Bytes of memory the server of ``role`` may plan for on this machine."""
    if override := os.environ.get(MEMORY_ENV):
        return int(override) * MB
    share, cap = _BUDGET[role]
    total = total_memory if total_memory is not None else physical_memory()
    return min(int(total * share), cap)


def physical_memory() -> int:
    """The machine's memory in bytes (POSIX sysconf: no dependency the base install lacks)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def sized(memory: int) -> dict[str, str]:
    """Server settings for a PostgreSQL that may use ``memory`` bytes."""
    mb = max(memory // MB, 128)
    shared_buffers = max(mb // 4, 32)
    return {
        "shared_buffers": f"{shared_buffers}MB",
        "effective_cache_size": f"{max(mb * 3 // 4, 64)}MB",
        # WAL between checkpoints: twice the buffers (a bulk refresh dirties
        # at most the buffers' worth before they are written), at least 1 GB.
        "max_wal_size": f"{max(2 * shared_buffers, 1024)}MB",
        "checkpoint_timeout": "15min",
        **_ALWAYS,
    }


def embedded_settings(role: Role) -> dict[str, str]:
    """The settings of an embedded server started for ``role``."""
    return dict(_ALWAYS) if role == "defaults" else sized(memory_budget(role))


# docker-compose's PostgreSQL: a host of 8 GB given to the database. A larger
# host scales these with sized(); docs/operations.md (sizing PostgreSQL) says how.
COMPOSE_MEMORY = 8192 * MB


def compose_settings() -> dict[str, str]:
    return sized(COMPOSE_MEMORY)


# The settings the benchmark records with its results (and shows per run).
REPORTED = ("server_version", "shared_buffers", "effective_cache_size", "max_wal_size", "checkpoint_timeout",
            "work_mem", "maintenance_work_mem", "wal_level", "synchronous_commit", "fsync", "full_page_writes",
            "wal_compression", "shared_preload_libraries", "max_connections", "autovacuum")
