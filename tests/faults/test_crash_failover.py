"""A consumer SIGKILLed under load and restarted at once, on a broker with
Kafka's stock group settings (45 s sessions): with an instance id (static
membership, classic protocol) the restarted process takes its partitions back
at once, so every caller is answered 200 in far less than the session; without
one (the default, consumer protocol) the figure is printed: the killed member's
partitions wait for its session to expire.

docs/operations.md has the measured support matrix (which protocol keeps a
restarted static member, and which refuses it until the session expires).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from assessment_refresh.apache_kafka import ApacheKafka
from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    Figures,
    Fleet,
    Progress,
    company_key,
    dead_letters,
    logs_on_failure,
    max_wait,
    process_logs,
    run_calls,
    seeded,
    skip_without_apache_kafka,
    statuses,
    stored_results,
    wait_for_backlog,
    wait_group_stable,
)
from tests.processes import ServiceProcess, start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

# Kafka's defaults for group timing (DEV_SETTINGS of the local broker lower them).
STOCK_GROUPS = {
    "group.consumer.session.timeout.ms": "45000", "group.consumer.min.session.timeout.ms": "45000",
    "group.consumer.heartbeat.interval.ms": "5000", "group.consumer.min.heartbeat.interval.ms": "5000",
    "group.min.session.timeout.ms": "6000", "group.initial.rebalance.delay.ms": "3000",
}
SESSION_S = 45.0
COMPANIES = 8
IN_FLIGHT = 120  # callers, each with one request outstanding
CALLS = 600
KILL_AT = 150  # finished calls before c0 is SIGKILLed (and restarted at once)
# What static membership promises: the partitions are back once the new process
# has started and joined (seconds), far below the 45 s session. The slack is
# for process start-up on a loaded 2-core machine.
STATIC_BOUND_S = SESSION_S / 3


def world() -> dict[str, Any]:
    py = ("mcq", "python", "medium")
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": [question(q, py) for q in range(7700, 7730)],
        "assessments": [{"oid": 7800 + c * 10 + a, "company_id": c, "name": f"F{c}-{a}",
                         "sections": [{"name": "Python", "qids": [7700 + (c + a) % 30, 7700 + (c + a + 5) % 30]}]}
                        for c in range(1, COMPANIES + 1) for a in range(4)],
    }


@pytest.fixture(scope="module")
def stock_kafka() -> Iterator[ApacheKafka]:
    skip_without_apache_kafka()
    with ApacheKafka(extra_settings=STOCK_GROUPS) as kafka:
        yield kafka


@pytest.mark.parametrize(("protocol", "static"), [("classic", True), ("consumer", False)],
                         ids=["static-classic", "dynamic-consumer"])
def test_a_consumer_killed_and_restarted_takes_its_partitions_back(
    protocol: str, static: bool, stock_kafka: ApacheKafka, database_url: str, engine: Engine, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two consumers, two API processes, 120 callers. At 150 finished calls c0
    is SIGKILLed and started again at once (under the same instance id when
    static). Static: every call is answered 200, within a third of the session,
    by its one stored result. Dynamic: every call is answered (200 or, past
    the reply timeout, 504) and processed once; the wait is the figure."""
    monkeypatch.setenv("BROKER_PROFILE", "kafka")
    rng = seeded(20)
    load(engine, world())
    settings = unique_settings(database_url, stock_kafka.bootstrap_servers, kafka_group_protocol=protocol,
                               kafka_session_timeout_ms=int(SESSION_S * 1000), reply_timeout_s=30.0)
    fleet = Fleet(settings, tmp_path)
    apis: list[ServiceProcess] = []
    env = (lambda slot: {"CONSUMER_INSTANCE_ID": f"{settings.consumer_group}-{slot}"}) if static else (lambda _s: {})
    figures = Figures(f"crash-failover-{'static' if static else 'dynamic'}-{protocol}")
    with logs_on_failure(fleet.logs, process_logs(apis)):
        try:
            for slot in ("c0", "c1"):
                fleet.start(slot, env=env(slot))
            apis.extend(start_api(settings, tmp_path, name=f"api-{i}") for i in range(2))
            wait_group_stable(settings, timeout=60, hold=1.0)
            warm_up = [Call(-1 - c, c, [7800 + c * 10], 200, api=c % 2) for c in range(1, COMPANIES + 1)]
            run_calls([a.url for a in apis], warm_up, workers=4, client_timeout=settings.reply_timeout_s + 15)
            assert all(c.status == 200 for c in warm_up), statuses(warm_up)

            calls = [Call(n, (company := rng.randint(1, COMPANIES)), [7800 + company * 10 + rng.randrange(4)], 200,
                          api=n % 2) for n in range(CALLS)]
            progress = Progress()
            killed_at: list[float] = []

            def kill_and_restart() -> None:
                if progress.wait_for(KILL_AT):
                    fleet.kill("c0")
                    killed_at.append(time.monotonic())
                    fleet.start("c0", env=env("c0"))

            supervisor = threading.Thread(target=kill_and_restart, daemon=True)
            supervisor.start()
            run_calls([a.url for a in apis], calls, workers=IN_FLIGHT, client_timeout=settings.reply_timeout_s + 15,
                      progress=progress)
            supervisor.join(10)
            wait_for_backlog(engine, {"refresh.request": len(warm_up) + len(calls)}, timeout=90)
        finally:
            for api in apis:
                api.stop()
            fleet.stop_all()

        requests = stored_results(engine, "refresh.request")
        kill = killed_at[0] if killed_at else float("nan")
        after_kill = [c for c in calls if c.started + c.waited >= kill]
        not_answered = [c for c in calls if c.status is None]
        without_result = [c for c in calls if c.request_id not in requests]
        mismatched = [c for c in calls if c.status == 200 and c.request_id in requests
                      and requests[c.request_id].reply != c.body]
        figures.values.update(
            requests=len(calls), in_flight=IN_FLIGHT, statuses=statuses(calls), lost=len(without_result),
            max_wait_s=max_wait(calls), max_wait_after_kill_s=max_wait(after_kill),
            session_s=SESSION_S, restarts=len(fleet.history) - 2,
        )
        figures.show()
        assert killed_at, "the kill happened during the load"
        assert not not_answered, f"callers without an HTTP answer: {not_answered[:3]}"
        assert not without_result, f"requests never processed: {without_result[:3]}"
        assert len(requests) == len(warm_up) + len(calls), "one stored result per request"
        assert not mismatched, f"callers got something other than the stored result: {mismatched[:3]}"
        assert dead_letters(settings) == 0
        if static:
            assert statuses(calls) == {200: len(calls)}, statuses(calls)
            assert max_wait(calls) < STATIC_BOUND_S, f"a caller waited {max_wait(calls):.1f} s after the crash"
        else:
            assert set(statuses(calls)) <= {200, 504}, statuses(calls)
