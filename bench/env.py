"""Servers, fresh topics and the real service processes the bench measures."""

from __future__ import annotations

import os
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

from assessment_refresh.local_servers import TansuBroker, embedded_postgres_url, free_port
from shared.db import make_engine, migrate
from shared.settings import Settings


@contextmanager
def database(server_url: str | None) -> Iterator[str]:
    """A fresh `bench_<random>` database on the given server (else an embedded
    one), migrated, and dropped afterwards."""
    if not server_url:
        data_dir = Path(tempfile.mkdtemp(prefix="bench-pg-")) / "pgdata"
        server_url = embedded_postgres_url(data_dir, delete_on_exit=True)
    url = make_url(Settings(database_url=server_url).with_driver().database_url)
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


@contextmanager
def broker(bootstrap: str | None) -> Iterator[tuple[str, int | None]]:
    """(bootstrap servers, broker pid when we started it, to sample its CPU)."""
    if bootstrap:
        yield bootstrap, None
        return
    log_file = Path(tempfile.gettempdir()) / f"bench-tansu-{os.getpid()}.log"
    with TansuBroker(log_file=log_file) as tansu:
        pids = [p.pid for p in psutil.Process().children() if "tansu" in p.name()]
        yield tansu.bootstrap_servers, (pids[0] if pids else None)


def fresh_topics(base: Settings) -> Settings:
    """Unique topic and group names: Tansu cannot delete topics and its fetches
    slow down as a partition's batch count grows (DESIGN.md section 7)."""
    tag = f"b{uuid.uuid4().hex[:8]}"
    return replace(
        base,
        request_topic=f"{tag}.assessment.refresh.requests",
        reply_topic=f"{tag}.assessment.refresh.replies",
        question_events_topic=f"{tag}.question.events",
        refresh_events_topic=f"{tag}.assessment.refresh.events",
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
