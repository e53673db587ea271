"""SIGTERM in the middle of work: a consumer finishes its batch and hands over
cleanly; an API process answers the requests it has in flight, then exits."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

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
    published_refresh_events,
    replies_on_topic,
    run_calls,
    seeded,
    statuses,
    stored_results,
    trigger_id,
    wait_for_backlog,
    wait_group_stable,
)
from tests.kafka_tools import read_topic
from tests.processes import start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

SEED = 5
COMPANIES = 6
REQUESTS = 300
STOP_AT = 100  # progress at which the first consumer gets SIGTERM
BOUND_S = 15.0
IN_FLIGHT = 20
PY = ("mcq", "python", "medium")


def world() -> dict[str, Any]:
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": [question(q, PY) for q in range(8000, 8040)],
        "assessments": [{"oid": 8100 + c * 10 + a, "company_id": c, "name": f"G{c}-{a}",
                         "sections": [{"name": "Python", "qids": [8000 + (c * 4 + a) % 40, 8000 + (c * 4 + a + 20) % 40]}]}
                        for c in range(1, COMPANIES + 1) for a in range(4)],
    }


def bank_update() -> dict[str, Any]:
    """Every question reworded: the first refresh of each assessment changes it (and publishes an event)."""
    return {"questions": [question(q, PY, text_=f"question {q}, reworded") for q in range(8000, 8040)]}


def processed(log: str) -> int | None:
    match = re.search(r"consumer stopped after (\d+) message", log)
    return int(match.group(1)) if match else None


def test_a_consumer_stopped_mid_work_exits_cleanly_and_nothing_is_redone(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    """300 REST requests (32 callers); at 100 answered, the only consumer gets
    SIGTERM with requests in flight, and its successor starts once it is gone.
    The first one exits 0 within 15 s and logs how many messages it processed;
    the successor starts from its committed offsets: the two counts add up to
    the requests exactly, each request is answered once on the reply topic
    (a reprocessed one would be answered again from the inbox), each result
    event is published once, and there is one stored result per request."""
    rng = seeded(SEED)
    load(engine, world())
    load(engine, bank_update())
    settings = unique_settings(database_url, bootstrap_servers)
    fleet = Fleet(settings, tmp_path)
    apis = []
    figures = Figures("consumer-sigterm")
    with logs_on_failure(fleet.logs, process_logs(apis)):
        try:
            first = fleet.start("first")
            apis.append(start_api(settings, tmp_path))
            calls = []
            for n in range(REQUESTS):
                company = rng.randint(1, COMPANIES)
                calls.append(Call(n, company, [8100 + company * 10 + rng.randrange(4)], 200))
            progress = Progress()
            stop: dict[str, Any] = {}

            # Settled before the load starts: 300 requests take about two seconds,
            # so waiting for the group inside the stopper could miss them all.
            wait_group_stable(settings)

            def stop_and_replace() -> None:
                try:
                    progress.wait_for(STOP_AT)
                    stop["rc"], stop["seconds"] = fleet.terminate("first", bound=BOUND_S)
                    fleet.start("successor")
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    stop["error"] = exc

            stopper = threading.Thread(target=stop_and_replace, name="stopper", daemon=True)
            stopper.start()
            run_calls([apis[0].url], calls, workers=32, client_timeout=settings.reply_timeout_s + 15, progress=progress)
            stopper.join(30)
            wait_for_backlog(engine, {"refresh.request": REQUESTS}, timeout=30)
        finally:
            for api in apis:
                api.stop()
            fleet.stop_all()

        first_count = processed(first.log())
        successor_count = processed(fleet.history[-1].log())
        requests = stored_results(engine, "refresh.request")
        answers = replies_on_topic(settings, at_least=REQUESTS)
        answered_twice = {rid: n for rid, n in answers.items() if n > 1}
        stored_events = sum(len(r.events) for r in requests.values())
        published = published_refresh_events(settings, at_least=stored_events)
        keys = [(trigger_id(e), e["oid"]) for e in published]
        figures.values.update(
            requests=REQUESTS, statuses=statuses(calls), exit_code=stop.get("rc"), exit_s=stop.get("seconds", 0.0),
            first_processed=first_count, successor_processed=successor_count,
            reprocessed=(first_count or 0) + (successor_count or 0) - REQUESTS, replies_sent_twice=len(answered_twice),
            events=len(published), events_twice=len(keys) - len(set(keys)), max_wait_s=max_wait(calls),
        )
        figures.show()
        assert "error" not in stop, stop.get("error")
        assert stop["rc"] == 0, f"the stopped consumer's exit code: {stop['rc']}"
        assert stop["seconds"] <= BOUND_S
        assert first_count is not None and 0 < first_count < REQUESTS, f"its log says what it did: {first_count}"
        assert successor_count is not None
        assert all(c.status == 200 for c in calls), f"answers: {statuses(calls)}"
        assert max_wait(calls) <= settings.reply_timeout_s
        assert len(requests) == REQUESTS and all(c.request_id in requests for c in calls)
        assert first_count + successor_count == REQUESTS, "nothing the first consumer finished was processed again"
        assert not answered_twice, f"requests answered twice: {list(answered_twice.items())[:5]}"
        assert set(answers) == set(requests)
        assert len(keys) == len(set(keys)) == stored_events, "each result event published once"
        assert dead_letters(settings) == 0


def test_an_api_process_stopped_with_requests_in_flight_answers_them_then_exits(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    """20 REST requests are published and waiting for replies (no consumer runs
    yet) when the API process gets SIGTERM; a consumer then starts. Every
    in-flight request completes with 200, the process finishes its graceful
    shutdown within 15 s, and it accepts no new connection meanwhile.

    uvicorn re-raises the signal once its graceful shutdown is complete, so the
    exit status is -SIGTERM (or 0): "Application shutdown complete" in its log
    is what says the shutdown was orderly."""
    load(engine, world())
    settings = unique_settings(database_url, bootstrap_servers)
    fleet = Fleet(settings, tmp_path)
    api = start_api(settings, tmp_path)
    figures = Figures("api-sigterm")
    with logs_on_failure(fleet.logs, process_logs([api])):
        try:
            calls = [Call(n, 1 + n % COMPANIES, [8100 + (1 + n % COMPANIES) * 10 + n % 4], 200) for n in range(IN_FLIGHT)]
            caller = threading.Thread(
                target=run_calls, args=([api.url], calls),
                kwargs={"workers": IN_FLIGHT, "client_timeout": settings.reply_timeout_s + 15}, daemon=True)
            caller.start()
            published = read_topic(bootstrap_servers, settings.request_topic, at_least=IN_FLIGHT, timeout=20, idle=0.3)
            assert len(published) == IN_FLIGHT, "every request is published and waiting for its reply"
            t0 = time.monotonic()
            api.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            try:
                late = httpx.post(api.url + "/healthz", timeout=2).status_code
            except httpx.HTTPError:
                late = None
            fleet.start("consumer")
            try:
                api.process.wait(BOUND_S)
            except subprocess.TimeoutExpired:
                pass
            exit_s = time.monotonic() - t0
            caller.join(settings.reply_timeout_s + 20)
        finally:
            api.stop()
            fleet.stop_all()
        rc = api.process.returncode
        requests = stored_results(engine, "refresh.request")
        figures.values.update(in_flight=IN_FLIGHT, statuses=statuses(calls), exit_code=rc, exit_s=exit_s,
                              new_connection_after_sigterm=late, max_wait_s=max_wait(calls))
        figures.show()
        assert all(c.status == 200 for c in calls), f"in-flight requests: {[(c.status, c.body) for c in calls][:5]}"
        assert exit_s <= BOUND_S and rc in (0, -signal.SIGTERM), f"exit {rc} after {exit_s:.1f} s"
        assert "Application shutdown complete" in api.log()
        assert late is None, "no new connection is accepted once shutting down"
        assert len(requests) == IN_FLIGHT and all(c.request_id in requests for c in calls)
        assert dead_letters(settings) == 0
