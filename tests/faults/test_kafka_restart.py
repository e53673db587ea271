"""A single Apache Kafka node restarted with its log kept, while the API and a consumer serve.

Unlike the memory-only Tansu of test_broker_down.py, a Kafka node that comes
back still has its topics, its committed offsets, the group and every record:
recovering means reconnecting, and nothing may be made again or lost. The
node is the test's own (assessment_refresh.apache_kafka), stopped cleanly
(SIGTERM) or killed (SIGKILL: the log is recovered on start), and started
again on the same ports.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from assessment_refresh.apache_kafka import ApacheKafka
from consumer.topics import service_topics
from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    Figures,
    Fleet,
    company_key,
    dead_letters,
    logs_on_failure,
    max_wait,
    process_logs,
    published_refresh_events,
    run_calls,
    skip_without_apache_kafka,
    statuses,
    stored_results,
    topic_ids,
    trigger_id,
    wait_for_backlog,
)
from tests.kafka_tools import deleted_event, publish_event, read_topic
from tests.processes import ServiceProcess, start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

COMPANIES = 2
ASSESSMENTS = 16  # oids 8000..8015, company 1 + j % 2
BEFORE_CALLS = 48  # each assessment named three times: the first refresh of each publishes an event
DELETIONS_BEFORE = 4  # questions 8100..8103, alternatives 8200..8203
DELETIONS_AFTER = 4  # questions 8104..8107
DOWN_S = 3.0  # the node stays down at least this long: every client notices
FIRST_200_BOUND_S = 45.0
AFTER_CALLS = 40
REPLY_TIMEOUT_S = 10.0  # a request caught by the restart costs its caller this much, not 20 s
PY = ("mcq", "python", "medium")


def kind(i: int) -> tuple[str, str, str]:
    return ("mcq", f"restart-{i}", "hard")


def world() -> dict[str, Any]:
    questions = [question(8300 + q, PY) for q in range(12)]
    for i in range(DELETIONS_BEFORE + DELETIONS_AFTER):
        questions += [question(8100 + i, kind(i)), question(8200 + i, kind(i))]
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": questions,
        "assessments": [
            {"oid": 8000 + j, "company_id": 1 + j % COMPANIES, "name": f"Restart {j}",
             "sections": [{"name": "S", "qids": [8300 + j % 12, 8300 + (j + 5) % 12]},
                          {"name": "Special", "qids": [8100 + j // 2]}]}
            for j in range(ASSESSMENTS)
        ],
    }


def bank_update() -> dict[str, Any]:
    """Every assessment's snapshots of 8300..8311 are stale: a first refresh changes it."""
    return {"questions": [question(8300 + q, PY, text_=f"question {8300 + q}, reworded") for q in range(12)]}


def make_call(n: int) -> Call:
    company = 1 + n % COMPANIES
    oids = [8000 + j for j in range(ASSESSMENTS) if 1 + j % COMPANIES == company]
    return Call(n, company, [oids[(n // COMPANIES) % len(oids)]], 200)


def make_calls(first: int, count: int) -> list[Call]:
    return [make_call(n) for n in range(first, first + count)]


def calls_until(stop: threading.Event, first: int, limit: int, made: list[Call]) -> Iterator[Call]:
    """Calls until ``stop`` is set (at most ``limit``), each kept in ``made``."""
    for n in range(first, first + limit):
        if stop.is_set():
            return
        call = make_call(n)
        made.append(call)
        yield call


def poll_until_ok(api: ServiceProcess, *, start: int, bound: float, client_timeout: float) -> Call:
    """One call at a time, 0.25 s apart, until one answers 200 or ``bound`` s passed; the last call."""
    deadline = time.monotonic() + bound
    n = start
    while True:
        call = make_call(n)
        run_calls([api.url], [call], workers=1, client_timeout=client_timeout)
        if call.status == 200 or time.monotonic() >= deadline:
            return call
        n += 1
        time.sleep(0.25)


def replies_on(bootstrap: str, topic: str, at_least: int) -> dict[str, set[str]]:
    """request id -> the distinct replies on the reply topic."""
    found: dict[str, set[str]] = {}
    for record in read_topic(bootstrap, topic, at_least=at_least, timeout=30):
        reply = json.loads(record.value or b"{}")
        found.setdefault(reply.get("request_id"), set()).add(json.dumps(reply.get("body"), sort_keys=True))
    return found


def delivery_unconfirmed(call: Call) -> bool:
    return isinstance(call.body, dict) and "may have been written" in str(call.body.get("error"))


def event_keys(events: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    return {(trigger_id(e), e["oid"]): json.dumps(e["detail"], sort_keys=True) for e in events}


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_restarted_kafka_node_keeps_everything_and_the_service_recovers_by_itself(
    how: str, database_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Apache Kafka node, one API process, one consumer. 48 calls answered
    200 and 4 deletions processed; then, while 4 callers keep calling, the node
    is stopped (SIGTERM, or SIGKILL) for at least 3 s and started again on its
    ports with its log. Without any process being restarted: calls answer 200
    again (within 45 s), then 40 concurrent calls and 4 more deletions all
    succeed. No topic was created again (same topic ids), every call answered
    200 before the restart still has its stored result and its reply on the
    reply topic, every refresh event published before is still on its topic,
    and every call answered during the restart got an answer (200, 503 or 504)
    and, if its request was published, exactly one stored result."""
    skip_without_apache_kafka()
    monkeypatch.setenv("BROKER_PROFILE", "kafka")  # this node is Apache Kafka, whatever the session's broker is
    load(engine, world())
    load(engine, bank_update())
    figures = Figures(f"kafka-restart-{how}")
    with ApacheKafka() as kafka:
        bootstrap = kafka.bootstrap_servers
        settings = unique_settings(database_url, bootstrap, reply_timeout_s=REPLY_TIMEOUT_S)
        # A request handed to the producer as the node went waits for it (up
        # to BROKER_TIMEOUT_S), then for its reply.
        client_timeout = settings.broker_timeout_s + REPLY_TIMEOUT_S + 15
        topics = service_topics(settings)
        fleet = Fleet(settings, tmp_path)
        apis: list[ServiceProcess] = []
        node_log = lambda: f"----- kafka node (pid {kafka.nodes[0].pid}) -----\n{kafka.nodes[0].log_tail()}"  # noqa: E731
        with logs_on_failure(fleet.logs, process_logs(apis), node_log):
            try:
                consumer = fleet.start("c0")
                apis.append(start_api(settings, tmp_path))
                api = apis[0]
                pids = (api.process.pid, consumer.process.pid)
                first = poll_until_ok(api, start=0, bound=45.0, client_timeout=client_timeout)
                assert first.status == 200, f"the service never answered before the restart: {first}"

                # -- before: answers, deletions, refresh events ---------------------------
                before = make_calls(100, BEFORE_CALLS)
                run_calls([api.url], before, workers=8, client_timeout=client_timeout)
                assert all(c.status == 200 for c in before), statuses(before)
                before = [first, *before]
                deletions_before = [deleted_event(8100 + i) for i in range(DELETIONS_BEFORE)]
                for event in deletions_before:
                    publish_event(bootstrap, settings.question_events_topic, event)
                wait_for_backlog(engine, {"question.deleted": DELETIONS_BEFORE}, timeout=30)
                results_before = stored_results(engine)
                expected_events = sum(len(r.events) for r in results_before.values())
                events_before = event_keys(published_refresh_events(settings, at_least=expected_events))
                ids_before = topic_ids(bootstrap, topics)

                # -- the restart, with callers calling all along -------------------------------
                stop_calls = threading.Event()
                during: list[Call] = []
                caller = threading.Thread(target=run_calls, name="callers", daemon=True, args=(
                    [api.url], calls_until(stop_calls, 1000, 5000, during)),
                    kwargs={"workers": 4, "client_timeout": client_timeout, "pause_after": {503: 0.1}})
                caller.start()
                time.sleep(1.0)
                down_at = time.monotonic()
                if how == "sigterm":
                    kafka.stop_node(1)
                else:
                    kafka.kill(1)
                stopped_s = time.monotonic() - down_at
                time.sleep(max(0.0, down_at + DOWN_S - time.monotonic()))
                kafka.restart(1)
                up_at = time.monotonic()
                deadline = up_at + FIRST_200_BOUND_S
                while time.monotonic() < deadline and not any(
                        c.status == 200 and c.started >= up_at for c in list(during)):
                    time.sleep(0.05)
                time.sleep(2.0)  # a little more load once it works again
                stop_calls.set()
                caller.join(client_timeout + 10)
                assert not caller.is_alive(), "the callers did not finish"

                # -- after: answers and deletions ---------------------------------------------
                after = make_calls(10000, AFTER_CALLS)
                run_calls([api.url], after, workers=AFTER_CALLS, client_timeout=client_timeout)
                deletions_after = [deleted_event(8100 + DELETIONS_BEFORE + i) for i in range(DELETIONS_AFTER)]
                for event in deletions_after:
                    publish_event(bootstrap, settings.question_events_topic, event)
                # A 504 whose delivery was not confirmed may not have been
                # written (producer_api/delivery.py): not counted as published.
                published = [c for c in [*before, *during, *after] if c.status == 200 or (
                    c.status == 504 and not delivery_unconfirmed(c))]
                wait_for_backlog(engine, {"refresh.request": len(published),
                                          "question.deleted": DELETIONS_BEFORE + DELETIONS_AFTER}, timeout=45)
                running = [p.process.poll() is None for p in (api, consumer)]
                ids_after = topic_ids(bootstrap, topics)
            finally:
                for a in apis:
                    a.stop()
                fleet.stop_all()

            # -- read back ----------------------------------------------------------------------
            results = stored_results(engine)
            requests = {k: r for k, r in results.items() if r.kind == "refresh.request"}
            deletions = {k for k, r in results.items() if r.kind == "question.deleted"}
            replies = replies_on(bootstrap, settings.reply_topic, at_least=len(requests))
            events_after = event_keys(published_refresh_events(
                settings, at_least=sum(len(r.events) for r in results.values())))
            before_forgotten = [c for c in before if c.request_id not in requests
                                or (requests[c.request_id].status, requests[c.request_id].reply) != (c.status, c.body)]
            before_unreplied = [c for c in before if c.request_id not in replies
                                or replies[c.request_id] != {json.dumps(c.body, sort_keys=True)}]
            events_gone = {k for k in events_before if events_after.get(k) != events_before[k]}
            recreated = {t for t in topics if ids_before.get(t) != ids_after.get(t)}
            first_200 = min((c.started + c.waited for c in during if c.status == 200 and c.started >= up_at),
                            default=None)
            no_answer = [c for c in during if c.status is None]
            odd = [c for c in during if c.status not in (200, 503, 504, None)]
            lost = [c for c in published if c.request_id not in requests]
            mismatched = [c for c in [*during, *after] if c.status == 200 and c.request_id in requests
                          and (requests[c.request_id].status, requests[c.request_id].reply) != (c.status, c.body)]
            figures.values.update(
                before=statuses(before), events_before=len(events_before), stop_s=stopped_s,
                downtime_s=up_at - down_at, first_200_after_restart_s=(first_200 - up_at) if first_200 else -1.0,
                during=statuses(during), during_unconfirmed=sum(delivery_unconfirmed(c) for c in during),
                during_max_wait_s=max_wait(during), after=statuses(after),
                after_max_wait_s=max_wait(after), topics_recreated=len(recreated), lost=len(lost),
                before_results_missing=len(before_forgotten), before_replies_missing=len(before_unreplied),
                refresh_events_missing=len(events_gone), events_after=len(events_after),
            )
            figures.show()
            assert running == [True, True] and pids == (api.process.pid, consumer.process.pid), \
                f"the API and the consumer kept running, neither restarted: {running}"
            assert not recreated, f"topics created again: {sorted(recreated)} ({ids_before} -> {ids_after})"
            assert not before_forgotten, f"answers given before the restart without their stored result: {before_forgotten[:3]}"
            assert not before_unreplied, f"replies committed before the restart missing afterwards: {before_unreplied[:3]}"
            assert not events_gone, f"refresh events published before the restart missing afterwards: {sorted(events_gone)[:3]}"
            assert first_200 is not None, f"no 200 within {FIRST_200_BOUND_S} s of the restart: {statuses(during)}"
            assert not no_answer, f"callers without an answer during the restart: {[(c.waited, c.error) for c in no_answer[:3]]}"
            assert not odd, f"answers other than 200, 503, 504 during the restart: {[(c.status, c.body) for c in odd[:3]]}"
            assert max_wait(during) <= REPLY_TIMEOUT_S + settings.broker_timeout_s + 5, "a caller hung"
            assert all(c.status == 200 for c in after), f"after the restart: {[(c.status, c.body) for c in after if c.status != 200][:5]}"
            assert not lost, f"published requests never processed: {lost[:3]}"
            assert not mismatched, f"callers got something other than the stored result: {mismatched[:3]}"
            assert len(requests) >= len(published)
            assert {e.event_id for e in [*deletions_before, *deletions_after]} == deletions
            assert dead_letters(settings) == 0
