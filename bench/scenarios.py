"""The five scenarios of issue 5, each measured next to its floor.

Each scenario gets fresh topics and its own service processes, and warms up
(group join, connection pools, first imports) before anything is timed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from sqlalchemy import Engine, event, make_url, text

from assessment_refresh.loader import load_world, parse_world
from bench import client, profile
from bench.echo import EchoClient
from bench.env import Sampler, fresh_topics, machine_load, services, spawn
from bench.report import LATENCY_HEADER, latency_rows, ratio, stats, table
from bench.world import (
    COMPANY_100,
    COMPANY_1000,
    FAN_QID_BASE,
    SMALL_COMPANY,
    SMALL_OID,
    SOAK_COMPANIES,
    WARM_QID_BASE,
    Sizes,
    api_key,
    company_changes,
    replay_bank,
)
from consumer.handlers import Handlers
from consumer.replay import StartPoint, run_replay
from shared.kafka import consumer_config, ensure_topics, producer_config
from shared.messages import QUESTION_DELETED, QUESTION_UPSERTED, QuestionEvent, RefreshRequested, new_id, utc_now_iso
from shared.settings import Settings


@dataclass
class Ctx:
    base: Settings
    engine: Engine
    sizes: Sizes
    log_dir: Path
    broker_pid: int | None
    soak_seconds: float
    profile_dir: Path | None
    results: dict[str, Any]
    scale_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # scenario 6

    @property
    def pg_database(self) -> str:
        return make_url(self.base.database_url).database or ""

    def pids(self, svc: dict[str, Any]) -> dict[str, int]:
        pids = {name: s.pid for name, s in svc.items()} | {"bench": os.getpid()}
        return pids | ({"broker": self.broker_pid} if self.broker_pid else {})


@contextlib.contextmanager
def count_statements(engine: Engine) -> Iterator[list[int]]:
    """Statements this thread sends (the API and consumer never share our engine)."""
    count, me = [0], threading.get_ident()

    def listener(*_args: object) -> None:
        if threading.get_ident() == me:
            count[0] += 1

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield count
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def cpu_per_request(cpu: dict[str, float], n: int) -> dict[str, float]:
    return {name: round(seconds / n * 1000, 3) for name, seconds in cpu.items()}


def refresh_in_process(handlers: Handlers, company: int, ids: list[int] | None) -> tuple[float, int, dict[str, Any]]:
    """(seconds, statements, reply body) of one refresh as the consumer runs it."""
    with count_statements(handlers.engine) as count:
        t0 = time.perf_counter()
        handled = handlers.refresh_requested(RefreshRequested(new_id(), company, ids), None)
        elapsed = time.perf_counter() - t0
    reply = json.loads(handled.outgoing[-1].value)
    assert reply["status"] == 200, reply
    return elapsed, count[0], reply["body"]


def summary_of(body: dict[str, Any]) -> dict[str, int]:
    details = body["details"]
    return {"assessments": len(details), "updated": sum(d["status"] == "updated" for d in details),
            "questions_refreshed": sum(d["questions_refreshed"] for d in details),
            "replaced": sum(d["deleted_questions_replaced"] for d in details),
            "not_replaced": sum(d["deleted_questions_not_replaced"] for d in details)}


# -- 1. round trip of a small request (and 5. peak memory meanwhile) ---------------


def round_trip(ctx: Ctx) -> None:
    sz, settings = ctx.sizes, fresh_topics(ctx.base)
    keys, body = [api_key(SMALL_COMPANY)], {"assessment_ids": [SMALL_OID]}
    out: dict[str, Any] = {"machine_before": machine_load()}
    with services(settings, ctx.log_dir) as svc:
        url = svc["api"].url
        client.warm_up(url, keys, body, need_ok=5)
        client.concurrent(url, keys, body, max(100, sz.concurrent_requests // 10), sz.in_flight)
        sampler = Sampler(ctx.pids(svc), ctx.pg_database)
        with profile.recording(ctx.profile_dir, "s1", {n: s.pid for n, s in svc.items()}):
            c0 = sampler.cpu()
            seq = client.sequential(url, keys, body, sz.seq_requests)
            c1 = sampler.cpu()
            conc = client.concurrent(url, keys, body, sz.concurrent_requests, sz.in_flight)
            c2 = sampler.cpu()
        sampler.stop()
        reply_size = len(httpx.post(url + client.PATH, json=body, headers={"apiKey": keys[0]}).content)
    out["cpu_ms_per_request_seq"] = cpu_per_request({n: c1[n] - c0[n] for n in c0}, sz.seq_requests)
    out["cpu_ms_per_request_concurrent"] = cpu_per_request({n: c2[n] - c1[n] for n in c1}, sz.concurrent_requests)
    ctx.results["5_memory"] = {"peak_rss_mb_during_s1": {n: round(sampler.peak_mb(n), 1) for n in ("api", "consumer")}}

    # Floor (a): the same refresh in-process, against the same PostgreSQL.
    handlers = Handlers(ctx.engine, settings)
    for _ in range(20):
        refresh_in_process(handlers, SMALL_COMPANY, [SMALL_OID])
    runs = [refresh_in_process(handlers, SMALL_COMPANY, [SMALL_OID]) for _ in range(sz.inproc_requests)]
    inproc = stats([r[0] for r in runs], sum(r[0] for r in runs))
    out["statements_per_refresh"] = runs[0][1]

    # Floor (b): bare Kafka echo between two processes, payload the size of the real reply.
    echo_settings = fresh_topics(ctx.base)
    server = spawn("echo", ["-m", "bench.echo"], echo_settings, ctx.log_dir)
    try:
        echo = EchoClient(echo_settings, b'{"schema_version":1,"pad":"' + b"x" * max(0, reply_size - 30) + b'"}')
        echo.run(20, 1, timeout=60)  # the server's group join
        echo.run(300, sz.in_flight)
        e_seq = echo.run(sz.seq_requests, 1)
        e_conc = echo.run(sz.concurrent_requests, sz.in_flight)
        echo.close()
    finally:
        server.stop()
    s_seq, s_conc = stats(seq.latencies, seq.elapsed, seq.errors), stats(conc.latencies, conc.elapsed, conc.errors)
    e1, e50 = stats(e_seq.latencies, e_seq.elapsed), stats(e_conc.latencies, e_conc.elapsed)
    named = {"service, 1 in flight": s_seq, f"service, {sz.in_flight} in flight": s_conc,
             "floor: in-process refresh": inproc, "floor: bare echo, 1 in flight": e1,
             f"floor: bare echo, {sz.in_flight} in flight": e50}
    out |= {"latency": named, "reply_bytes": reply_size, "last_error": conc.last_error or seq.last_error,
            "ratios": {"p50_seq_service_over_echo": ratio(s_seq["p50_ms"], e1["p50_ms"]),
                       "p99_seq_service_over_echo": ratio(s_seq["p99_ms"], e1["p99_ms"]),
                       "p50_seq_service_over_inproc": ratio(s_seq["p50_ms"], inproc["p50_ms"]),
                       "p50_concurrent_service_over_echo": ratio(s_conc["p50_ms"], e50["p50_ms"]),
                       "throughput_echo_over_service": ratio(e50["throughput_per_s"], s_conc["throughput_per_s"])},
            "machine_after": machine_load()}
    ctx.results["1_round_trip"] = out
    print(table("1. round trip, one assessment of 20 questions", LATENCY_HEADER, latency_rows(named)))
    print("ratios:", out["ratios"], "| statements per refresh:", out["statements_per_refresh"])
    print("CPU ms per request at", sz.in_flight, "in flight:", out["cpu_ms_per_request_concurrent"])


# -- 2. whole-company refresh -----------------------------------------------------


def whole_company(ctx: Ctx) -> None:
    """Each timed refresh follows one freshly loaded bank update (5% new content,
    1% deleted, drawn per repetition from the questions in use), so every
    repetition starts from the same kind of staleness."""
    sz, settings = ctx.sizes, fresh_topics(ctx.base)
    handlers = Handlers(ctx.engine, settings)
    companies = [COMPANY_100, COMPANY_1000]
    rows: dict[str, list[Any]] = {"rest_large": [], "rest_small": [], "inproc_large": [], "inproc_small": []}
    statements: dict[str, list[int]] = {"small": [], "large": []}

    def update(rep: int) -> None:
        with ctx.engine.connect() as conn:
            doc = company_changes(conn, companies, rep)
        load_world(ctx.engine, parse_world(doc, "bench changes"), "bench changes")

    def rest(company: int) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        response = httpx.post(url + client.PATH, json={}, headers={"apiKey": api_key(company)}, timeout=60)
        elapsed = time.perf_counter() - t0
        assert response.status_code == 200, response.text[:300]
        return elapsed, response.json()

    with services(settings, ctx.log_dir) as svc:
        url = svc["api"].url
        client.warm_up(url, [api_key(COMPANY_100)], {}, need_ok=3)
        with profile.recording(ctx.profile_dir, "s2", {n: s.pid for n, s in svc.items()}):
            for rep in range(sz.company_reps):
                update(2 * rep)
                t, body = rest(COMPANY_1000)
                rows["rest_large"].append((t, summary_of(body)))
                t, n, body = refresh_in_process(handlers, COMPANY_100, None)
                rows["inproc_small"].append((t, summary_of(body)))
                statements["small"].append(n)
                update(2 * rep + 1)
                t, n, body = refresh_in_process(handlers, COMPANY_1000, None)
                rows["inproc_large"].append((t, summary_of(body)))
                statements["large"].append(n)
                t, body = rest(COMPANY_100)
                rows["rest_small"].append((t, summary_of(body)))
    named = {
        f"REST, {sz.company_large} assessments": stats([r[0] for r in rows["rest_large"]]),
        f"floor: in-process, {sz.company_large}": stats([r[0] for r in rows["inproc_large"]]),
        f"REST, {sz.company_small} assessments": stats([r[0] for r in rows["rest_small"]]),
        f"in-process, {sz.company_small}": stats([r[0] for r in rows["inproc_small"]]),
    }
    ctx.results["2_whole_company"] = {
        "reset": "before each timed refresh a new bank update is loaded with assessment_refresh.loader.load_world "
                 "(new content for 5% of the questions in use, 1% deleted, seed per repetition)",
        "questions_per_assessment": sz.questions_per_assessment, "latency": named,
        "statements_per_refresh": {str(sz.company_small): statements["small"],
                                   str(sz.company_large): statements["large"]},
        "work_per_refresh": {k: [r[1] for r in v] for k, v in rows.items()},
        "ratio_rest_over_inproc_median": ratio(named[f"REST, {sz.company_large} assessments"]["median_ms"],
                                               named[f"floor: in-process, {sz.company_large}"]["median_ms"]),
        "machine_after": machine_load(),
    }
    print(table(f"2. whole-company refresh ({sz.questions_per_assessment} questions each)", LATENCY_HEADER,
                latency_rows(named)))
    print("statements per refresh:", ctx.results["2_whole_company"]["statements_per_refresh"],
          "| work (first rep, REST large):", rows["rest_large"][0][1])


# -- 3. fan-out of one deletion ----------------------------------------------------


class EventCounter(threading.Thread):
    """Reads assessment.refresh.events from the beginning; counts events per
    trigger event_id and remembers when the latest one arrived."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.topic = settings.refresh_events_topic
        self.counts: dict[str | None, int] = {}
        self.last: dict[str | None, float] = {}
        self.stop = threading.Event()
        self.consumer = Consumer(consumer_config(settings, f"{settings.consumer_group}-bench-reader",
                                                 **{"enable.auto.commit": False}))
        deadline = time.monotonic() + 30
        while not (meta := self.consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)) or meta.error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic} not created by the consumer")
            time.sleep(0.2)
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])

    def run(self) -> None:
        while not self.stop.is_set():
            first = self.consumer.poll(0.1)
            if first is None:
                continue
            now = time.perf_counter()
            for msg in [first, *self.consumer.consume(num_messages=1000, timeout=0)]:
                if msg.error() is None:
                    trigger = json.loads(msg.value() or b"{}")["trigger"].get("event_id")
                    self.counts[trigger] = self.counts.get(trigger, 0) + 1
                    self.last[trigger] = now
        self.consumer.close()

    def wait_for(self, event_id: str, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.counts.get(event_id, 0) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.counts.get(event_id, 0)}/{count} events after {timeout} s")
            time.sleep(0.005)
        return float(self.last[event_id])


def fan_out(ctx: Ctx) -> None:
    sz, settings = ctx.sizes, fresh_topics(ctx.base)
    producer = Producer(producer_config(settings))

    def delete(qid: int) -> tuple[str, float]:
        event = QuestionEvent(new_id(), QUESTION_DELETED, utc_now_iso(), qid=qid)
        t0 = time.perf_counter()
        producer.produce(settings.question_events_topic, event.to_json(), str(qid).encode())
        producer.flush(10)
        return event.event_id, t0

    times, cpu = [], []
    with services(settings, ctx.log_dir, api=False) as svc:
        reader = EventCounter(settings)
        reader.start()
        for rep in range(sz.fanout_reps):
            warm_id, _ = delete(WARM_QID_BASE + rep)  # one assessment: shows the consumer is live
            reader.wait_for(warm_id, 1, timeout=60)
            sampler = Sampler(ctx.pids(svc), ctx.pg_database)
            with profile.recording(ctx.profile_dir, f"s3-rep{rep}", {n: s.pid for n, s in svc.items()}):
                event_id, t0 = delete(FAN_QID_BASE + rep)
                times.append(reader.wait_for(event_id, sz.fanout_assessments, timeout=300) - t0)
            cpu.append({n: round(s, 2) for n, s in sampler.stop().items()})
        reader.stop.set()
        reader.join(5)
    with ctx.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM assessment_slots WHERE qid = ANY(:q)"),
                            {"q": [FAN_QID_BASE + r for r in range(sz.fanout_reps)]}).scalar_one()
    named = {f"deletion -> last of {sz.fanout_assessments} events": stats(times)}
    ctx.results["3_fan_out"] = {"assessments": sz.fanout_assessments, "companies": sz.fanout_companies,
                                "latency": named, "seconds": [round(t, 3) for t in times],
                                "cpu_seconds_per_rep": cpu, "slots_still_holding_deleted": left,
                                "machine_after": machine_load()}
    print(table("3. fan-out of one question.deleted", LATENCY_HEADER, latency_rows(named)))
    print("CPU seconds per repetition:", cpu)


# -- 4. replay ---------------------------------------------------------------------


def replay(ctx: Ctx) -> None:
    sz, settings = ctx.sizes, fresh_topics(ctx.base)
    ensure_topics(settings, [settings.question_events_topic])
    # Batched like an upstream bulk producer: few, large record batches.
    producer = Producer(producer_config(settings, **{"linger.ms": 50, "queue.buffering.max.messages": 500_000}))
    bank = replay_bank()
    t0 = time.perf_counter()
    for i in range(sz.replay_events):
        q = bank[i % len(bank)]
        value = QuestionEvent(new_id(), QUESTION_UPSERTED, utc_now_iso(), question=q).to_json()
        while True:
            try:
                producer.produce(settings.question_events_topic, value, str(q["qid"]).encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    produce_s = time.perf_counter() - t0
    sampler = Sampler({"bench": os.getpid()} | ({"broker": ctx.broker_pid} if ctx.broker_pid else {}), ctx.pg_database)
    printed = io.StringIO()
    with profile.recording(ctx.profile_dir, "s4", {"bench": os.getpid()}), count_statements(ctx.engine) as count, \
            contextlib.redirect_stdout(printed):
        summary = run_replay(settings, ctx.engine, settings.question_events_topic, StartPoint(beginning=True),
                             group_id=f"{settings.consumer_group}-bench-replay", quiet=True)
    cpu = sampler.stop()
    rate = summary.reprocessed / summary.seconds if summary.seconds else float("nan")
    ctx.results["4_replay"] = {"events": sz.replay_events, "produce_seconds": round(produce_s, 2),
                               "replayed": summary.reprocessed, "seconds": round(summary.seconds, 2),
                               "events_per_s": round(rate, 1),
                               "statements_per_event": round(count[0] / max(1, summary.reprocessed), 2),
                               "cpu_seconds": {n: round(s, 1) for n, s in cpu.items()},
                               "replay_output": printed.getvalue().strip().splitlines()[-1:],
                               "machine_after": machine_load()}
    print(table("4. replay of question.upserted (unchanged content)", ["measurement", "value"], [
        ["events produced (batched, linger 50 ms) in s", round(produce_s, 2)],
        ["replayed", summary.reprocessed], ["replay seconds", round(summary.seconds, 2)],
        ["events/s", round(rate, 1)], ["statements per event", ctx.results["4_replay"]["statements_per_event"]],
        ["CPU s (bench process = replay)", ctx.results["4_replay"]["cpu_seconds"]]]))


# -- 5. memory under sustained load ------------------------------------------------


def soak(ctx: Ctx) -> None:
    """Load across 12 companies: their keys hash to different request
    partitions, so no single Tansu partition collects every record batch."""
    sz, settings = ctx.sizes, fresh_topics(ctx.base)
    keys = [api_key(c) for c in SOAK_COMPANIES]
    with services(settings, ctx.log_dir) as svc:
        url = svc["api"].url
        client.warm_up(url, keys, {}, need_ok=5)
        client.concurrent(url, keys, {}, max(100, sz.concurrent_requests // 10), sz.in_flight)
        sampler = Sampler(ctx.pids(svc), ctx.pg_database)
        run = client.concurrent(url, keys, {}, None, sz.in_flight, seconds=ctx.soak_seconds)
        sampler.stop()
    out: dict[str, Any] = {"seconds": ctx.soak_seconds, "load": stats(run.latencies, run.elapsed, run.errors)}
    for name in ("api", "consumer"):
        series = [r for _, r in sampler.rss[name]]
        start, mid, end = series[0], series[len(series) // 2], series[-1]
        out[name] = {"rss_start_mb": round(start / 2**20, 1), "rss_mid_mb": round(mid / 2**20, 1),
                     "rss_end_mb": round(end / 2**20, 1), "rss_peak_mb": round(max(series) / 2**20, 1),
                     "growth_pct": round(100 * (end - start) / start, 1)}
    # Throughput and p99 per tenth of the run: a stall or a slow-down shows here.
    t_start, window = min(run.done_at, default=0), ctx.soak_seconds / 10
    out["windows"] = []
    for w in range(10):
        lat = [lt for lt, at in zip(run.latencies, run.done_at, strict=True) if w * window <= at - t_start < (w + 1) * window]
        out["windows"].append({"req_per_s": round(len(lat) / window, 1), "p99_ms": stats(lat)["p99_ms"]})
    out["machine_after"] = machine_load()
    ctx.results.setdefault("5_memory", {})["soak"] = out
    print(table(f"5. memory: {ctx.soak_seconds:.0f} s at {sz.in_flight} in flight", ["process", "start MB", "mid MB",
                "end MB", "peak MB", "growth %"], [[n, *out[n].values()] for n in ("api", "consumer")]))
    print("load:", {k: out["load"][k] for k in ("n", "errors", "p50_ms", "p99_ms", "throughput_per_s")},
          "| req/s per window:", [w["req_per_s"] for w in out["windows"]])
