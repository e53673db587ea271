"""A node of a three-node Apache Kafka SIGKILLed under REST load and question deletions.

The cluster is the test's own (assessment_refresh.apache_kafka, RF 3,
min.insync.replicas=2): the node that leads the request topic's busiest
partition dies in the middle of the load, and the service has to ride through
the leader failover of every partition that node led (requests, replies,
question events, refresh events, the group's offsets) without a restart.

How long a failover takes is the cluster's business, not the service's: the
controller moves leadership away from a node that died without a clean
shutdown only once that node's broker session expires
(``broker.session.timeout.ms``, Kafka's default 9 s); measured here, the
busiest partition had no live leader for 7 to 12 s (``failover_s``). The
service runs on its defaults, whose produce deadline (``BROKER_TIMEOUT_S``)
and reply timeout cover that, and is held to the contract of
producer_api/delivery.py: a caller gets 200, or a 504 whose Location later
holds the result; a 503 only for a request that was certainly not written,
which the test checks against the stored results and the reply topic.

A second API process, a quarter of the calls, runs with the produce deadline
of before (2.5 s, what the failover of the issue that changed this ran on):
it cannot wait the election out, and is held to the same honesty (48 more
calls go to it from the kill on, so that some are produced during the
election). Its callers whose delivery was not confirmed get 504, and its Location then
holds the result or, past the bound, says the request was never received,
which the test checks is true.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from assessment_refresh.apache_kafka import ApacheKafka
from consumer.topics import service_topics
from producer_api.async_results import unconfirmed_bound_s
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
    follow_location,
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
IN_FLIGHT = 400  # callers at once: this many calls are in flight when the leader dies
KILL_AT = 450  # calls finished when the leader dies
POOL = 60  # common questions 40000..40059, the first 20 reworded after the assessments were built
COMMON = ("mcq", "common", "easy")
BROKER_TIMEOUT_S = Settings.broker_timeout_s  # the service's defaults (module docstring)
REPLY_TIMEOUT_S = Settings.reply_timeout_s
SHORT_BROKER_TIMEOUT_S = 2.5  # the second API's: the default before, shorter than the election
SHORT_API_EVERY = 4  # every 4th call goes to it
PROBES = 48  # and these, 8 at a time from the kill on: calls produced during the election
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
        calls.append(Call(n, company, rng.sample(by_company[company], rng.randint(1, 3)), 200,
                          api=1 if n % SHORT_API_EVERY == SHORT_API_EVERY - 1 else 0))
    return calls


def plan_probes(rng: Any) -> list[Call]:
    return [Call(REQUESTS + k, c.company, c.ids, 200, api=1) for k, c in enumerate(plan_calls(rng)[:PROBES])]


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


def follow_locations(urls: list[str], calls: list[Call], api_settings: list[Settings]) -> dict[int, tuple[int | None, Any]]:
    """Each 504's Location, polled as its caller would, from a few threads
    (the longest wait is the bound after which it says "never received")."""
    def follow(c: Call) -> tuple[int, tuple[int | None, Any]]:
        return c.n, follow_location(urls[c.api], c, bound=unconfirmed_bound_s(api_settings[c.api]) + 30)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(pool.map(follow, calls))


def location_statuses(calls: list[Call], located: dict[int, tuple[int | None, Any]]) -> dict[Any, int]:
    return dict(Counter(located[c.n][0] for c in calls if c.n in located))


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
        self.killed = threading.Event()
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
            self.killed.set()
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
    """1,000 REST refreshes (400 callers at once; three quarters to an API
    process on the service's defaults, a quarter to one with a 2.5 s produce
    deadline) and 200 question deletions on a three-node Apache Kafka, two
    consumer processes. At 450 finished calls, with 400 in flight, the node
    leading the request topic's busiest partition is SIGKILLed and stays
    down. Every caller of the default API gets 200 or a 504 whose Location
    then holds the result. Every 503 (of either API) is for a request with no
    stored result and no reply, and every Location that says "never
    received" is true. Every request a caller was told was written has
    exactly one stored result and the caller got that result, every reply
    re-sent for a request is the same reply, every
    deletion is processed exactly once, no question is replaced twice, and
    every stored result event is on the refresh events topic; no process is
    restarted."""
    skip_without_apache_kafka()
    monkeypatch.setenv("BROKER_PROFILE", "kafka")  # this cluster is Apache Kafka, whatever the session's broker is
    rng = seeded(SEED)
    load(engine, world())
    load(engine, bank_update())
    figures = Figures("kafka-failover")
    t0 = time.monotonic()
    with ApacheKafka(nodes=3) as cluster:
        figures["cluster_start_s"] = time.monotonic() - t0
        # The service's own defaults (the tests' common settings shorten the reply timeout).
        settings = unique_settings(database_url, cluster.bootstrap_servers, reply_timeout_s=REPLY_TIMEOUT_S)
        assert (settings.broker_timeout_s, settings.reply_timeout_s) == (BROKER_TIMEOUT_S, REPLY_TIMEOUT_S)
        short = replace(settings, broker_timeout_s=SHORT_BROKER_TIMEOUT_S)
        api_settings = [settings, short]
        fleet = Fleet(settings, tmp_path)
        apis: list[ServiceProcess] = []
        with logs_on_failure(fleet.logs, process_logs(apis), cluster_logs(cluster)):
            try:
                assert len(settings.kafka_bootstrap_servers.split(",")) == 3, settings.kafka_bootstrap_servers
                fleet.start("c0")
                fleet.start("c1")
                apis.append(start_api(settings, tmp_path))
                apis.append(start_api(short, tmp_path, name="api-short"))
                urls = [a.url for a in apis]
                pids = [p.process.pid for p in (*apis, *fleet.current.values())]
                replicas = {(t, p): len(r) for t in service_topics(settings)
                            for p, (_, r, _) in partition_leaders(cluster.bootstrap_servers, t).items()}
                assert set(replicas.values()) == {3}, f"the service's topics are replicated three times: {replicas}"

                calls = plan_calls(rng)
                probes = plan_probes(rng)
                progress = Progress()
                events = [deleted_event(10000 + i) for i in rng.sample(range(DELETIONS), DELETIONS)]
                # Events go out between 10 % and 70 % of the load, the kill at 45 %.
                feed = EventFeed(cluster.bootstrap_servers, settings.question_events_topic, events,
                                 gate=lambda k: progress.wait_for(100 + k * 3))
                failover = Failover(cluster, settings, progress, KILL_AT)
                client_timeout = BROKER_TIMEOUT_S + REPLY_TIMEOUT_S + 15
                started = time.monotonic()
                prober = threading.Thread(name="probes", daemon=True, target=lambda: failover.killed.wait(
                    FAILOVER_BOUND_S * 4) and run_calls(urls, probes, workers=8, client_timeout=client_timeout))
                feed.start()
                failover.start()
                prober.start()
                run_calls(urls, calls, workers=IN_FLIGHT, client_timeout=client_timeout, progress=progress)
                load_seconds = time.monotonic() - started
                failover.join(FAILOVER_BOUND_S + 10)
                prober.join(client_timeout * PROBES / 8)
                assert not prober.is_alive(), "the probes did not finish"
                # A 504 names where its result will be: the caller polls it
                # until it holds the result or says the request never arrived.
                every_call = [*calls, *probes]
                located = follow_locations(urls, [c for c in every_call if c.status == 504], api_settings)
                feed.join(60)
                assert feed.error is None and not feed.is_alive() and feed.undelivered == 0, feed.error
                assert len(feed.published) == DELETIONS
                written = [c for c in every_call if c.status == 200 or (c.status == 504 and located[c.n][0] == 200)]
                wait_for_backlog(engine, {"refresh.request": len(written), "question.deleted": DELETIONS}, timeout=90)
                backlog_seconds = time.monotonic() - started - load_seconds
                # What a "never received" Location says once everything is processed.
                never_received = [c for c in every_call if c.status == 504 and located[c.n][0] == 404]
                finally_located = follow_locations(urls, never_received, api_settings)
                after = [(p.process.pid, p.process.poll() is None) for p in (*apis, *fleet.current.values())]
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
            refused = [c for c in every_call if c.status == 503]
            refused_but_written = [c for c in refused if c.request_id is None
                                   or c.request_id in requests or c.request_id in replies]
            unknown_but_written = [c for c in never_received if c.request_id in requests or c.request_id in replies
                                   or finally_located[c.n][0] != 404]
            unanswered = [c for c in calls if c.api == 0 and not (
                c.status == 200 or (c.status == 504 and located[c.n][0] == 200))]
            odd = [c for c in every_call if c.status not in (200, 503, 504)
                   or (c.status == 504 and located[c.n][0] not in (200, 404))]
            without_result = [c for c in written if c.request_id not in requests]
            answers = {c.n: (c.status, c.body) if c.status == 200 else located.get(c.n) for c in every_call}
            mismatched = [c for c in written if c.request_id in requests and answers[c.n]
                          != (requests[c.request_id].status, requests[c.request_id].reply)]
            two_replies = {rid: r for rid, r in replies.items() if len({json.dumps(x, sort_keys=True) for x in r}) > 1}
            unreplied = [c for c in written if c.request_id in requests and c.request_id not in replies]
            lost = len(no_answer) + len(without_result)
            by_api = [[c for c in calls if c.api == i] for i in range(len(apis))]  # the load, apart from the probes
            duplicated = len(twice) + len(event_problems) + len(two_replies)
            figures.values.update(
                requests=len(calls), in_flight=IN_FLIGHT, broker_timeout_s=BROKER_TIMEOUT_S,
                reply_timeout_s=REPLY_TIMEOUT_S, events=DELETIONS, killed_node=failover.victim,
                killed_group_coordinator=failover.victim == failover.coordinator, partition=failover.partition,
                in_sync_at_kill=failover.in_sync,
                records_per_partition=failover.counts, new_leader=failover.new_leader,
                failover_s=failover.failover_s if failover.failover_s is not None else -1.0,
                statuses=statuses(by_api[0]), max_wait_s=max_wait(by_api[0]),
                location_statuses=location_statuses(by_api[0], located),
                short_statuses=statuses(by_api[1]), short_max_wait_s=max_wait(by_api[1]),
                short_location_statuses=location_statuses(by_api[1], located),
                probe_statuses=statuses(probes), probe_max_wait_s=max_wait(probes),
                probe_location_statuses=location_statuses(probes, located),
                told_503=len(refused), told_503_but_written=len(refused_but_written),
                never_received=len(never_received), never_received_but_written=len(unknown_but_written),
                lost=lost, duplicated=duplicated,
                resent_replies=sum(len(r) - 1 for r in replies.values()), republished_events=copies,
                load_s=load_seconds, backlog_s=backlog_seconds,
            )
            figures.show()
            assert failover.error is None, failover.error
            assert failover.killed_at is not None, "the load ended before the kill"
            assert len(failover.in_sync) == 3, f"all three replicas were in sync when the leader died: {failover.in_sync}"
            assert failover.failover_s is not None, f"no live leader for partition {failover.partition} after {FAILOVER_BOUND_S} s"
            assert after == [(pid, True) for pid in pids], f"no service process died or was restarted: {pids} -> {after}"
            assert not no_answer, f"{len(no_answer)} callers got no HTTP answer, e.g. {no_answer[:3]}"
            # librdkafka gives up on a record a second before BROKER_TIMEOUT_S
            # (producer_api/publisher.py): the default must outlast the failover.
            assert failover.failover_s < BROKER_TIMEOUT_S - 2, \
                f"the cluster's failover ({failover.failover_s:.1f} s) outlasted the default produce deadline"
            assert not refused_but_written, \
                f"503 told for requests that were written: {[(c.n, c.request_id, c.body) for c in refused_but_written[:5]]}"
            assert not unknown_but_written, \
                f"Locations that said 'never received' for written requests: {[(c.n, c.request_id) for c in unknown_but_written[:5]]}"
            assert not odd, f"answers outside the contract: {[(c.n, c.status, c.body, located.get(c.n)) for c in odd[:5]]}"
            assert not unanswered, \
                f"default API's callers without a 200 or a result at their Location: {[(c.n, c.status, c.body, located.get(c.n)) for c in unanswered[:5]]}"
            assert max_wait(every_call) <= BROKER_TIMEOUT_S + REPLY_TIMEOUT_S + 5, "a caller hung past the timeouts"
            assert not without_result, f"{len(without_result)} written requests never processed: {without_result[:3]}"
            assert len(requests) == len(written), "one stored result per written request, none for anything else"
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
