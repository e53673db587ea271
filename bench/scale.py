"""Scenario 6 (issue 13): refresh at scale, at several sizes of one world.

For each fraction of the world of bench/scale_world.py (full size: 10,000
companies, 200,000 assessments of 20 questions, one company of 20,000
assessments of 50 questions), with two consumer processes and one API:

- fan-out: the popular public question (in half the assessments) is deleted;
  time from publishing the event to its ``refresh.completed`` summary,
  assessments per second, CPU per assessment (consumers and PostgreSQL), the
  largest transaction (assessments, seconds), and the latency of small REST
  requests of other companies sent all the while;
- the big company, 5% of its questions made stale and 1% deleted, refreshed
  through REST: time to the full report, the largest transaction;
- the inbox: rows before and after a pruning pass (retention 0: every
  published row is old enough).

Each timed refresh is printed next to its floor (bench/floor.py: the same
work as one SQL statement, same server, same world, rolled back) and the
ratio, with what PostgreSQL says it did meanwhile (bench/pg_stats.py: per
statement, WAL, checkpoints, autovacuum).
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from sqlalchemy import Engine, text

from assessment_refresh.loader import load_world, parse_world
from bench import floor, history_cost, pg_stats
from bench.env import Sampler, fresh_topics, machine_load, start_api, start_consumer
from bench.report import ratio, stats, table
from bench.scale_world import BIG_COMPANY, KEYED_COMPANIES, POPULAR_QID, SMALL_OID_BASE, ScaleSizes, api_key, build
from bench.world import company_changes
from shared import inbox
from shared.kafka import consumer_config, producer_config
from shared.messages import QUESTION_DELETED, QuestionEvent, new_id, utc_now_iso
from shared.settings import Settings

if TYPE_CHECKING:
    from bench.scenarios import Ctx

PATH = "/assessments/refresh-assessments"
TABLES = ("assessment_history, refresh_job_chunks, refresh_jobs, processed_messages, refresh_requests, assessment_slots, "
          "assessment_sections, assessments, api_keys, questions, companies")


def at_scale(ctx: Ctx) -> None:
    out: dict[str, Any] = {}
    for fraction in ctx.scale_fractions:
        sizes = ScaleSizes(fraction)
        print(f"-- at scale {fraction}: {sizes.assessments} + {sizes.big_assessments} assessments", flush=True)
        out[str(fraction)] = _one_size(ctx, sizes)
        ctx.results["6_at_scale"] = out  # kept as it grows: a later size may run out of time
    rows = [[f, r["fan_out"]["assessments"], r["fan_out"]["floor_seconds"], r["fan_out"]["seconds"],
             r["fan_out"]["ratio_to_floor"], r["fan_out"]["assessments_per_s"],
             r["fan_out"]["cpu_us_per_assessment"], r["fan_out"]["largest_transaction"],
             r["fan_out"]["small_requests"]["p50_ms"], r["fan_out"]["small_requests"]["p99_ms"],
             r["company"]["assessments"], r["company"]["floor_seconds"], r["company"]["seconds"],
             r["company"]["ratio_to_floor"], r["company"]["largest_transaction"],
             f"{r['inbox']['before']} -> {r['inbox']['after']}", r["fan_out"]["history"]["share"]]
            for f, r in out.items()]
    print(table("6. at scale (floor: one SQL statement, same server and world)",
                ["fraction", "fan-out", "floor s", "s", "ratio", "/s", "CPU us/assessment", "largest tx (n, s)",
                 "small p50 ms", "small p99 ms", "company", "floor s", "s", "ratio", "largest tx (n, s)",
                 "inbox rows", "history share"], rows))
    for f, r in out.items():
        for part in ("fan_out", "company"):
            print(pg_stats.markdown(f"scale {f}, {part.replace('_', '-')}: PostgreSQL meanwhile", r[part]["postgres"]))


def _one_size(ctx: Ctx, sizes: ScaleSizes) -> dict[str, Any]:
    engine = ctx.engine
    # Two consumers on one machine: no metrics port (both would want 9400, and the second would exit).
    settings = replace(fresh_topics(ctx.base), reply_timeout_s=300.0, rate_limit_per_s=0.0, consumer_metrics_port=0)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    summary = load_world(engine, parse_world(build(sizes), "scale world"), "scale world")
    # Outside a transaction: an ANALYZE in one that rolls back leaves no
    # statistics, and the planner then takes 500 oids for the whole table.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    load_s = round(time.perf_counter() - t0, 1)
    print(f"   world loaded in {load_s} s: {summary}", flush=True)
    statements = pg_stats.enable_statements(engine)
    history_cost.track(engine, ctx.pg_database)  # before the consumers connect
    consumers = [start_consumer(settings, ctx.log_dir) for _ in range(2)]
    api = start_api(settings, ctx.log_dir)
    try:
        if any(c.process.poll() is not None for c in consumers):
            raise RuntimeError(f"a consumer exited at start, see {ctx.log_dir}")
        _warm_up(api.url, sizes)
        fan_out = _fan_out(ctx, settings, api.url, sizes, [c.pid for c in consumers], statements)
        company = _company(engine, api.url, sizes, statements)
        pruning = _prune(engine, settings)
    finally:
        api.stop()
        for consumer in consumers:
            consumer.stop()
    return {"load_seconds": load_s, "fan_out": fan_out, "company": company, "inbox": pruning,
            "chunk_size": settings.refresh_chunk_size, "machine_after": machine_load()}


def _small_oids(sizes: ScaleSizes) -> dict[int, list[int]]:
    """Assessments of the keyed small companies (company 2 + i % companies owns oid SMALL_OID_BASE + i)."""
    by_company: dict[int, list[int]] = {}
    for i in range(sizes.assessments):
        company = 2 + i % sizes.companies
        if company <= KEYED_COMPANIES:
            by_company.setdefault(company, []).append(SMALL_OID_BASE + i)
    return by_company


def _warm_up(url: str, sizes: ScaleSizes) -> None:
    company, oids = next(iter(_small_oids(sizes).items()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.post(url + PATH, json={"assessment_ids": oids[:1]}, headers={"apiKey": api_key(company)}, timeout=30)
        if r.status_code == 200:
            return
        time.sleep(0.5)
    raise TimeoutError("the service never answered 200")


class SmallRequests(threading.Thread):
    """One-assessment REST refreshes of random small companies, one after another."""

    def __init__(self, url: str, oids: dict[int, list[int]], seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.oids, self.rng = url, oids, random.Random(seed)
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        companies = sorted(self.oids)
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                company = self.rng.choice(companies)
                started = time.perf_counter()
                r = http.post(self.url + PATH, json={"assessment_ids": [self.rng.choice(self.oids[company])]},
                              headers={"apiKey": api_key(company)})
                if r.status_code == 200:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.errors += 1


def _summary_arrival(settings: Settings, event_id: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """When (perf_counter) the fan-out's refresh.completed summary arrived, and the summary."""
    consumer = Consumer(consumer_config(settings, f"{settings.consumer_group}-bench-summary",
                                        **{"enable.auto.commit": False}))
    topic = settings.refresh_events_topic
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.05):
                if msg.error() is not None or b"refresh.completed" not in (msg.value() or b""):
                    continue
                value = json.loads(msg.value() or b"{}")
                if value["trigger"].get("event_id") == event_id:
                    return time.perf_counter(), value
        raise TimeoutError(f"no summary of {event_id} within {timeout} s")
    finally:
        consumer.close()


def _fan_out(ctx: Ctx, settings: Settings, url: str, sizes: ScaleSizes, consumer_pids: list[int],
            statements: bool) -> dict[str, Any]:
    floor_run = floor.fan_out(ctx.engine, POPULAR_QID)
    print(f"   fan-out floor: {floor_run}", flush=True)
    pg_stats.checkpoint(ctx.engine)
    reading = pg_stats.Reading(ctx.engine, statements).begin()
    small = SmallRequests(url, _small_oids(sizes), seed=1)
    sampler = Sampler({f"consumer{i}": pid for i, pid in enumerate(consumer_pids)}, ctx.pg_database)
    small.start()
    time.sleep(1.0)  # small requests before the deletion, too
    event = QuestionEvent(new_id(), QUESTION_DELETED, utc_now_iso(), qid=POPULAR_QID)
    producer = Producer(producer_config(settings))
    history_before = history_cost.trigger_ms(ctx.engine)
    started = time.perf_counter()
    producer.produce(settings.question_events_topic, event.to_json(), str(POPULAR_QID).encode())
    producer.flush(10)
    arrived, summary = _summary_arrival(settings, event.event_id, timeout=1800)
    seconds = arrived - started
    cpu = sampler.stop()
    postgres = reading.end()
    small.stop.set()
    small.join(60)
    n = summary["assessments"]
    largest = _largest_transaction(ctx.engine, event.event_id, n)
    return {
        "assessments": n, "changed": summary["changed"], "chunks": summary["chunks"],
        "seconds": round(seconds, 2), "assessments_per_s": round(n / seconds),
        "floor_seconds": floor_run["seconds"], "floor_replaced": floor_run["replaced"],
        "ratio_to_floor": ratio(seconds, floor_run["seconds"]),
        "cpu_seconds": {name: round(v, 2) for name, v in cpu.items()},
        "cpu_us_per_assessment": round(1e6 * sum(cpu.values()) / max(n, 1)),
        "largest_transaction": largest,
        "small_requests": {**stats(small.latencies), "errors": small.errors},
        "postgres": postgres,
        "history": history_cost.share(ctx.engine, event.event_id, history_before),
    }


def _largest_transaction(engine: Engine, job_id: str, assessments: int) -> list[float | None]:
    """[assessments, seconds] of the job's largest chunk; [assessments, None]
    when the refresh was small enough for one transaction (not a job)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT max(cardinality(oids)) AS n, max(extract(epoch FROM done_at - started_at)) AS s "
            "FROM refresh_job_chunks WHERE job_id = :id"), {"id": job_id}).one()
    if row.n is None:
        return [assessments, None]
    return [int(row.n), round(float(row.s), 3)]


def _company(engine: Engine, url: str, sizes: ScaleSizes, statements: bool) -> dict[str, Any]:
    with engine.connect() as conn:
        changes = company_changes(conn, [BIG_COMPANY], rep=0)
    load_world(engine, parse_world(changes, "big company changes"), "big company changes")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE questions"))
    floor_run = floor.company(engine, BIG_COMPANY)
    print(f"   company floor: {floor_run}", flush=True)
    pg_stats.checkpoint(engine)
    reading = pg_stats.Reading(engine, statements).begin()
    started = time.perf_counter()
    r = httpx.post(url + PATH, json={}, headers={"apiKey": api_key(BIG_COMPANY)}, timeout=600)
    seconds = time.perf_counter() - started
    postgres = reading.end()
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert len(body["details"]) == sizes.big_assessments, "the full report"
    return {
        "assessments": len(body["details"]), "seconds": round(seconds, 2),
        "report_mb": round(len(r.content) / 2**20, 1),
        "questions_refreshed": sum(d["questions_refreshed"] for d in body["details"]),
        "replaced": sum(d["deleted_questions_replaced"] for d in body["details"]),
        "floor_seconds": floor_run["seconds"], "floor_refreshed": floor_run["refreshed"],
        "floor_replaced": floor_run["replaced"], "ratio_to_floor": ratio(seconds, floor_run["seconds"]),
        "postgres": postgres,
        "largest_transaction": _largest_transaction(engine, r.headers["x-request-id"], len(body["details"])),
    }


def _prune(engine: Engine, settings: Settings) -> dict[str, Any]:
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM processed_messages")).scalar_one()
    started, deleted = time.perf_counter(), 0
    while True:
        with engine.begin() as conn:
            n = inbox.prune(conn, 0.0, settings.prune_batch_size)
        deleted += n
        if n == 0:
            break
    with engine.connect() as conn:
        after = conn.execute(text("SELECT count(*) FROM processed_messages")).scalar_one()
    return {"before": before, "after": after, "deleted": deleted, "seconds": round(time.perf_counter() - started, 2)}
