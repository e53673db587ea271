"""Shared machinery of the fault-injection suite: REST load from a thread pool,
a fleet of consumer processes to kill and restart, question events gated on
the load's progress, and the read-backs every fault test checks (stored
results, replacements, refresh events, dead letters, a reference database).

Everything here talks to the real service the way a client, an operator or a
downstream reader would: HTTP, Kafka records and the PostgreSQL tables.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer
from sqlalchemy import Engine, make_url, text

from consumer.dead_letters import dlq_topic
from shared.db import make_engine, migrate
from shared.messages import QuestionEvent
from shared.settings import Settings
from tests.infra import fresh_database
from tests.kafka_tools import json_values, read_topic
from tests.processes import ServiceProcess, start_consumer
from tests.waiting import eventually

PATH = "/assessments/refresh-assessments"


def company_key(company: int) -> str:
    return f"faults-key-of-company-{company}-0123456789"


# -- REST load ------------------------------------------------------------------


@dataclass
class Call:
    """One REST call: what is sent, what is expected, what came back."""

    n: int
    company: int
    ids: list[int] | None  # None: the body is {} (every assessment of the company)
    expected: int  # 200 or 403, when the call is answered by the consumer
    api: int = 0
    status: int | None = None  # None: no HTTP answer at all (connection error, client timeout)
    body: Any = None
    request_id: str | None = None
    waited: float = 0.0
    started: float = 0.0  # monotonic
    error: str | None = None

    def payload(self) -> dict[str, Any]:
        return {} if self.ids is None else {"assessment_ids": self.ids}


class Progress:
    """How many calls have finished; threads can wait for a threshold."""

    def __init__(self) -> None:
        self._n = 0
        self._cond = threading.Condition()
        self.finished = False

    @property
    def value(self) -> int:
        return self._n

    def tick(self) -> None:
        with self._cond:
            self._n += 1
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self.finished = True
            self._cond.notify_all()

    def wait_for(self, n: int) -> bool:
        """Until ``n`` calls finished (True) or the load ended before that (False)."""
        with self._cond:
            while self._n < n and not self.finished:
                self._cond.wait(0.5)
            return self._n >= n


def run_calls(
    urls: Sequence[str] | Callable[[Call], str],
    calls: Iterable[Call],
    *,
    workers: int,
    client_timeout: float,
    progress: Progress | None = None,
    pause_after: dict[int, float] | None = None,
) -> None:
    """Run every call from a pool of ``workers`` threads, each with its own HTTP
    client; record status, body, request id and the caller's wait. ``calls``
    may be a generator that goes on until the test stops it: each caller takes
    the next call when it is free.

    ``urls`` is either the API base URLs (call n goes to ``urls[call.api]``) or a
    function choosing one per call. ``pause_after`` maps a status to a pause
    the caller takes after such an answer (to avoid spinning on fast 503s).
    """
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        c = getattr(local, "client", None)
        if c is None:
            # Idle connections are dropped after 2 s, before uvicorn closes them
            # (5 s): reusing one the server is closing would fail the call
            # with "Server disconnected", a client-side race, not the service's.
            c = httpx.Client(timeout=client_timeout, limits=httpx.Limits(keepalive_expiry=2.0))
            local.client = c
            with lock:
                clients.append(c)
        return c

    def one(call: Call) -> None:
        base = urls(call) if callable(urls) else urls[call.api]
        call.started = time.monotonic()
        try:
            r = client().post(base + PATH, json=call.payload(), headers={"apiKey": company_key(call.company)})
            call.status = r.status_code
            try:
                call.body = r.json()
            except ValueError:
                call.body = r.text
            call.request_id = r.headers.get("x-request-id") or (
                call.body.get("request_id") if isinstance(call.body, dict) else None
            )
        except httpx.HTTPError as exc:
            call.error = f"{type(exc).__name__}: {exc}"
        finally:
            call.waited = time.monotonic() - call.started
            if progress is not None:
                progress.tick()
        if pause_after and call.status in pause_after:
            time.sleep(pause_after[call.status])

    source = iter(calls)
    source_lock = threading.Lock()

    def worker() -> None:
        while True:
            with source_lock:
                call = next(source, None)
            if call is None:
                return
            one(call)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(worker) for _ in range(workers)]:
                future.result()
    finally:
        if progress is not None:
            progress.finish()
        for c in clients:
            c.close()


def follow_location(base: str, call: Call, *, bound: float, interval: float = 0.5) -> tuple[int | None, Any]:
    """What a 504's Location answers once it stops answering 202 (pending),
    as its caller would poll it: (status, body); (202, ...) if still pending
    after ``bound`` s, (None, error) if it has no Location."""
    location = call.body.get("location") if isinstance(call.body, dict) else None
    if not location:
        return None, f"no location in {call.body!r}"
    deadline = time.monotonic() + bound
    with httpx.Client(timeout=10.0) as client:
        while True:
            r = client.get(base + location, headers={"apiKey": company_key(call.company)})
            if r.status_code != 202 or time.monotonic() >= deadline:
                return r.status_code, r.json()
            time.sleep(interval)


def statuses(calls: Sequence[Call]) -> dict[Any, int]:
    counts: dict[Any, int] = defaultdict(int)
    for c in calls:
        counts[c.status] += 1
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def max_wait(calls: Sequence[Call]) -> float:
    return max((c.waited for c in calls), default=0.0)


# -- consumer processes -----------------------------------------------------------


class Fleet:
    """Named consumer slots; each slot runs one process at a time, and every
    process ever started is kept (for its log and exit code)."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.current: dict[str, ServiceProcess] = {}
        self.history: list[ServiceProcess] = []
        self._generation = 0

    def start(self, slot: str, env: dict[str, str] | None = None) -> ServiceProcess:
        self._generation += 1
        process = start_consumer(self.settings, self.log_dir, name=f"{slot}.{self._generation}", env=env)
        self.current[slot] = process
        self.history.append(process)
        return process

    def kill(self, slot: str) -> None:
        self.current[slot].kill()

    def terminate(self, slot: str, bound: float = 15.0) -> tuple[int | None, float]:
        """SIGTERM and wait up to ``bound`` s: (exit code or None if still running, seconds)."""
        process = self.current.pop(slot)
        t0 = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        try:
            process.process.wait(bound)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - t0
        return process.process.returncode, time.monotonic() - t0

    def exited(self) -> list[str]:
        return [slot for slot, p in self.current.items() if p.process.poll() is not None]

    def stop_all(self) -> None:
        for process in self.history:
            process.stop()
        self.current.clear()

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"----- {p.name} (rc={p.process.poll()}) -----\n{p.log()[-tail:]}" for p in self.history)


@contextmanager
def logs_on_failure(*sources: Callable[[], str]) -> Iterator[None]:
    """Print the processes' logs when the block fails (pytest shows them)."""
    try:
        yield
    except BaseException:
        for source in sources:
            try:
                print(source())
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                print(f"(log unavailable: {exc})")
        raise


def process_logs(processes: Sequence[ServiceProcess], tail: int = 3000) -> Callable[[], str]:
    return lambda: "\n".join(f"----- {p.name} (rc={p.process.poll()}) -----\n{p.log()[-tail:]}" for p in processes)


# -- question events ----------------------------------------------------------------


class EventFeed(threading.Thread):
    """Publishes question events, event k once ``gate(k)`` returns (e.g. once the
    REST load reached some progress), with one producer like an upstream bank."""

    def __init__(self, bootstrap: str, topic: str, events: Sequence[QuestionEvent], gate: Callable[[int], object]) -> None:
        super().__init__(name="event-feed", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.events = list(events)
        self.gate = gate
        self.published: list[QuestionEvent] = []
        self.undelivered = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 1, "acks": "all",
                             "enable.idempotence": True})

        def delivered(err: object, _msg: object) -> None:
            if err is not None:
                self.undelivered += 1

        try:
            for k, event in enumerate(self.events):
                self.gate(k)
                key = str(event.qid if event.qid is not None else (event.question or {}).get("qid")).encode()
                producer.produce(self.topic, event.to_json(), key, on_delivery=delivered)
                producer.poll(0)
                self.published.append(event)
            self.undelivered += producer.flush(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# -- read-backs: the inbox, replacements, Kafka topics ------------------------------------


@dataclass(frozen=True)
class Stored:
    message_id: str
    kind: str
    status: int
    reply: Any
    events: list[dict[str, Any]]


def stored_results(engine: Engine, kind: str | None = None) -> dict[str, Stored]:
    sql = "SELECT message_id, kind, status, reply, events FROM processed_messages"
    with engine.connect() as conn:
        rows = conn.execute(text(sql + (" WHERE kind = :kind" if kind else "")), {"kind": kind}).all()
    # Each deletion's refresh.completed summary aside: the checks below are per assessment.
    return {r.message_id: Stored(r.message_id, r.kind, r.status, r.reply, assessment_events(r.events)) for r in rows}


def assessment_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "assessment.refreshed"]


def stored_count(engine: Engine, kind: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM processed_messages WHERE kind = :k"), {"k": kind}).scalar_one()


def wait_for_backlog(engine: Engine, expected: dict[str, int], timeout: float = 60.0) -> dict[str, int]:
    """Wait until at least ``expected[kind]`` results of each kind are stored;
    return what is stored then (the caller asserts, after printing its figures)."""
    def done() -> bool:
        return all(stored_count(engine, kind) >= n for kind, n in expected.items())

    try:
        eventually(done, timeout=timeout, interval=0.25, what=f"stored results {expected}")
    except AssertionError:
        pass
    return {kind: stored_count(engine, kind) for kind in expected}


def backlog_done(have: dict[str, int], expected: dict[str, int]) -> bool:
    return all(have[k] >= n for k, n in expected.items())


Replacements = dict[tuple[int, int], list[tuple[str, int]]]


def stored_replacements(results: dict[str, Stored]) -> Replacements:
    """(oid, old_qid) -> [(message id, new_qid)], over every stored result: the
    replies of REST refreshes and the result events of question deletions (one
    stored result is one applied effect, however often it was re-sent)."""
    ledger: Replacements = defaultdict(list)
    for row in results.values():
        if row.kind == "refresh.request" and row.status == 200:
            details = row.reply["details"]
        elif row.kind == "question.deleted":
            details = [e["detail"] for e in row.events]
        else:
            continue
        for detail in details:
            for r in detail["replacements"]:
                ledger[(detail["oid"], r["old_qid"])].append((row.message_id, r["new_qid"]))
    return dict(ledger)


def replaced_more_than_once(ledger: Replacements) -> dict[tuple[int, int], list[tuple[str, int]]]:
    return {k: v for k, v in ledger.items() if len(v) > 1 or len({new for _, new in v}) > 1}


def trigger_id(event: dict[str, Any]) -> str:
    trigger = event["trigger"]
    return trigger.get("request_id") or trigger.get("event_id")


def published_refresh_events(settings: Settings, at_least: int, timeout: float = 45.0) -> list[dict[str, Any]]:
    return assessment_events(json_values(read_topic(settings.kafka_bootstrap_servers, settings.refresh_events_topic,
                                                    at_least=at_least, timeout=timeout, idle=1.5)))


def check_refresh_events(events: list[dict[str, Any]], results: dict[str, Stored]) -> tuple[int, list[str]]:
    """Compare ``assessment.refresh.events`` with the stored results.

    Returns (re-published copies, problems): copies of the same (trigger, oid)
    are allowed by at-least-once delivery, and counted; problems are stored
    events never published, events with no stored result, and an (oid,
    old_qid) replaced by two triggers or to two different questions."""
    problems: list[str] = []
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    copies = 0
    for e in events:
        key = (trigger_id(e), e["oid"])
        if key in seen:
            copies += 1
            if seen[key]["detail"] != e["detail"]:
                problems.append(f"two different results published for {key}")
        seen[key] = e
    stored_keys = {(trigger_id(e), e["oid"]) for row in results.values() for e in row.events}
    missing = stored_keys - set(seen)
    if missing:
        problems.append(f"{len(missing)} stored result events never published, e.g. {sorted(missing)[:3]}")
    unknown = set(seen) - stored_keys
    if unknown:
        problems.append(f"{len(unknown)} published events without a stored result, e.g. {sorted(unknown)[:3]}")
    by_slot: dict[tuple[int, int], set[tuple[str, int]]] = defaultdict(set)
    for (tid, oid), e in seen.items():
        for r in e["detail"]["replacements"]:
            by_slot[(oid, r["old_qid"])].add((tid, r["new_qid"]))
    twice = {k: v for k, v in by_slot.items() if len(v) > 1}
    if twice:
        problems.append(f"{len(twice)} questions replaced more than once in published events, e.g. {list(twice.items())[:3]}")
    return copies, problems


def dead_letters(settings: Settings) -> int:
    return sum(
        len(read_topic(settings.kafka_bootstrap_servers, dlq_topic(topic), timeout=10, idle=0.5))
        for topic in (settings.request_topic, settings.question_events_topic)
    )


def replies_on_topic(settings: Settings, at_least: int) -> dict[str, int]:
    """How often each request id was answered on the reply topic."""
    counts: dict[str, int] = defaultdict(int)
    for record in read_topic(settings.kafka_bootstrap_servers, settings.reply_topic, at_least=at_least, timeout=45):
        counts[json.loads(record.value or b"{}").get("request_id")] += 1
    return dict(counts)


# -- the database state -----------------------------------------------------------------

SlotRow = tuple[int, int, int, int, int]  # oid, section_idx, question_idx, qid, snapshot_version


def slot_rows(engine: Engine) -> list[SlotRow]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT oid, section_idx, question_idx, qid, snapshot_version FROM assessment_slots "
            "ORDER BY oid, section_idx, question_idx")).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def deleted_flags(engine: Engine) -> dict[int, bool]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT qid, deleted FROM questions")).all())  # type: ignore[arg-type]


def duplicate_qids(engine: Engine) -> list[tuple[int, int, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(  # type: ignore[misc]
            "SELECT oid, qid, count(*) FROM assessment_slots GROUP BY oid, qid HAVING count(*) > 1"))]


def stale_or_mismatched_snapshots(engine: Engine) -> list[tuple[Any, ...]]:
    """Slots whose snapshot is not the bank's current data of the slot's question
    (an overwritten, lost update leaves one)."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT s.oid, s.section_idx, s.question_idx, s.qid, s.snapshot_version, q.version "
            "FROM assessment_slots s JOIN questions q ON q.qid = s.qid "
            "WHERE NOT q.deleted AND (s.snapshot_version <> q.version OR s.snapshot <> q.content)"))]


def differences(actual: list[Any], expected: list[Any], limit: int = 5) -> str:
    a, e = set(actual), set(expected)
    return f"only in actual: {sorted(a - e)[:limit]}; only in expected: {sorted(e - a)[:limit]}"


@contextmanager
def reference_database(database_url: str) -> Iterator[Engine]:
    """A second, fresh and migrated database on the same server as ``database_url``."""
    server = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    with fresh_database(server) as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


@dataclass
class Figures:
    """The one summary line each test prints."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def line(self) -> str:
        parts = [f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in self.values.items()]
        return f"FAULTS {self.name}: " + " ".join(parts)

    def show(self) -> None:
        print("\n" + self.line(), flush=True)


class LockWatcher(threading.Thread):
    """Samples pg_stat_activity of the test database every few milliseconds: how
    often a transaction was seen waiting for a lock another one held (evidence
    that the refreshes really overlapped)."""

    def __init__(self, engine: Engine, interval: float = 0.005) -> None:
        super().__init__(name="lock-watcher", daemon=True)
        self.engine = engine
        self.interval = interval
        self.samples = 0
        self.waiting_samples = 0
        self.max_waiting = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        sql = text("SELECT count(*) FROM pg_stat_activity "
                   "WHERE datname = current_database() AND wait_event_type = 'Lock'")
        try:
            with self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                while not self._stop_event.is_set():
                    waiting = conn.execute(sql).scalar_one()
                    self.samples += 1
                    if waiting:
                        self.waiting_samples += 1
                        self.max_waiting = max(self.max_waiting, waiting)
                    self._stop_event.wait(self.interval)
        except Exception:  # noqa: BLE001 - evidence only; a database outage ends it
            return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def hold_assessment_locks(engine: Engine, oids: Sequence[int], seconds: float) -> threading.Thread:
    """A slow transaction: lock these assessments (in oid order, as the service
    does) for ``seconds``; returns once the locks are held. Refreshes that need
    them queue up behind it and then run at the same time."""
    held = threading.Event()

    def hold() -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT oid FROM assessments WHERE oid = ANY(:oids) ORDER BY oid FOR UPDATE"),
                         {"oids": list(oids)}).all()
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold, name="lock-holder", daemon=True)
    thread.start()
    if not held.wait(10):
        raise AssertionError("could not lock the assessments")
    return thread


def locate_requests(settings: Settings, request_ids: set[str]) -> dict[str, tuple[int, int]]:
    """Where these requests sit in the request topic: id -> (partition, offset)."""
    found = {}
    for record in read_topic(settings.kafka_bootstrap_servers, settings.request_topic, timeout=20, idle=1.0):
        rid = record.headers.get("correlation_id")
        if rid in request_ids:
            found[rid] = (record.partition, record.offset)
    return found


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The live group's committed offset per partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": settings.consumer_group,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def _describe_group(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    future = admin.describe_consumer_groups([settings.consumer_group], request_timeout=5)[settings.consumer_group]
    return future.result()


def group_state(settings: Settings) -> str:
    """The live group's state as the broker reports it (STABLE, or not)."""
    return str(_describe_group(settings).state).rsplit(".", 1)[-1]


def group_member_count(settings: Settings) -> int:
    """How many members the broker counts in the live group."""
    return len(_describe_group(settings).members)


def wait_group_change(settings: Settings, members_before: int, timeout: float = 45.0) -> float:
    """After a member was started: wait until the broker has seen its join,
    that is the group counts more members than before, or is rebalancing;
    returns the seconds waited. (The state alone is no evidence: with the
    consumer protocol a join can leave STABLE for less time than one describe
    takes, and a process started on a loaded machine takes seconds to join.)"""
    t0 = time.monotonic()

    def joined() -> bool:
        described = _describe_group(settings)
        return len(described.members) > members_before or str(described.state).rsplit(".", 1)[-1] != "STABLE"

    eventually(joined, timeout=timeout, interval=0.05, what="the group to see the new member join")
    return time.monotonic() - t0


def wait_group_stable(settings: Settings, timeout: float = 30.0, hold: float = 0.5) -> float:
    """Wait until the group is STABLE and stays so for ``hold`` s; returns the seconds waited."""
    t0 = time.monotonic()
    stable_since: list[float] = []

    def settled() -> bool:
        if group_state(settings) != "STABLE":
            stable_since.clear()
            return False
        if not stable_since:
            stable_since.append(time.monotonic())
        return time.monotonic() - stable_since[0] >= hold

    eventually(settled, timeout=timeout, interval=0.05, what="the group to settle")
    return time.monotonic() - t0


# -- a Kafka of the test's own (assessment_refresh.apache_kafka) --------------------------


def skip_without_apache_kafka() -> None:
    """Skip (with the reason) where the local Apache Kafka cannot run: no java or mvn."""
    import pytest

    from assessment_refresh.apache_kafka import missing_tools

    missing = missing_tools()
    if missing:
        pytest.skip(f"this test starts its own Apache Kafka, which needs {' and '.join(missing)} (not found)")


def quiet_admin(bootstrap: str) -> Any:
    """An admin client that does not log librdkafka's complaints about a dead node
    (keep it referenced until its futures are done)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def partition_leaders(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader node id, replicas, in-sync replicas), from the brokers' metadata."""
    admin = quiet_admin(bootstrap)
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    if metadata.error is not None:
        raise AssertionError(f"no metadata for {topic}: {metadata.error}")
    return {p: (m.leader, list(m.replicas), list(m.isrs)) for p, m in sorted(metadata.partitions.items())}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> high watermark (how many records each partition holds)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watermarks-{time.monotonic_ns()}", "log_level": 0})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(partitions)}
    finally:
        consumer.close()


def topic_ids(bootstrap: str, topics: Sequence[str]) -> dict[str, str]:
    """topic -> its topic id (a topic deleted and created again gets a new one)."""
    from confluent_kafka import TopicCollection

    admin = quiet_admin(bootstrap)  # kept until the futures are done: a collected client cancels them
    futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=10)
    return {topic: str(future.result().topic_id) for topic, future in futures.items()}


def answered_gaps(calls: Sequence[Call], since: float, until: float) -> float:
    """The longest stretch in [since, until] (monotonic) in which no call got an answer."""
    ends = sorted(c.started + c.waited for c in calls if c.status is not None and since <= c.started + c.waited <= until)
    points = [since, *ends, until]
    return max((b - a for a, b in zip(points, points[1:], strict=False)), default=until - since)
