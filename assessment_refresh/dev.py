"""`assessment-refresh dev`: the whole service on this machine, with nothing installed.

Starts an embedded PostgreSQL (data kept in --data-dir) and a Tansu broker,
migrates, loads the demo world, runs one consumer and one API process, prints
a curl command, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import Engine, text

from assessment_refresh.local_servers import TansuBroker, embedded_postgres_url, free_port
from consumer.loader import load_world, read_world
from consumer.topics import service_topics
from shared.db import make_engine, migrate
from shared.kafka import ensure_topics
from shared.settings import Settings

DEMO_FILES = [Path(__file__).parent / "demo.json", Path(__file__).parent / "demo-bank-update.json"]
DEMO_KEY = "acme-demo-key"


# Tansu scans a partition's record batches on every fetch: with a 10 ms fetch
# wait a reader at the tail of a partition holding ~40,000 single-record
# batches gets empty fetches for good (measured: nothing within 10 s), which a
# long-running demo reaches (every request of a company is one batch in one
# partition, and Tansu ignores retention). A 100 ms wait keeps it reading:
# 64 ms per fetch at 20,000 batches, 76 ms at 40,000, 92 ms at 60,000. Fresh
# topics (tests, the benchmark) keep the 10 ms default and its latency.
DEV_FETCH_WAIT_MS = 100


def run_dev(data_dir: Path, api_port: int, kafka_port: int) -> int:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"[dev] PostgreSQL (embedded) in {data_dir / 'pgdata'}", flush=True)
    database_url = embedded_postgres_url(data_dir / "pgdata")
    broker = TansuBroker(port=kafka_port or free_port(), log_file=data_dir / "tansu.log").start()
    print(f"[dev] Tansu broker on {broker.bootstrap_servers} (memory storage)", flush=True)
    children: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings.from_env(
            database_url=database_url,
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_fetch_wait_max_ms=int(os.environ.get("KAFKA_FETCH_WAIT_MAX_MS", DEV_FETCH_WAIT_MS)),
            # A person reads these logs; and the demo's consumer needs no metrics port.
            log_format=os.environ.get("LOG_FORMAT", "text"),
            consumer_metrics_port=int(os.environ.get("CONSUMER_METRICS_PORT", 0)),
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
            children.append(subprocess.Popen([sys.executable, "-m", "assessment_refresh.cli", command], env=env))
        url = f"http://127.0.0.1:{api_port}"
        _wait_ready(url, children)
        print(_banner(url), flush=True)
        return _wait_for_stop(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        broker.stop()
        print("[dev] stopped API, consumer and broker; PostgreSQL stops as this process exits", flush=True)


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


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            raise SystemExit("[dev] a service process exited during start-up; see its output above")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"[dev] the API was not ready after {timeout} s")


def _banner(url: str) -> str:
    return f"""
[dev] ready. Refresh the demo company's assessments:

  curl -s -X POST {url}/assessments/refresh-assessments \\
       -H 'apiKey: {DEMO_KEY}' -H 'Content-Type: application/json' \\
       -d '{{"assessment_ids": [11, 12]}}'

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
