"""A node of a three-node Apache Kafka SIGKILLed under REST load and question deletions.

The cluster is the test's own (assessment_refresh.apache_kafka, RF 3,
min.insync.replicas=2): the node that leads the request topic's busiest
partition dies in the middle of the load, and the service has to ride through
the leader failover of every partition that node led (requests, replies,
question events, refresh events, the group's offsets) without a restart.

How long a failover takes is the cluster's business, not the service's: the
controller moves leadership away from a node that died without a clean
shutdown only once that node's broker session expires
(``broker.session.timeout.ms``, Kafka's default 9 s). Measured here: the
busiest partition had no live leader for 7 to 12 s. The service's
``BROKER_TIMEOUT_S`` must be longer than that for a caller to wait through
the failover instead of getting 503 (its default, 2.5 s, is shorter), so the
test configures it above the failover time, as an operator of a replicated
cluster has to; the figure ``failover_s`` shows the margin.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from assessment_refresh.apache_kafka import ApacheKafka
from consumer.topics import service_topics
from shared.settings import Settings
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
    duplicate_qids,
    end_offsets,
    logs_on_failure,
    max_wait,
    partition_leaders,
    process_logs,
    published_refresh_events,
    quiet_admin,
    replaced_more_than_once,
    run_calls,
    seeded,
    skip_without_apache_kafka,
    statuses,
    stored_replacements,
    stored_results,
    wait_for_backlog,
)
from tests.kafka_tools import deleted_event, read_topic
from tests.processes import ServiceProcess, start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

SEED = 20261129
COMPANIES = 8
ASSESSMENTS = 400  # oids 1000..1399, company 1 + j % 8
DELETIONS = 200  # questions 10000..10199, each used by two assessments; alternative 20000 + i
REQUESTS = 1000
KILL_AT = 450  # calls finished when the leader dies
POOL = 60  # common questions 40000..40059, the first 20 reworded after the assessments were built
COMMON = ("mcq", "common", "easy")
BROKER_TIMEOUT_S = 20.0  # above the cluster's failover time (module docstring)
DEFAULT_BROKER_TIMEOUT_S = Settings.broker_timeout_s  # what the service would answer 503 after
REPLY_TIMEOUT_S = 20.0
FAILOVER_BOUND_S = 30.0  # the busiest partition has a live leader again within this


def kind(i: int) -> tuple[str, str, str]:
    return ("mcq", f"skill-{i:03d}", "medium")


def oid_of(j: int) -> int:
    return 1000 + j


def company_of(j: int) -> int:
    return 1 + j % COMPANIES


def world() -> dict[str, Any]:
    """Deleted question D_i has a kind of its own, with one public alternative:
    each of its two assessments gets that alternative, whichever refresh (REST
    or the deletion's own) replaces it, and exactly once."""
    questions = [question(40000 + p, COMMON) for p in range(POOL)]
    for i in range(DELETIONS):
        questions += [question(10000 + i, kind(i)), question(20000 + i, kind(i))]
    assessments = [
        {"oid": oid_of(j), "company_id": company_of(j), "name": f"Failover {j}",
         "sections": [{"name": "Common", "qids": [40000 + (j + 7 * k) % POOL for k in range(4)]},
                      {"name": "Special", "qids": [10000 + j // 2]}]}
        for j in range(ASSESSMENTS)
    ]
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
        calls.append(Call(n, company, rng.sample(by_company[company], rng.randint(1, 3)), 200))
    return calls


def cluster_logs(cluster: ApacheKafka) -> Any:
    return lambda: "\n".join(f"----- kafka node {n.node_id} (pid {n.pid}) -----\n{n.log_tail()}" for n in cluster.nodes)


def replies_by_request(bootstrap: str, topic: str, at_least: int) -> dict[str, list[Any]]:
    """request id -> every reply published for it (a redelivered request re-sends its stored reply)."""
    replies: dict[str, list[Any]] = defaultdict(list)
    for record in read_topic(bootstrap, topic, at_least=at_least, timeout=60):
        reply = json.loads(record.value or b"{}")
        replies[reply.get("request_id")].append((reply.get("status"), reply.get("body")))
    return dict(replies)


def slots_on_deleted_questions(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM assessment_slots s JOIN questions q ON q.qid = s.qid WHERE q.deleted")).scalar_one())


class Failover(threading.Thread):
    """At ``at`` finished calls: SIGKILL the leader of the request topic's
    busiest partition (most records so far), then time how long until the
    brokers name a live leader for it again."""

    def __init__(self, cluster: ApacheKafka, settings: Settings, progress: Progress, at: int) -> None:
        super().__init__(name="failover", daemon=True)
        self.cluster, self.settings, self.progress, self.at = cluster, settings, progress, at
        self.topic = settings.request_topic
        self.partition: int | None = None
        self.counts: dict[int, int] = {}
        self.victim: int | None = None
        self.in_sync: list[int] = []
        self.coordinator: int | None = None  # the group's coordinator when the victim died
        self.new_leader: int | None = None
        self.killed_at: float | None = None
        self.failover_s: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if not self.progress.wait_for(self.at):
                return
            bootstrap = self.cluster.bootstrap_servers
            self.counts = end_offsets(bootstrap, self.topic)
            self.partition = max(self.counts, key=lambda p: (self.counts[p], -p))
            self.victim, _, self.in_sync = partition_leaders(bootstrap, self.topic)[self.partition]
            admin = quiet_admin(bootstrap)
            group = self.settings.consumer_group
            self.coordinator = admin.describe_consumer_groups([group], request_timeout=10)[group].result().coordinator.id
            self.cluster.kill(self.victim)
            self.killed_at = time.monotonic()
            live = ",".join(n.address for n in self.cluster.nodes if n.running)
            deadline = self.killed_at + FAILOVER_BOUND_S
            while time.monotonic() < deadline:
                try:
                    leader = partition_leaders(live, self.topic)[self.partition][0]
                except Exception:  # noqa: BLE001 - metadata not answered yet
                    leader = -1
                if leader not in (-1, self.victim):
                    self.new_leader = leader
                    self.failover_s = time.monotonic() - self.killed_at
                    return
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_a_partition_leader_killed_under_load_loses_and_duplicates_nothing(
    database_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 REST refreshes (one API process, 32 callers) and 200 question
    deletions on a three-node Apache Kafka, two consumer processes. At 450
    finished calls the node leading the request topic's busiest partition is
    SIGKILLed and stays down. Every caller gets 200 (a 504, if any, and then
    a retry of the same call that gets 200), every published request has
    exactly one stored result and the caller got that result, every reply
    re-sent for a request is the same reply, every deletion is processed
    exactly once, no question is replaced twice, and every stored result
    event is on the refresh events topic; no process is restarted."""
    skip_without_apache_kafka()
    monkeypatch.setenv("BROKER_PROFILE", "kafka")  # this cluster is Apache Kafka, whatever the session's broker is
    rng = seeded(SEED)
    load(engine, world())
    load(engine, bank_update())
    figures = Figures("kafka-failover")
    t0 = time.monotonic()
    with ApacheKafka(nodes=3) as cluster:
        figures["cluster_start_s"] = time.monotonic() - t0
        settings = unique_settings(database_url, cluster.bootstrap_servers,
                                   broker_timeout_s=BROKER_TIMEOUT_S, reply_timeout_s=REPLY_TIMEOUT_S)
        fleet = Fleet(settings, tmp_path)
        apis: list[ServiceProcess] = []
        with logs_on_failure(fleet.logs, process_logs(apis), cluster_logs(cluster)):
            try:
                assert len(settings.kafka_bootstrap_servers.split(",")) == 3, settings.kafka_bootstrap_servers
                fleet.start("c0")
                fleet.start("c1")
                apis.append(start_api(settings, tmp_path))
                api = apis[0]
                pids = [p.process.pid for p in (api, *fleet.current.values())]
                replicas = {(t, p): len(r) for t in service_topics(settings)
                            for p, (_, r, _) in partition_leaders(cluster.bootstrap_servers, t).items()}
                assert set(replicas.values()) == {3}, f"the service's topics are replicated three times: {replicas}"

                calls = plan_calls(rng)
                progress = Progress()
                events = [deleted_event(10000 + i) for i in rng.sample(range(DELETIONS), DELETIONS)]
                # Events go out between 10 % and 70 % of the load, the kill at 45 %.
                feed = EventFeed(cluster.bootstrap_servers, settings.question_events_topic, events,
                                 gate=lambda k: progress.wait_for(100 + k * 3))
                failover = Failover(cluster, settings, progress, KILL_AT)
                client_timeout = BROKER_TIMEOUT_S + REPLY_TIMEOUT_S + 15
                started = time.monotonic()
                feed.start()
                failover.start()
                run_calls([api.url], calls, workers=32, client_timeout=client_timeout, progress=progress)
                load_seconds = time.monotonic() - started
                failover.join(FAILOVER_BOUND_S + 10)
                # A 504 is an answer the caller may retry: the same call again, once.
                retries = [Call(REQUESTS + c.n, c.company, c.ids, 200) for c in calls if c.status == 504]
                run_calls([api.url], retries, workers=8, client_timeout=client_timeout)
                feed.join(60)
                assert feed.error is None and not feed.is_alive() and feed.undelivered == 0, feed.error
                assert len(feed.published) == DELETIONS
                every_call = [*calls, *retries]
                published = [c for c in every_call if c.status in (200, 504)]
                wait_for_backlog(engine, {"refresh.request": len(published), "question.deleted": DELETIONS}, timeout=90)
                backlog_seconds = time.monotonic() - started - load_seconds
                after = [(p.process.pid, p.process.poll() is None) for p in (api, *fleet.current.values())]
            finally:
                for a in apis:
                    a.stop()
                fleet.stop_all()

            # -- read back: stored results, replies and refresh events ---------------
            requests = stored_results(engine, "refresh.request")
            deletions = stored_results(engine, "question.deleted")
            replies = replies_by_request(cluster.bootstrap_servers, settings.reply_topic, at_least=len(requests))
            results = {**requests, **deletions}
            refresh_events = published_refresh_events(settings, at_least=sum(len(r.events) for r in results.values()))
            copies, event_problems = check_refresh_events(refresh_events, results)
            ledger = stored_replacements(results)
            twice = replaced_more_than_once(ledger)
            no_answer = [c for c in every_call if c.status is None]
            unanswered = [c for c in calls if c.status != 200 and not (
                c.status == 504 and any(r.status == 200 for r in retries if r.n == REQUESTS + c.n))]
            without_result = [c for c in published if c.request_id not in requests]
            mismatched = [c for c in every_call if c.status == 200 and c.request_id in requests
                          and (requests[c.request_id].status, requests[c.request_id].reply) != (c.status, c.body)]
            two_replies = {rid: r for rid, r in replies.items() if len({json.dumps(x, sort_keys=True) for x in r}) > 1}
            unreplied = [c for c in published if c.request_id in requests and c.request_id not in replies]
            lost = len(no_answer) + len(without_result)
            duplicated = len(twice) + len(event_problems) + len(two_replies)
            figures.values.update(
                requests=len(calls), retries=len(retries), events=DELETIONS, killed_node=failover.victim,
                killed_group_coordinator=failover.victim == failover.coordinator, partition=failover.partition,
                in_sync_at_kill=failover.in_sync,
                records_per_partition=failover.counts, new_leader=failover.new_leader,
                failover_s=failover.failover_s if failover.failover_s is not None else -1.0,
                statuses=statuses(calls), retry_statuses=statuses(retries), lost=lost, duplicated=duplicated,
                resent_replies=sum(len(r) - 1 for r in replies.values()), republished_events=copies,
                max_wait_s=max_wait(every_call),
                waited_over_default_broker_timeout=sum(c.waited > DEFAULT_BROKER_TIMEOUT_S for c in every_call),
                load_s=load_seconds, backlog_s=backlog_seconds,
            )
            figures.show()
            assert failover.error is None, failover.error
            assert failover.killed_at is not None, "the load ended before the kill"
            assert len(failover.in_sync) == 3, f"all three replicas were in sync when the leader died: {failover.in_sync}"
            assert failover.failover_s is not None, f"no live leader for partition {failover.partition} after {FAILOVER_BOUND_S} s"
            assert after == [(pid, True) for pid in pids], f"no service process died or was restarted: {pids} -> {after}"
            assert not no_answer, f"{len(no_answer)} callers got no HTTP answer, e.g. {no_answer[:3]}"
            # The API gives up on a publish a second before BROKER_TIMEOUT_S
            # (producer_api/publisher.py): a longer failover is a 503 by design.
            assert failover.failover_s < BROKER_TIMEOUT_S - 2, \
                f"the cluster's failover ({failover.failover_s:.1f} s) outlasted what the service is configured to wait"
            assert not unanswered, f"callers without a 200: {[(c.n, c.status, c.body) for c in unanswered[:5]]}"
            assert max_wait(every_call) <= BROKER_TIMEOUT_S + REPLY_TIMEOUT_S + 5, "a caller hung past the timeouts"
            assert not without_result, f"{len(without_result)} published requests never processed: {without_result[:3]}"
            assert len(requests) == len(published), "one stored result per published request, none for anything else"
            assert not mismatched, f"callers got something other than the stored result: {mismatched[:3]}"
            assert not unreplied, f"processed requests without a reply on the reply topic: {unreplied[:3]}"
            assert not two_replies, f"requests answered two different ways: {list(two_replies.items())[:3]}"
            assert {e.event_id for e in events} == set(deletions), "one stored result per deletion event"
            assert all(r.status == 200 for r in deletions.values())
            assert not twice, f"questions replaced more than once: {list(twice.items())[:5]}"
            assert len(ledger) == ASSESSMENTS, "every slot of a deleted question was replaced, exactly once"
            assert slots_on_deleted_questions(engine) == 0
            assert not event_problems, event_problems
            assert duplicate_qids(engine) == []
            assert dead_letters(settings) == 0, "nothing was dead-lettered"
            assert lost == 0 and duplicated == 0
