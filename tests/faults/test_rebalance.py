"""Consumers joining and leaving the group while REST requests keep coming."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    Figures,
    Fleet,
    Progress,
    committed_offsets,
    company_key,
    dead_letters,
    group_member_count,
    locate_requests,
    logs_on_failure,
    max_wait,
    process_logs,
    run_calls,
    seeded,
    statuses,
    stored_results,
    wait_for_backlog,
    wait_group_change,
    wait_group_stable,
)
from tests.processes import start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

SEED = 77
COMPANIES = 6
MIN_REQUESTS = 400
TAIL = 80  # calls after the last membership change settled
MAX_LOAD_S = 180.0  # the load's bound, whatever happens (the changes took 14 s, 3,000 calls, measured)
# (progress, action, slot): two members at the start, then join, leave, join, leave.
CHANGES = [(60, "join", "c2"), (140, "leave", "c0"), (220, "join", "c3"), (300, "leave", "c1")]


def planned_calls(rng: Any, changer: threading.Thread, made: list[Call]) -> Iterator[Call]:
    """At least MIN_REQUESTS calls, and on until TAIL more after the membership
    changes are done: the load lasts as long as the changes take, however fast
    the machine answers (a fixed count once ended before the last change on a
    fast run). At most MAX_LOAD_S; each call kept in ``made``."""
    changes_done_at: int | None = None
    deadline = time.monotonic() + MAX_LOAD_S
    for n in itertools.count():
        if time.monotonic() > deadline:
            return
        if not changer.is_alive():
            changes_done_at = n if changes_done_at is None else changes_done_at
            if n >= max(MIN_REQUESTS, changes_done_at + TAIL):
                return
        company = rng.randint(1, COMPANIES)
        call = Call(n, company, [7100 + company * 10 + rng.randrange(4)], 200, api=n % 2)
        made.append(call)
        yield call


def world() -> dict[str, Any]:
    py = ("mcq", "python", "medium")
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": [question(q, py) for q in range(7000, 7030)],
        "assessments": [{"oid": 7100 + c * 10 + a, "company_id": c, "name": f"R{c}-{a}",
                         "sections": [{"name": "Python", "qids": [7000 + (c + a) % 30, 7000 + (c + a + 5) % 30]}]}
                        for c in range(1, COMPANIES + 1) for a in range(4)],
    }


def processed(log: str) -> int | None:
    match = re.search(r"consumer stopped after (\d+) message", log)
    return int(match.group(1)) if match else None


def report_lost(settings: Any, lost: list[Call]) -> None:
    """Where the unprocessed requests sit, and where the group's offsets stand."""
    if lost:
        where = locate_requests(settings, {c.request_id for c in lost if c.request_id})
        print(f"unprocessed requests (status, (partition, offset)): {[(c.status, where.get(c.request_id)) for c in lost][:10]}")
        print(f"the group's committed offsets on the request topic: {committed_offsets(settings, settings.request_topic)}")


def test_members_joining_and_leaving_answer_every_caller(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    """At least 400 REST requests (32 callers, two API processes) while the group
    changes four times: a third member joins, one of the first leaves (SIGTERM),
    another joins, the other first one leaves. Each change pauses the group
    (Tansu: about session.timeout / 2 per join), and a leaving member commits
    what it finished; every caller still gets its 200 within the reply timeout,
    every request has exactly one stored result, leaving members exit 0 and
    nothing is processed twice.

    Each change waits until the previous rebalance has settled: the group
    leader leaving while a join is in progress wedges the group on the local
    broker (a broker defect, reproduced by tests/faults/tansu_leave_during_join.py),
    which this test is not about."""
    rng = seeded(SEED)
    load(engine, world())
    settings = unique_settings(database_url, bootstrap_servers)
    fleet = Fleet(settings, tmp_path)
    apis = []
    figures = Figures("rebalance")
    with logs_on_failure(fleet.logs, process_logs(apis)):
        try:
            fleet.start("c0")
            fleet.start("c1")
            apis.extend(start_api(settings, tmp_path, name=f"api-{i}") for i in range(2))
            calls: list[Call] = []
            progress = Progress()
            departures: list[tuple[str, int | None, float]] = []
            settle_times: list[float] = []
            changer_error: list[BaseException] = []

            def change_membership() -> None:
                try:
                    wait_group_stable(settings)
                    for at, action, slot in CHANGES:
                        if not progress.wait_for(at):
                            return
                        t0 = time.monotonic()
                        if action == "join":
                            before = group_member_count(settings)
                            fleet.start(slot)
                            wait_group_change(settings, before)
                        else:
                            departures.append((slot, *fleet.terminate(slot, bound=15)))
                        wait_group_stable(settings)
                        settle_times.append(time.monotonic() - t0)
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    changer_error.append(exc)

            changer = threading.Thread(target=change_membership, name="membership", daemon=True)
            started = time.monotonic()
            changer.start()
            run_calls([a.url for a in apis], planned_calls(rng, changer, calls), workers=32,
                      client_timeout=settings.reply_timeout_s + 15, progress=progress)
            load_seconds = time.monotonic() - started
            changer.join(60)
            wait_for_backlog(engine, {"refresh.request": len(calls)}, timeout=30)
        finally:
            for api in apis:
                api.stop()
            fleet.stop_all()

        requests = stored_results(engine, "refresh.request")
        handled = [processed(p.log()) for p in fleet.history]
        not_200 = [c for c in calls if c.status != 200]
        without_result = [c for c in calls if c.request_id not in requests]
        mismatched = [c for c in calls if c.request_id in requests and requests[c.request_id].reply != c.body]
        figures.values.update(
            requests=len(calls), membership_changes=len(settle_times), statuses=statuses(calls),
            lost=len(without_result), processed_per_member=handled,
            reprocessed=sum(h or 0 for h in handled) - len(calls),
            departures=[(slot, rc, round(s, 1)) for slot, rc, s in departures],
            settle_s=[round(s, 1) for s in settle_times], max_wait_s=max_wait(calls), load_s=load_seconds,
        )
        figures.show()
        report_lost(settings, without_result)
        assert not changer_error, changer_error
        assert len(settle_times) == len(CHANGES), "every membership change happened (the load waits for them)"
        assert all(rc == 0 and seconds <= 15 for _, rc, seconds in departures), departures
        assert not not_200, f"callers without a 200: {[(c.n, c.status, c.body) for c in not_200[:5]]}"
        assert max_wait(calls) <= settings.reply_timeout_s
        assert not without_result and len(requests) == len(calls), "one stored result per request"
        assert not mismatched, f"callers got something other than the stored result: {mismatched[:3]}"
        assert all(h is not None for h in handled), f"every member stopped cleanly and said how much it did: {handled}"
        assert sum(handled) == len(calls), f"a leaving member's finished work was processed again: {handled}"
        assert dead_letters(settings) == 0
