"""The test's own PostgreSQL stopped for 30 s while REST requests and question events keep coming."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from shared.db import make_engine, migrate
from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    EventFeed,
    Figures,
    Fleet,
    company_key,
    dead_letters,
    duplicate_qids,
    logs_on_failure,
    max_wait,
    process_logs,
    replaced_more_than_once,
    run_calls,
    statuses,
    stored_replacements,
    stored_results,
    wait_for_backlog,
)
from tests.infra import StoppablePostgres
from tests.kafka_tools import deleted_event
from tests.processes import start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

OUTAGE_S = 30.0
BEFORE_S = 4.0
AFTER_S = 6.0  # load goes on this long after PostgreSQL is back
COMPANIES = 3
ASSESSMENTS = 60  # oids 2000..2059, company 1 + j % 3
DELETIONS = 30  # questions 3000..3029 (kind i), alternatives 3100 + i; used by assessments 2i and 2i+1
CALLERS = 8


def kind(i: int) -> tuple[str, str, str]:
    return ("mcq", f"outage-{i:02d}", "hard")


def world() -> dict[str, Any]:
    common = ("mcq", "outage-common", "easy")
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": [question(3500 + p, common) for p in range(10)]
        + [question(3000 + i, kind(i)) for i in range(DELETIONS)]
        + [question(3100 + i, kind(i)) for i in range(DELETIONS)],
        "assessments": [
            {"oid": 2000 + j, "company_id": 1 + j % COMPANIES, "name": f"Outage {j}",
             "sections": [{"name": "S", "qids": [3500 + j % 10, 3500 + (j + 3) % 10, 3000 + j // 2]}]}
            for j in range(ASSESSMENTS)
        ],
    }


def test_a_database_outage_loses_nothing_and_hangs_no_caller(bootstrap_servers: str, tmp_path: Path) -> None:
    """PostgreSQL (the test's own) is stopped for 30 s under a steady REST load
    (8 callers, one API process) and a stream of question deletions (two
    consumer processes). Callers during the outage get 503 (the API cannot look
    the key up) or 504 (the request was sent, the consumer waits for the
    database): never a hang past the reply timeout, never a 500. The consumers
    retry without dead-lettering; once PostgreSQL is back the backlog is
    processed: every request that was sent and every event has its one stored
    result, and every deleted question is replaced."""
    postgres = StoppablePostgres(tmp_path)
    engine = make_engine(postgres.url)
    migrate(engine)
    load(engine, world())
    settings = unique_settings(postgres.url, bootstrap_servers)
    fleet = Fleet(settings, tmp_path)
    apis = []
    figures = Figures("database-down")
    with logs_on_failure(fleet.logs, process_logs(apis)):
        try:
            fleet.start("c0")
            fleet.start("c1")
            apis.append(start_api(settings, tmp_path))
            engine.dispose()

            started = time.monotonic()
            phase = {"down_at": 0.0, "restart_at": 0.0, "up_at": 0.0}
            stop_load = threading.Event()
            counter = itertools.count()
            calls: list[Call] = []

            def call_stream() -> Any:
                # Each caller keeps sending until the load stops; the pool pulls lazily.
                while not stop_load.is_set():
                    n = next(counter)
                    company = 1 + n % COMPANIES
                    oids = [2000 + j for j in range(ASSESSMENTS) if 1 + j % COMPANIES == company]
                    call = Call(n, company, [oids[n % len(oids)], oids[(n * 7 + 3) % len(oids)]], 200)
                    calls.append(call)
                    yield call

            events = [deleted_event(3000 + i) for i in range(DELETIONS)]
            # One deletion every 0.8 s from the start: most of them arrive during the outage.
            feed = EventFeed(bootstrap_servers, settings.question_events_topic, events,
                             gate=lambda k: time.sleep(max(0.0, started + 0.8 * k - time.monotonic())))

            outage_error: list[BaseException] = []

            def outage() -> None:
                try:
                    time.sleep(BEFORE_S)
                    postgres.stop()
                    phase["down_at"] = time.monotonic() - started
                    time.sleep(OUTAGE_S)
                    phase["restart_at"] = time.monotonic() - started  # it may answer before start() returns
                    postgres.start()
                    phase["up_at"] = time.monotonic() - started
                    time.sleep(AFTER_S)
                except BaseException as exc:  # noqa: BLE001 - reported below; the load must end either way
                    outage_error.append(exc)
                finally:
                    stop_load.set()

            outage_thread = threading.Thread(target=outage, name="outage", daemon=True)
            feed.start()
            outage_thread.start()
            run_calls([apis[0].url], call_stream(), workers=CALLERS,
                      client_timeout=settings.reply_timeout_s + 15, pause_after={503: 0.2})
            outage_thread.join(OUTAGE_S + 30)
            assert not outage_error, f"stopping or starting PostgreSQL failed: {outage_error[0]!r}"
            feed.join(30)
            assert feed.error is None and len(feed.published) == DELETIONS and feed.undelivered == 0
            assert all(p.process.poll() is None for p in [*fleet.current.values(), *apis]), "everything survived"

            sent = [c for c in calls if c.status in (200, 504)]
            wait_for_backlog(engine, {"refresh.request": len(sent), "question.deleted": DELETIONS}, timeout=90)
            backlog_done = time.monotonic() - started
        finally:
            for api in apis:
                api.stop()
            fleet.stop_all()

        requests = stored_results(engine, "refresh.request")
        deletions = stored_results(engine, "question.deleted")
        with engine.connect() as conn:
            left = conn.execute(text(
                "SELECT count(*) FROM assessment_slots s JOIN questions q USING (qid) WHERE q.deleted")).scalar_one()
        duplicates = duplicate_qids(engine)
        engine.dispose()
        down, up = phase["down_at"], phase["up_at"]
        during = [c for c in calls if down + 0.5 < c.started - started < phase["restart_at"] - 0.1]
        no_answer = [c for c in calls if c.status is None]
        unexpected = [c for c in calls if c.status not in (200, 503, 504, None)]
        without_result = [c for c in sent if c.request_id not in requests]
        twice = replaced_more_than_once(stored_replacements({**requests, **deletions}))
        dlq = dead_letters(settings)
        late = [c for c in calls if c.started - started > up + 4]  # well after the restart
        figures.values.update(
            requests=len(calls), events=DELETIONS, outage_s=phase["restart_at"] - down, statuses=statuses(calls),
            during_outage=statuses(during), lost=len(no_answer) + len(without_result), duplicated=len(twice),
            dead_lettered=dlq, max_wait_s=max_wait(calls), backlog_done_s=backlog_done - up,
        )
        figures.show()
        assert phase["restart_at"] - down >= OUTAGE_S
        assert not no_answer, f"callers without an answer: {no_answer[:3]}"
        assert max_wait(calls) <= settings.reply_timeout_s + 5, "a caller hung past the reply timeout"
        assert not unexpected, f"answers other than 200/503/504: {[(c.status, c.body) for c in unexpected[:5]]}"
        assert during and {c.status for c in during} <= {503, 504}, statuses(during)
        assert any(c.status == 503 for c in during), "the API reports the database outage as 503"
        assert late and all(c.status == 200 for c in late), f"after the outage: {statuses(late)}"
        assert not without_result, f"{len(without_result)} requests sent but never processed: {without_result[:3]}"
        assert len(requests) == len(sent)
        assert all(r.status == 200 for r in [*requests.values(), *deletions.values()])
        assert {e.event_id for e in events} == set(deletions)
        assert dlq == 0, "nothing was dead-lettered"
        assert not twice, f"questions replaced more than once: {list(twice.items())[:5]}"
        assert left == 0 and duplicates == [], "every deleted question was replaced, none twice in an assessment"

