"""Servers, fresh topics and the real service processes the bench measures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, make_url, text

from assessment_refresh.local_servers import TansuBroker, embedded_postgres_url, free_port, tansu_binary
from shared.db import make_engine, migrate
from shared.settings import Settings


def postgres_server(server_url: str | None, pg_settings: str = "sized") -> str:
    """The PostgreSQL server the bench makes its databases on: the given one,
    else an embedded one in a temp dir (it stops when this process exits),
    sized for the machine or on PostgreSQL's defaults (``pg_settings``)."""
    if server_url:
        return server_url
    data_dir = Path(tempfile.mkdtemp(prefix="bench-pg-")) / "pgdata"
    return embedded_postgres_url(data_dir, delete_on_exit=True, role="bench" if pg_settings == "sized" else "defaults")


@contextmanager
def database(server_url: str | None) -> Iterator[str]:
    """A fresh `bench_<random>` database on the given server (else an embedded
    one), migrated, and dropped afterwards."""
    url = make_url(Settings(database_url=postgres_server(server_url)).with_driver().database_url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        bench_url = url.set(database=name).render_as_string(hide_password=False)
        engine = make_engine(bench_url)
        migrate(engine)
        engine.dispose()
        yield bench_url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


LOCAL_BROKERS = ("kafka", "tansu")  # what `--broker` can start; "external" is `--bootstrap`


@dataclass
class Broker:
    """The broker a run measures, and what the results record about it."""

    kind: str  # "kafka" (local Apache Kafka), "tansu" (local Tansu) or "external" (--bootstrap)
    profile: str  # the service's BROKER_PROFILE on it
    bootstrap_servers: str
    pid: int | None = None  # the broker process (the JVM for Kafka) when we started it, to sample its CPU
    name: str = "external broker"
    version: str | None = None
    start_seconds: float | None = None  # launch until its admin API lists the broker

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name

    def describe(self) -> dict[str, object]:
        started = "started by the bench" if self.kind in LOCAL_BROKERS else "external, not started by the bench"
        return {"kind": self.kind, "name": self.name, "version": self.version, "profile": self.profile,
                "bootstrap_servers": self.bootstrap_servers, "start_seconds": self.start_seconds,
                "sampled_pid": self.pid is not None, "how": started}


@contextmanager
def broker(kind: str, log_dir: Path, bootstrap: str | None = None, profile: str = "kafka") -> Iterator[Broker]:
    """The broker of one run: the external one at `bootstrap` (with `profile`),
    else a fresh local Apache Kafka (`kind` "kafka") or Tansu ("tansu"), stopped afterwards."""
    if kind == "external":
        if not bootstrap:
            raise ValueError("an external broker needs bootstrap servers")
        yield Broker("external", profile, bootstrap)
    elif kind == "kafka":
        yield from _apache_kafka(log_dir)
    elif kind == "tansu":
        yield from _tansu(log_dir)
    else:
        raise ValueError(f"broker must be one of {LOCAL_BROKERS} or 'external', not {kind!r}")


def _apache_kafka(log_dir: Path) -> Iterator[Broker]:
    from assessment_refresh.apache_kafka import ApacheKafka

    kafka = ApacheKafka(progress=lambda line: print(f"bench: {line}", flush=True))
    try:
        kafka.start()
        node = kafka.nodes[0]
        yield Broker("kafka", "kafka", kafka.bootstrap_servers, node.pid, "Apache Kafka", kafka.version,
                     round(kafka.start_seconds or float("nan"), 2))
    finally:
        kafka.stop()
        for node in kafka.nodes:  # its data directory goes with remove(); its log stays with the others
            if node.log_file.exists():
                shutil.copyfile(node.log_file, log_dir / f"kafka-node-{node.node_id}.log")
        kafka.remove()


def _tansu(log_dir: Path) -> Iterator[Broker]:
    started = time.monotonic()
    with TansuBroker(log_file=log_dir / "tansu.log") as tansu:
        _wait_listed(tansu.bootstrap_servers)
        start_seconds = round(time.monotonic() - started, 2)
        procs = [p for p in psutil.Process().children() if "tansu" in p.name()]
        yield Broker("tansu", "tansu", tansu.bootstrap_servers, procs[0].pid if procs else None, "Tansu",
                     tansu_version(), start_seconds)


def _wait_listed(bootstrap: str, timeout: float = 30.0) -> None:
    """Until the broker's admin API lists it: ApacheKafka.start's ready point, for a like start time."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if admin.list_topics(timeout=1).brokers:
                return
        except Exception:  # noqa: BLE001 - not answering yet
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the broker at {bootstrap} did not answer in {timeout} s")


def tansu_version() -> str | None:
    """The version the Tansu binary reports (`tansu --version` prints "tansu 0.6.0")."""
    try:
        out = subprocess.run([tansu_binary(), "--version"], capture_output=True,
                             text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[-1] if out else None


def fresh_topics(base: Settings) -> Settings:
    """Unique topic and group names, so no scenario reads another's records
    (and on Tansu, which cannot delete topics, because its fetches slow down as
    a partition's batch count grows: docs/design.md#test-infrastructure)."""
    tag = f"b{uuid.uuid4().hex[:8]}"
    return replace(
        base,
        request_topic=f"{tag}.assessment.refresh.requests",
        reply_topic=f"{tag}.assessment.refresh.replies",
        question_events_topic=f"{tag}.question.events",
        refresh_events_topic=f"{tag}.assessment.refresh.events",
        work_topic=f"{tag}.assessment.refresh.work",
        consumer_group=f"{tag}-assessment-refresh",
    )


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(name: str, argv: list[str], settings: Settings, log_dir: Path) -> Service:
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    env = {**os.environ, **settings.to_env()}
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
    return Service(name, process, log_path)


def start_consumer(settings: Settings, log_dir: Path) -> Service:
    return spawn("consumer", ["-m", "assessment_refresh.cli", "consumer"], settings, log_dir)


def start_api(settings: Settings, log_dir: Path) -> Service:
    port = free_port()
    settings = replace(settings, api_host="127.0.0.1", api_port=port)
    api = spawn("api", ["-m", "assessment_refresh.cli", "api"], settings, log_dir)
    api.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"api exited early, see {api.log_path}")
        try:
            if httpx.get(api.url + "/readyz", timeout=1).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    api.stop()
    raise TimeoutError(f"api not ready after 30 s, see {api.log_path}")


@contextmanager
def services(settings: Settings, log_dir: Path, *, api: bool = True) -> Iterator[dict[str, Service]]:
    running: dict[str, Service] = {}
    try:
        running["consumer"] = start_consumer(settings, log_dir)
        if api:
            running["api"] = start_api(settings, log_dir)
        yield running
    finally:
        for service in running.values():
            service.stop()


@dataclass
class Sampler:
    """RSS of some processes every `interval` s, and their CPU time, in a thread.

    CPU seconds per process show where a 2-core machine's time goes (client,
    API, consumer, broker) without a profiler's overhead."""

    pids: dict[str, int]
    pg_database: str | None = None  # also sum the CPU of this database's PostgreSQL backends
    interval: float = 0.2
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._procs = {n: psutil.Process(p) for n, p in self.pids.items()}
        self.rss = {n: [] for n in self.pids}
        self._cpu0 = self.cpu()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, proc in self._procs.items():
            try:
                t = proc.cpu_times()
                out[name] = t.user + t.system
            except psutil.Error:
                out[name] = float("nan")
        if self.pg_database:
            out["postgres"] = _backend_cpu(self.pg_database)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name, proc in self._procs.items():
                try:
                    self.rss[name].append((now, proc.memory_info().rss))
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        """CPU seconds used by each process since the sampler started."""
        self._stop.set()
        self._thread.join()
        end = self.cpu()
        return {n: end[n] - self._cpu0[n] for n in end}

    def peak_mb(self, name: str) -> float:
        return max(r for _, r in self.rss[name]) / 2**20 if self.rss[name] else float("nan")


def _backend_cpu(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `database` (their process
    titles name it). Approximate: a backend that exits in between drops out;
    the pools of the API and consumer keep theirs for the whole run."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] == "postgres" and database in " ".join(proc.info["cmdline"] or ()):
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def machine_load() -> dict[str, object]:
    """The shared machine's state: other engineers' tests run here too."""
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "cpu_percent": psutil.cpu_percent(interval=0.5)}
