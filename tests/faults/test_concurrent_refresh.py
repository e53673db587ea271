"""REST refreshes and deletion events hitting the same assessments at the same time on two consumers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    EventFeed,
    Figures,
    Fleet,
    LockWatcher,
    Progress,
    check_refresh_events,
    company_key,
    dead_letters,
    duplicate_qids,
    hold_assessment_locks,
    logs_on_failure,
    max_wait,
    process_logs,
    published_refresh_events,
    replaced_more_than_once,
    run_calls,
    seeded,
    slot_rows,
    stale_or_mismatched_snapshots,
    statuses,
    stored_replacements,
    stored_results,
    wait_for_backlog,
)
from tests.kafka_tools import deleted_event
from tests.processes import start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

SEED = 4242
COMPANIES = 4
ASSESSMENTS = 40  # oids 6000..6039, company 1 + j % 4
KINDS = 4
PER_KIND = 14  # questions 5000 + 100 k + m
DELETED_PER_KIND = 8  # 6 stay active: enough for the 3 slots of a kind in any assessment
REQUESTS = 300
WAVES = 4
HOLD_S = 1.5  # how long the slow transaction holds the assessments at each burst


def kind(k: int) -> tuple[str, str, str]:
    return ("mcq", f"shared-{k}", "medium")


def qid(k: int, m: int) -> int:
    return 5000 + 100 * k + m


def world() -> dict[str, Any]:
    common = ("mcq", "concurrent-common", "easy")
    assessments = []
    for j in range(ASSESSMENTS):
        sections = [{"name": f"Kind {k}", "qids": [qid(k, (3 * j + t) % PER_KIND) for t in range(3)]}
                    for k in (j % KINDS, (j + 1) % KINDS)]
        sections.append({"name": "Common", "qids": [5900 + j % 5, 5900 + (j + 2) % 5]})
        assessments.append({"oid": 6000 + j, "company_id": 1 + j % COMPANIES, "name": f"Shared {j}", "sections": sections})
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": [question(qid(k, m), kind(k)) for k in range(KINDS) for m in range(PER_KIND)]
        + [question(5900 + p, common) for p in range(5)],
        "assessments": assessments,
    }


def bank_update() -> dict[str, Any]:
    common = ("mcq", "concurrent-common", "easy")
    return {"questions": [question(5900 + p, common, text_=f"common {p}, reworded") for p in range(5)]}


def test_concurrent_rest_and_automatic_refreshes_of_the_same_assessments(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    """Four kinds of question, 14 of each, shared by 40 assessments (3 slots of
    two kinds each). 8 questions of every kind are deleted in four bursts of 8
    events, spread by qid over the partitions of two consumer processes, while
    300 REST refreshes (32 callers) of the same assessments go to the same two
    consumers. Each burst is published while a slow transaction of the test
    holds every assessment for 1.5 s, so that what both consumers do next
    waits for the same locks and then runs at the same time. Deletions of one kind compete for the same alternatives in the
    same assessments, so the order matters for which alternative wins; what
    must hold whatever the order:

    - every caller gets 200 (no 5xx from lock conflicts or retries);
    - no lost update: following each slot's recorded replacements (from every
      stored result) from its first question leads exactly to its final
      question, every recorded replacement lies on such a chain, and every
      snapshot is the current bank data of the slot's question;
    - no double replacement: each (assessment, old question) is replaced by
      exactly one stored result, and no published event says otherwise;
    - no slot keeps a deleted question (alternatives never run out), no
      assessment holds a question twice, every slot keeps its kind;
    - nothing was dead-lettered;
    - and, as evidence that the refreshes really overlapped, both consumers
      were seen waiting for assessment locks at the same moment."""
    rng = seeded(SEED)
    load(engine, world())
    load(engine, bank_update())
    initial = {(oid, s, q): qid_ for oid, s, q, qid_, _ in slot_rows(engine)}
    settings = unique_settings(database_url, bootstrap_servers)
    fleet = Fleet(settings, tmp_path)
    apis = []
    figures = Figures("concurrent-refresh")
    with logs_on_failure(fleet.logs, process_logs(apis)):
        try:
            fleet.start("c0")
            fleet.start("c1")
            apis.append(start_api(settings, tmp_path))
            by_company = {c: [6000 + j for j in range(ASSESSMENTS) if 1 + j % COMPANIES == c] for c in range(1, COMPANIES + 1)}
            calls = []
            for n in range(REQUESTS):
                company = rng.randint(1, COMPANIES)
                ids = None if rng.random() < 0.1 else rng.sample(by_company[company], rng.randint(2, 4))
                calls.append(Call(n, company, ids, 200))
            doomed = [qid(k, m) for k in range(KINDS) for m in rng.sample(range(PER_KIND), DELETED_PER_KIND)]
            rng.shuffle(doomed)
            events = [deleted_event(q) for q in doomed]
            per_wave = len(events) // WAVES
            progress = Progress()
            all_oids = [6000 + j for j in range(ASSESSMENTS)]
            holders = []

            def gate(k: int) -> None:
                """A burst of 8 deletions at 10, 30, 50 and 70 % of the REST load,
                published while a slow transaction holds every assessment: the
                deletions and the REST refreshes queue up behind it on both
                consumers and then run against each other."""
                progress.wait_for(REQUESTS * (10 + 20 * (k // per_wave)) // 100)
                if k % per_wave == 0:
                    holders.append(hold_assessment_locks(engine, all_oids, HOLD_S))

            feed = EventFeed(bootstrap_servers, settings.question_events_topic, events, gate=gate)
            started = time.monotonic()
            watcher = LockWatcher(engine)
            watcher.start()
            feed.start()
            run_calls([apis[0].url], calls, workers=32, client_timeout=settings.reply_timeout_s + 15, progress=progress)
            feed.join(30)
            for holder in holders:
                holder.join(HOLD_S + 5)
            assert feed.error is None and len(feed.published) == len(events) and feed.undelivered == 0
            wait_for_backlog(engine, {"refresh.request": REQUESTS, "question.deleted": len(events)}, timeout=60)
            elapsed = time.monotonic() - started
            watcher.stop()
        finally:
            for api in apis:
                api.stop()
            fleet.stop_all()
        retries = sum(p.log().count("transient failure") for p in fleet.history)

        requests = stored_results(engine, "refresh.request")
        deletions = stored_results(engine, "question.deleted")
        results = {**requests, **deletions}
        ledger = stored_replacements(results)
        twice = replaced_more_than_once(ledger)
        final = {(oid, s, q): qid_ for oid, s, q, qid_, _ in slot_rows(engine)}
        broken_chains = []
        used = set()
        for (oid, s, q), first in initial.items():
            current = first
            while (oid, current) in ledger:
                used.add((oid, current))
                current = ledger[(oid, current)][0][1]
            if current != final[(oid, s, q)]:
                broken_chains.append(((oid, s, q), first, current, final[(oid, s, q)]))
        stray = set(ledger) - used
        with engine.connect() as conn:
            kinds = dict(conn.execute(text("SELECT qid, type || '/' || skill || '/' || difficulty FROM questions")).all())
            deleted_left = conn.execute(text(
                "SELECT count(*) FROM assessment_slots s JOIN questions q USING (qid) WHERE q.deleted")).scalar_one()
        kind_changed = [k for k, q in final.items() if kinds[q] != kinds[initial[k]]]
        snapshots = stale_or_mismatched_snapshots(engine)
        published = published_refresh_events(settings, at_least=sum(len(r.events) for r in results.values()))
        copies, event_problems = check_refresh_events(published, results)
        by_rest = sum(1 for k, v in ledger.items() if v[0][0] in requests)
        figures.values.update(
            requests=REQUESTS, events=len(events), statuses=statuses(calls), replacements=len(ledger),
            by_rest=by_rest, by_events=len(ledger) - by_rest, transient_retries=retries,
            lock_wait_samples=f"{watcher.waiting_samples}/{watcher.samples}", max_lock_waiters=watcher.max_waiting,
            lost_updates=len(broken_chains) + len(stray) + len(snapshots), duplicated=len(twice) + len(event_problems),
            max_wait_s=max_wait(calls), elapsed_s=elapsed,
        )
        figures.show()
        assert all(c.status == 200 for c in calls), f"non-200 answers: {[(c.status, c.body) for c in calls if c.status != 200][:5]}"
        assert max_wait(calls) <= settings.reply_timeout_s + 5
        assert len(requests) == REQUESTS and {e.event_id for e in events} == set(deletions)
        assert all(r.status == 200 for r in results.values())
        assert {(c.request_id, c.status) for c in calls} == {(rid, r.status) for rid, r in requests.items()}
        assert not twice, f"double replacements: {list(twice.items())[:5]}"
        assert not event_problems, event_problems
        assert not broken_chains, f"lost updates (slot, first, end of recorded chain, final): {broken_chains[:5]}"
        assert not stray, f"recorded replacements that no slot went through: {sorted(stray)[:5]}"
        covered = {d["oid"] for r in requests.values() for d in r.reply["details"]}
        assert covered == {6000 + j for j in range(ASSESSMENTS)}, "every assessment was refreshed over REST at least once"
        assert not snapshots, f"snapshots that are not the bank's data of their question: {snapshots[:5]}"
        assert not kind_changed, f"slots whose kind changed: {kind_changed[:5]}"
        assert deleted_left == 0, "every deleted question was replaced"
        assert duplicate_qids(engine) == []
        assert dead_letters(settings) == 0
        assert len(ledger) > len(events), "the deletions replaced questions in several assessments each"
        assert watcher.max_waiting >= 2, "both consumers were seen waiting for the same locks at once"
