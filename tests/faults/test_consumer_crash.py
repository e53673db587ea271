"""Consumers SIGKILLed again and again under REST load and question deletions."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from consumer.faults import ENV as FAULT_ENV
from consumer.handlers import Handlers
from shared.messages import RefreshRequested, new_id
from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    EventFeed,
    Figures,
    Fleet,
    Progress,
    check_refresh_events,
    company_key,
    dead_letters,
    deleted_flags,
    differences,
    duplicate_qids,
    logs_on_failure,
    max_wait,
    process_logs,
    published_refresh_events,
    reference_database,
    replaced_more_than_once,
    run_calls,
    seeded,
    slot_rows,
    statuses,
    stored_replacements,
    stored_results,
    wait_for_backlog,
)
from tests.kafka_tools import deleted_event
from tests.processes import start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

SEED = 20261128
COMPANIES = 8
ASSESSMENTS = 400  # oids 1000..1399, company 1 + j % 8
DELETIONS = 200  # questions 10000..10199, each used by two assessments
NO_ALTERNATIVE_FROM = 190  # deletions 190.. have no alternative at all
PRIVATE_EVERY = 10  # deletion i with i % 10 == 3: its second alternative is private to company 1
REQUESTS = 1000
KILLS = 4
POOL = 60  # common questions 40000..40059, the first 20 reworded after the assessments were built
COMMON = ("mcq", "common", "easy")


def kind(i: int) -> tuple[str, str, str]:
    return ("mcq", f"skill-{i:03d}", "medium")


def oid_of(j: int) -> int:
    return 1000 + j


def company_of(j: int) -> int:
    return 1 + j % COMPANIES


def world() -> dict[str, Any]:
    questions = [question(40000 + p, COMMON) for p in range(POOL)]
    for i in range(DELETIONS):
        questions.append(question(10000 + i, kind(i)))
        if i < NO_ALTERNATIVE_FROM:
            questions.append(question(20000 + i, kind(i)))
            questions.append(question(30000 + i, kind(i), company_id=1 if i % PRIVATE_EVERY == 3 else None))
    assessments = []
    for j in range(ASSESSMENTS):
        i = j // 2
        special = [10000 + i] + ([20000 + i] if j % 3 == 0 and i < NO_ALTERNATIVE_FROM else [])
        assessments.append({
            "oid": oid_of(j), "company_id": company_of(j), "name": f"Assessment {j}",
            "sections": [{"name": "Common", "qids": [40000 + (j + 7 * k) % POOL for k in range(4)]},
                         {"name": "Special", "qids": special}],
        })
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": questions,
        "assessments": assessments,
    }


def bank_update() -> dict[str, Any]:
    """Loaded after the assessments: their snapshots of these are now stale."""
    return {"questions": [question(40000 + p, COMMON, text_=f"question {40000 + p}, reworded") for p in range(20)]}


def plan_calls(rng: Any) -> list[Call]:
    by_company: dict[int, list[int]] = {c: [] for c in range(1, COMPANIES + 1)}
    for j in range(ASSESSMENTS):
        by_company[company_of(j)].append(oid_of(j))
    calls = []
    for n in range(REQUESTS):
        company = rng.randint(1, COMPANIES)
        roll = rng.random()
        if roll < 0.05:
            ids, expected = None, 200
        elif roll < 0.15:
            other = rng.choice([c for c in by_company if c != company])
            ids, expected = [rng.choice(by_company[company]), rng.choice(by_company[other])], 403
        else:
            ids, expected = rng.sample(by_company[company], rng.randint(1, 3)), 200
        calls.append(Call(n, company, ids, expected, api=n % 2))
    return calls


def test_consumers_killed_under_load_lose_and_duplicate_nothing(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    """1,000 REST refreshes (two API processes, 32 callers) and 200 question
    deletions, while the two consumer processes are SIGKILLed at seeded random
    moments of the load and restarted at once (one restart also dies at the
    ``after_db_commit`` crash point, between its database commit and its offset
    commit). Every request is answered once by its stored result, no question is
    replaced twice, and the database ends as one clean pass leaves it.

    Why the final state does not depend on the interleaving (so that a clean
    in-process pass is a valid reference):

    - Every deleted question ``D_i`` has a kind of its own, ``K_i``; the only
      questions of ``K_i`` are ``D_i`` and its alternatives, which are never
      deleted, and no slot ever changes to a ``K_i`` question except by
      replacing ``D_i``. So the alternatives valid for ``D_i`` in an assessment
      are the same whenever the replacement happens, and the rule's stable hash
      order picks the same one (or none: deletions 190.. have no alternative,
      and where the assessment already holds the only visible one).
    - The bank's versions do not change during the test (no upserts), so any
      refresh of an assessment, REST or automatic, before or after a deletion,
      brings its active slots to the bank's version; which refresh does it does
      not matter, only whether the assessment was refreshed at all.
    - So the end state is a function of the set of deleted questions and the
      set of assessments refreshed. The reference applies the same deletions
      through ``Handlers`` in publish order, then one REST refresh per company
      of every assessment its answered-200 requests named.
    """
    rng = seeded(SEED)
    load(engine, world())
    load(engine, bank_update())
    settings = unique_settings(database_url, bootstrap_servers)
    fleet = Fleet(settings, tmp_path)
    apis = []
    figures = Figures("consumer-crash")
    with logs_on_failure(fleet.logs, process_logs(apis)):
        for slot in ("c0", "c1"):
            fleet.start(slot)
        apis.extend(start_api(settings, tmp_path, name=f"api-{i}") for i in range(2))

        calls = plan_calls(rng)
        progress = Progress()
        events = [deleted_event(10000 + i) for i in rng.sample(range(DELETIONS), DELETIONS)]
        # Events go out between 10 % and 75 % of the load.
        feed = EventFeed(bootstrap_servers, settings.question_events_topic, events,
                         gate=lambda k: progress.wait_for(100 + k * 3))
        kill_at = sorted(rng.sample(range(120, 880), KILLS))
        victims = [rng.choice(["c0", "c1"]) for _ in kill_at]
        marker = tmp_path / "crash-point-reached"
        kills: list[tuple[int, str, float]] = []
        restarts_after_crash_point = 0
        stop_supervisor = threading.Event()

        def supervise() -> None:
            """Kill at the planned progress points; restart whatever died."""
            nonlocal restarts_after_crash_point
            pending = list(zip(kill_at, victims, strict=True))
            while not stop_supervisor.is_set():
                for slot in fleet.exited():
                    restarts_after_crash_point += 1
                    fleet.start(slot)
                if pending and progress.value >= pending[0][0]:
                    at, slot = pending.pop(0)
                    fleet.kill(slot)
                    kills.append((at, slot, time.monotonic()))
                    # The second restart carries the crash point: it dies right
                    # after its first database commit, before storing the offset.
                    env = {FAULT_ENV: f"after_db_commit:{marker}"} if len(kills) == 2 else None
                    fleet.start(slot, env=env)
                time.sleep(0.05)

        supervisor = threading.Thread(target=supervise, name="supervisor", daemon=True)
        started = time.monotonic()
        feed.start()
        supervisor.start()
        try:
            run_calls([a.url for a in apis], calls, workers=32, client_timeout=settings.reply_timeout_s + 15,
                      progress=progress)
            load_seconds = time.monotonic() - started
            feed.join(60)
            assert feed.error is None and not feed.is_alive() and feed.undelivered == 0
            assert len(feed.published) == DELETIONS
            answered = [c for c in calls if c.status in (200, 403, 504)]
            wait_for_backlog(engine, {"refresh.request": len(answered), "question.deleted": DELETIONS}, timeout=90)
        finally:
            stop_supervisor.set()
            supervisor.join(10)
        backlog_seconds = time.monotonic() - started - load_seconds
        for api in apis:
            api.stop()
        fleet.stop_all()

        # -- every caller answered, by the result stored for its request --------
        requests = stored_results(engine, "refresh.request")
        deletions = stored_results(engine, "question.deleted")
        no_answer = [c for c in calls if c.status is None]
        unexpected = [c for c in calls if c.status not in (c.expected, 504, None)]
        without_result = [c for c in answered if c.request_id not in requests]
        mismatched = [c for c in calls if c.status in (200, 403) and c.request_id in requests
                      and (requests[c.request_id].status, requests[c.request_id].reply) != (c.status, c.body)]
        late_504 = [c for c in calls if c.status == 504 and requests.get(c.request_id) is not None
                    and requests[c.request_id].status != c.expected]
        lost = len(no_answer) + len(without_result)
        ledger = stored_replacements({**requests, **deletions})
        twice = replaced_more_than_once(ledger)
        published = published_refresh_events(settings, at_least=sum(len(r.events) for r in {**requests, **deletions}.values()))
        copies, event_problems = check_refresh_events(published, {**requests, **deletions})
        figures.values.update(
            requests=len(calls), events=DELETIONS, kills=len(kills), crash_points=int(marker.exists()),
            restarts=len(fleet.history) - 2, statuses=statuses(calls), lost=lost,
            duplicated=len(twice) + len(event_problems), republished_events=copies,
            max_wait_s=max_wait(calls), load_s=load_seconds, backlog_s=backlog_seconds,
        )
        figures.show()
        assert len(kills) >= 3, f"the load ended before the planned kills: {kills}"
        assert not no_answer, f"{len(no_answer)} callers got no HTTP answer, e.g. {no_answer[:3]}"
        assert max_wait(calls) <= settings.reply_timeout_s + 5, "a caller hung past the reply timeout"
        assert not unexpected, f"unexpected answers: {[(c.n, c.status, c.body) for c in unexpected[:5]]}"
        assert not without_result, f"{len(without_result)} answered requests never processed: {without_result[:3]}"
        assert len(requests) == len(answered), "one stored result per request that reached the consumer"
        assert not mismatched, f"callers got something other than the stored result: {mismatched[:3]}"
        assert not late_504, f"requests answered 504 were processed with the wrong outcome: {late_504[:3]}"
        assert {e.event_id for e in events} == set(deletions), "one stored result per deletion event"
        assert all(r.status == 200 for r in deletions.values())
        assert not twice, f"questions replaced more than once: {list(twice.items())[:5]}"
        assert not event_problems, event_problems
        assert duplicate_qids(engine) == []
        assert dead_letters(settings) == 0, "nothing was dead-lettered"
        assert lost == 0

        # -- the database equals one clean pass --------------------------------
        refreshed: dict[int, set[int]] = {}
        company_oids = {c: {oid_of(j) for j in range(ASSESSMENTS) if company_of(j) == c} for c in range(1, COMPANIES + 1)}
        for c in calls:
            if c.expected == 200:
                refreshed.setdefault(c.company, set()).update(company_oids[c.company] if c.ids is None else c.ids)
        with reference_database(database_url) as reference:
            load(reference, world())
            load(reference, bank_update())
            handlers = Handlers(reference, settings)
            for event in feed.published:
                handlers.question_event(event)
            for company, oids in sorted(refreshed.items()):
                handlers.refresh_requested(RefreshRequested(new_id(), company, sorted(oids)), None)
            expected_slots, expected_deleted = slot_rows(reference), deleted_flags(reference)
        actual_slots = slot_rows(engine)
        assert actual_slots == expected_slots, differences(actual_slots, expected_slots)
        assert deleted_flags(engine) == expected_deleted
        assert len(ledger) == sum(1 for j in range(ASSESSMENTS) if j // 2 < NO_ALTERNATIVE_FROM) - sum(
            1 for j in range(ASSESSMENTS)
            if j // 2 < NO_ALTERNATIVE_FROM and j % 3 == 0 and j // 2 % PRIVATE_EVERY == 3 and company_of(j) != 1
        ), "every deletion with a visible, unused alternative was replaced, once"
