"""Two consumers scaled down at the same moment while a third joins, under REST load.

The case that wedges a Tansu group (a member leaving while another's join is
pending: tests/faults/tansu_leave_during_join.py reproduces it there). On
Apache Kafka the group must keep serving, with either group protocol: KIP-848's
"consumer" protocol (the broker assigns incrementally) and the "classic" one
(a join-and-sync round). The figures are the pause the change costs each.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    Figures,
    Fleet,
    Progress,
    answered_gaps,
    company_key,
    dead_letters,
    logs_on_failure,
    max_wait,
    process_logs,
    quiet_admin,
    run_calls,
    seeded,
    statuses,
    stored_results,
    wait_for_backlog,
    wait_group_stable,
)
from tests.processes import ServiceProcess, start_api
from tests.waiting import eventually
from tests.worlds import load, question

pytestmark = pytest.mark.faults

SEED = 848
COMPANIES = 8  # their keys land on every partition of the request topic (murmur2: 0: 1, 5, 7, 8; 1: 4, 6; 2: 2, 3)
CHANGE_AT = 150  # finished calls before the third member is started
AFTER_CALLS = 250  # calls after the group settled again
MAX_CALLS = 3000  # the load's bound, whatever happens
WORKERS = 32  # callers
JOIN_BOUND_S = 30.0  # the third member's process starts and joins within this


def world() -> dict[str, Any]:
    py = ("mcq", "python", "medium")
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": [question(q, py) for q in range(7500, 7530)],
        "assessments": [{"oid": 7600 + c * 10 + a, "company_id": c, "name": f"S{c}-{a}",
                         "sections": [{"name": "Python", "qids": [7500 + (c + a) % 30, 7500 + (c + a + 5) % 30]}]}
                        for c in range(1, COMPANIES + 1) for a in range(4)],
    }


def processed(log: str) -> int | None:
    match = re.search(r"consumer stopped after (\d+) message", log)
    return int(match.group(1)) if match else None


def describe_group(settings: Settings, admin: Any = None) -> Any:
    admin = admin or quiet_admin(settings.kafka_bootstrap_servers)
    future = admin.describe_consumer_groups([settings.consumer_group], request_timeout=5)[settings.consumer_group]
    return future.result()


def group_view(settings: Settings, admin: Any = None) -> tuple[str, int]:
    """(state, number of members) of the live group, as the broker describes it
    (confluent-kafka names KIP-848's ASSIGNING and RECONCILING states UNKNOWN)."""
    group = describe_group(settings, admin)
    return str(group.state).rsplit(".", 1)[-1], len(group.members)


def request_partitions(settings: Settings) -> list[list[int]]:
    """The request topic's partitions each member owns, by member."""
    owned = [sorted(tp.partition for tp in (m.assignment.topic_partitions if m.assignment else [])
                    if tp.topic == settings.request_topic) for m in describe_group(settings).members]
    return sorted(owned)


class ScaleDown(threading.Thread):
    """Once the group is stable and ``at`` calls finished: start member c2 and,
    as soon as the broker shows its join (a third member, or the group leaving
    STABLE), SIGTERM c0 and c1 at the same moment; then wait for the group to
    settle with c2 alone."""

    def __init__(self, fleet: Fleet, settings: Settings, progress: Progress, at: int) -> None:
        super().__init__(name="scale-down", daemon=True)
        self.fleet, self.settings, self.progress, self.at = fleet, settings, progress, at
        self.join_started: float | None = None
        self.terminated_at: float | None = None
        self.seen_at_terminate: tuple[str, int] | None = None
        self.departures: list[tuple[str, int | None, float]] = []
        self.settled_at: float | None = None
        self.settled_progress: int | None = None
        self.members_after: int | None = None
        self.owned_before: list[list[int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            wait_group_stable(self.settings)
            if not self.progress.wait_for(self.at):
                return
            self.owned_before = request_partitions(self.settings)
            # One client, asked every 10 ms: a classic join is pending for
            # well under a second (until the first two members rejoin).
            admin = quiet_admin(self.settings.kafka_bootstrap_servers)
            self.join_started = time.monotonic()
            self.fleet.start("c2")
            self.seen_at_terminate = eventually(lambda: self._joining(admin), timeout=JOIN_BOUND_S, interval=0.01,
                                                what="the third member's join")
            leaving = {slot: self.fleet.current.pop(slot) for slot in ("c0", "c1")}
            self.terminated_at = time.monotonic()
            for process in leaving.values():
                process.process.send_signal(signal.SIGTERM)
            for slot, process in leaving.items():
                try:
                    rc: int | None = process.process.wait(max(0.1, self.terminated_at + 15 - time.monotonic()))
                except subprocess.TimeoutExpired:
                    rc = None
                self.departures.append((slot, rc, time.monotonic() - self.terminated_at))
            wait_group_stable(self.settings, timeout=45, hold=1.0)
            self.settled_at = time.monotonic()
            self.settled_progress = self.progress.value
            self.members_after = group_view(self.settings)[1]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _joining(self, admin: Any) -> tuple[str, int] | None:
        state, members = group_view(self.settings, admin)
        return (state, members) if state != "STABLE" or members >= 3 else None


def planned_calls(rng: Any, change: ScaleDown, made: list[Call]) -> Iterator[Call]:
    """Calls until AFTER_CALLS more finished after the group settled (or the
    scale-down failed), at most MAX_CALLS; each kept in ``made``."""
    for n in range(MAX_CALLS):
        if change.settled_progress is not None and change.progress.value >= change.settled_progress + AFTER_CALLS:
            return
        if change.error is not None or (not change.is_alive() and change.settled_progress is None and n > change.at):
            return
        company = rng.randint(1, COMPANIES)
        call = Call(n, company, [7600 + company * 10 + rng.randrange(4)], 200, api=n % 2)
        made.append(call)
        yield call


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_two_members_leaving_at_once_while_a_third_joins_keep_the_group_serving(
    protocol: str, database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    """Two consumers serve REST load (two API processes, 32 callers). At 150
    finished calls a third consumer starts, and while its join is pending the
    first two get SIGTERM at the same moment. The third takes every partition:
    every call is answered 200 within the reply timeout, every call has its one
    stored result, the leaving members exit 0 within 15 s having committed what
    they finished (nothing is processed twice), and the calls after the group
    settled (the load goes on for 250 more) are all processed by the lone
    member. The rebalance pause is the longest stretch without any answer from
    the third member's start to the end of the load (a figure)."""
    if os.environ.get("BROKER_PROFILE") == "tansu":
        pytest.skip("the session broker is Tansu, whose group wedges on exactly this: "
                    "see python -m tests.faults.tansu_leave_during_join")
    rng = seeded(SEED)
    load(engine, world())
    settings = unique_settings(database_url, bootstrap_servers, kafka_group_protocol=protocol)
    fleet = Fleet(settings, tmp_path)
    apis: list[ServiceProcess] = []
    figures = Figures(f"group-scale-down-{protocol}")
    with logs_on_failure(fleet.logs, process_logs(apis)):
        try:
            fleet.start("c0")
            fleet.start("c1")
            apis.extend(start_api(settings, tmp_path, name=f"api-{i}") for i in range(2))
            # The load starts on a settled group of the two first members: the
            # pause measured is the scale-down's, not the start-up's.
            eventually(lambda: group_view(settings) == ("STABLE", 2), timeout=45, interval=0.1,
                       what="both first members in a stable group")
            wait_group_stable(settings, hold=1.0)
            # ... and on warm API processes (first key lookups, first producer ids).
            warm_up = [Call(-1 - n, 1 + n // 2, [7600 + (1 + n // 2) * 10], 200, api=n % 2) for n in range(2 * COMPANIES)]
            run_calls([a.url for a in apis], warm_up, workers=4, client_timeout=settings.reply_timeout_s + 15)
            assert all(c.status == 200 for c in warm_up), statuses(warm_up)
            progress = Progress()
            change = ScaleDown(fleet, settings, progress, CHANGE_AT)
            calls: list[Call] = []
            started = time.monotonic()
            change.start()
            run_calls([a.url for a in apis], planned_calls(rng, change, calls), workers=WORKERS,
                      client_timeout=settings.reply_timeout_s + 15, progress=progress)
            load_seconds = time.monotonic() - started
            change.join(60)
            wait_for_backlog(engine, {"refresh.request": len(warm_up) + len(calls)}, timeout=30)
            survivor_running = "c2" in fleet.current and fleet.current["c2"].process.poll() is None
        finally:
            for api in apis:
                api.stop()
            fleet.stop_all()

        requests = stored_results(engine, "refresh.request")
        handled = [processed(p.log()) for p in fleet.history]
        not_200 = [c for c in calls if c.status != 200]
        without_result = [c for c in calls if c.request_id not in requests]
        mismatched = [c for c in calls if c.request_id in requests and requests[c.request_id].reply != c.body]
        ends = [c.started + c.waited for c in calls]
        join_started = change.join_started or started
        last_answer = max(ends, default=join_started)
        around = [c for c in calls if c.started + c.waited >= join_started]
        # The load's first calls (one per caller, all at once) wait longest
        # (up to 9 s measured on a loaded machine): reported apart, the steady
        # state before the change is the baseline for the change's waits.
        first_burst, steady = calls[:WORKERS], calls[WORKERS:]
        before = [c for c in steady if c.started + c.waited < join_started]
        after_settle = [c for c in calls if change.settled_at is not None and c.started >= change.settled_at]
        figures.values.update(
            requests=len(calls), statuses=statuses(calls), lost=len(without_result),
            request_partitions_owned=change.owned_before, seen_at_terminate=change.seen_at_terminate,
            departures=[(slot, rc, round(s, 1)) for slot, rc, s in change.departures],
            join_to_terminate_s=(change.terminated_at - join_started) if change.terminated_at else -1.0,
            terminate_to_settled_s=(change.settled_at - change.terminated_at)
            if change.settled_at and change.terminated_at else -1.0,
            rebalance_pause_s=answered_gaps(calls, join_started, last_answer), max_wait_s=max_wait(around),
            steady_max_wait_before_s=max_wait(before), first_burst_max_wait_s=max_wait(first_burst),
            processed_per_member=handled,
            reprocessed=sum(h or 0 for h in handled) - len(warm_up) - len(calls), after_settle=len(after_settle),
            load_s=load_seconds,
        )
        figures.show()
        assert change.error is None, change.error
        assert change.terminated_at is not None and change.settled_at is not None, "the scale-down happened during the load"
        assert change.seen_at_terminate is not None and change.seen_at_terminate[0] != "STABLE", \
            f"the first two members left while the third's join was in progress: {change.seen_at_terminate}"
        assert len(change.owned_before) == 2 and all(change.owned_before), \
            f"both first members served requests before the change (they share the request partitions): {change.owned_before}"
        assert [rc for _, rc, _ in change.departures] == [0, 0] and all(s <= 15 for _, _, s in change.departures), \
            f"both leaving members exited 0 within 15 s: {change.departures}"
        assert survivor_running and change.members_after == 1, "the third member serves alone"
        assert not not_200, f"callers without a 200: {[(c.n, c.status, c.body) for c in not_200[:5]]}"
        assert max_wait(calls) <= settings.reply_timeout_s
        assert not without_result and len(requests) == len(warm_up) + len(calls), "one stored result per request"
        assert not mismatched, f"callers got something other than the stored result: {mismatched[:3]}"
        # How many calls started after the settle is the load generator's timing
        # (82 of 250 on a loaded machine), a figure only; what the service owes
        # is that the lone member processed them: every one of them at least.
        survivor = processed(next(p for p in fleet.history if p.name.startswith("c2.")).log())
        assert survivor is not None and survivor >= len(after_settle), \
            f"the lone member served the calls after the change: {survivor} < {len(after_settle)}"
        assert all(h is not None for h in handled), f"every member stopped cleanly and said how much it did: {handled}"
        reprocessed = sum(h or 0 for h in handled) - len(warm_up) - len(calls)
        if protocol == "consumer":
            assert reprocessed == 0, f"a leaving member's finished work was processed again: {handled}"
        else:
            # Classic protocol: the leaving members' last commit can land while
            # the coordinator completes the rebalance they and the joiner cause,
            # and be refused; their last batch (at most 100 records each) is
            # then redone by the survivor, as a redelivery: the inbox makes it
            # harmless (one stored result per request is asserted above).
            # Measured: 0 alone, 3 and 80 in full-suite runs on a loaded machine.
            assert 0 <= reprocessed <= 2 * 100, f"more than the leaving members' last batches redone: {handled}"
        assert dead_letters(settings) == 0
