"""The PostgreSQL settings of assessment_refresh/pg_sizing.py: sized to the
memory each server may use, and the same in docker-compose.yml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assessment_refresh import pg_sizing

ROOT = Path(__file__).resolve().parents[2]
GB = 2**30


def compose_flags() -> dict[str, str]:
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    flags = command[1:]
    assert flags[::2] == ["-c"] * (len(flags) // 2), "every setting given as -c name=value"
    return dict(flag.split("=", 1) for flag in flags[1::2])


def test_compose_passes_the_modules_settings() -> None:
    assert compose_flags() == pg_sizing.compose_settings()


def test_a_quarter_of_the_memory_is_shared_buffers() -> None:
    s = pg_sizing.sized(16 * GB)
    assert s["shared_buffers"] == "4096MB"
    assert s["effective_cache_size"] == "12288MB"
    assert s["max_wal_size"] == "8192MB"
    assert s["shared_preload_libraries"] == "pg_stat_statements"


def test_tiny_budgets_keep_workable_floors() -> None:
    s = pg_sizing.sized(64 * 2**20)
    assert s["shared_buffers"] == "32MB"
    assert s["max_wal_size"] == "1024MB"


@pytest.mark.parametrize(("role", "cap"), [("test", 512 * 2**20), ("dev", 2 * GB), ("bench", 16 * GB)])
def test_each_role_is_capped_whatever_the_machine(role: pg_sizing.Role, cap: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg_sizing.MEMORY_ENV, raising=False)
    assert pg_sizing.memory_budget(role, total_memory=1024 * GB) == cap
    assert pg_sizing.memory_budget(role, total_memory=1 * GB) < cap


def test_test_servers_stay_modest_on_a_big_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several test sessions share a machine, each with its own server."""
    monkeypatch.delenv(pg_sizing.MEMORY_ENV, raising=False)
    budget = pg_sizing.memory_budget("test", total_memory=64 * GB)
    assert pg_sizing.sized(budget)["shared_buffers"] == "128MB"


def test_the_budget_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg_sizing.MEMORY_ENV, "1024")
    assert pg_sizing.memory_budget("bench", total_memory=64 * GB) == GB
