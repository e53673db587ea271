"""The broker killed while the API serves, then started again on the same port.

The test's own Tansu broker is memory-only: the broker that comes back has no
topics, no group and no committed offsets, so recovering means recreating the
topics as well as reconnecting (docs/design.md#test-infrastructure): the Tansu profile's
workarounds, proven here whatever broker the session runs on.
(test_kafka_restart.py is the same outage on Apache Kafka, whose log survives.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine

from tests.conftest import unique_settings
from tests.faults.harness import (
    Call,
    Figures,
    Fleet,
    company_key,
    logs_on_failure,
    max_wait,
    process_logs,
    run_calls,
    statuses,
)
from tests.infra import StoppableTansu
from tests.processes import ServiceProcess, start_api
from tests.worlds import load, question

pytestmark = pytest.mark.faults

COMPANIES = 2
ASSESSMENTS = 8  # oids 6000..6007, company 1 + j % 2
OUTAGE_CALLS = 20  # per wave, all at once
ANSWER_BOUND_S = 3.0  # every call during the outage is answered 503 within this
THREAD_SLACK = 8  # noise: anyio workers for the key lookups come and go; a pile-up grows with the 40 calls
RECOVERY_BOUND_S = 60.0
AFTER_CALLS = 12
REPLY_TIMEOUT_S = 10.0  # a request lost on the restart costs a poll this much, not 20 s
PY = ("mcq", "python", "medium")


def world() -> dict[str, Any]:
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [company_key(c)]} for c in range(1, COMPANIES + 1)],
        "questions": [question(6100 + q, PY) for q in range(12)],
        "assessments": [
            {"oid": 6000 + j, "company_id": 1 + j % COMPANIES, "name": f"Broker {j}",
             "sections": [{"name": "S", "qids": [6100 + j % 12, 6100 + (j + 5) % 12]}]}
            for j in range(ASSESSMENTS)
        ],
    }


def make_calls(first: int, count: int) -> list[Call]:
    calls = []
    for n in range(first, first + count):
        company = 1 + n % COMPANIES
        oids = [6000 + j for j in range(ASSESSMENTS) if 1 + j % COMPANIES == company]
        calls.append(Call(n, company, [oids[n % len(oids)]], 200))
    return calls


def burst(api: ServiceProcess, calls: list[Call], client_timeout: float) -> list[Call]:
    """All the calls at once, one caller each."""
    run_calls([api.url], calls, workers=len(calls), client_timeout=client_timeout)
    return calls


def thread_kinds(pid: int) -> dict[str, int]:
    """The process's threads by name (librdkafka names its own: rdk:main, rdk:broker...)."""
    names: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[(task / "comm").read_text().strip()] += 1
        except OSError:
            continue
    return dict(sorted(names.items()))


class ThreadSampler(threading.Thread):
    """The API process's thread count, sampled every 50 ms: its peak while running."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="thread-sampler", daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, self.process.num_threads())
            except psutil.Error:
                return
            self._stop_event.wait(0.05)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(5)
        return self.peak


def test_a_broker_outage_answers_503_fast_and_the_service_recovers_without_restart(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """One API process and one consumer on a broker of the test's own. After
    20 concurrent calls answered 200, the broker is SIGKILLed; two waves of
    20 concurrent calls (at once, and once the clients are in reconnect
    back-off) each get 503 within 3 s, none hangs, and the API's thread count
    does not grow with the calls. The broker is started again on the same
    port, empty: without restarting any process, calls answer 200 again
    within 60 s, and then 12 concurrent calls all answer 200."""
    load(engine, world())
    broker = StoppableTansu(log_file=tmp_path / "tansu.log")  # its port is chosen now, started below
    settings = unique_settings(
        database_url, broker.bootstrap_servers, reply_timeout_s=REPLY_TIMEOUT_S, broker_profile="tansu"
    )
    fleet = Fleet(settings, tmp_path)
    apis: list[ServiceProcess] = []
    figures = Figures("broker-down")
    client_timeout = REPLY_TIMEOUT_S + 10
    broker_log = lambda: "----- tansu -----\n" + (tmp_path / "tansu.log").read_text(errors="replace")[-3000:]  # noqa: E731
    with logs_on_failure(fleet.logs, process_logs(apis), broker_log):
        try:
            broker.start()
            consumer = fleet.start("c0")
            api = start_api(settings, tmp_path)
            apis.append(api)
            pids = (api.process.pid, consumer.process.pid)

            # The group's first join takes a few seconds: wait for the first answer.
            t0 = time.monotonic()
            first = poll_until_ok(api, start=0, bound=45.0, client_timeout=client_timeout)
            assert first.status == 200, f"the service never answered before the outage: {first}"
            warm_up = burst(api, make_calls(100, OUTAGE_CALLS), client_timeout)
            before = [first, *warm_up]
            assert all(c.status == 200 for c in before), statuses(before)
            time.sleep(0.5)
            threads_before = psutil.Process(api.process.pid).num_threads()
            kinds_before = thread_kinds(api.process.pid)
            figures["served_s"] = time.monotonic() - t0

            # -- the outage ----------------------------------------------------------
            sampler = ThreadSampler(api.process.pid)
            sampler.start()
            broker.kill()
            down_at = time.monotonic()
            wave1 = burst(api, make_calls(200, OUTAGE_CALLS), client_timeout)
            time.sleep(max(0.0, down_at + 6.0 - time.monotonic()))  # clients now in reconnect back-off
            wave2 = burst(api, make_calls(300, OUTAGE_CALLS), client_timeout)
            outage = [*wave1, *wave2]
            time.sleep(1.0)
            threads_after = psutil.Process(api.process.pid).num_threads()
            kinds_after = thread_kinds(api.process.pid)
            threads_peak = sampler.stop()
            outage_s = time.monotonic() - down_at

            # -- the broker returns, empty -----------------------------------------------
            broker.start()
            up_at = time.monotonic()
            ok = poll_until_ok(api, start=400, bound=RECOVERY_BOUND_S, client_timeout=client_timeout)
            recovery_s = time.monotonic() - up_at
            after = burst(api, make_calls(1000, AFTER_CALLS), client_timeout)
            alive = [p.name for p in (api, consumer) if p.process.poll() is None]
        finally:
            for a in apis:
                a.stop()
            fleet.stop_all()
            broker.stop()

        figures.values.update(
            before=statuses(before), outage_s=outage_s, requests_during_outage=len(outage),
            during_outage=statuses(outage), max_wait_s=max_wait(outage), wave1_max_s=max_wait(wave1),
            wave2_max_s=max_wait(wave2), threads_before=threads_before, threads_peak=threads_peak,
            threads_after=threads_after, recovery_s=recovery_s, recovery_polls=ok.n - 400 + 1,
            after=statuses(after), after_max_wait_s=max_wait(after),
        )
        figures.show()
        no_answer = [c for c in outage if c.status is None]
        assert not no_answer, f"callers without an answer during the outage: {[(c.waited, c.error) for c in no_answer[:3]]}"
        assert all(c.status == 503 for c in outage), f"during the outage: {[(c.status, c.body) for c in outage if c.status != 503][:5]}"
        assert all(isinstance(c.body, dict) and "error" in c.body for c in outage), outage[0].body
        assert max_wait(outage) <= ANSWER_BOUND_S, f"a caller waited {max_wait(outage):.2f} s for its 503"
        piled = f"threads piled up: {threads_before} -> peak {threads_peak}, {threads_after} after; {kinds_before} -> {kinds_after}"
        assert threads_peak <= threads_before + THREAD_SLACK, piled
        assert threads_after <= threads_before + THREAD_SLACK, piled
        assert ok.status == 200, f"no 200 within {RECOVERY_BOUND_S} s of the broker's return; last call: {ok}"
        assert all(c.status == 200 for c in after), f"after recovery: {[(c.status, c.body) for c in after if c.status != 200][:5]}"
        assert alive == ["api", "c0.1"] and pids == (api.process.pid, consumer.process.pid), "no process was restarted"


def poll_until_ok(api: ServiceProcess, *, start: int, bound: float, client_timeout: float) -> Call:
    """One call at a time, 0.5 s apart, until one answers 200 or ``bound`` s passed; the last call."""
    deadline = time.monotonic() + bound
    n = start
    while True:
        call = make_calls(n, 1)[0]
        run_calls([api.url], [call], workers=1, client_timeout=client_timeout)
        if call.status == 200 or time.monotonic() >= deadline:
            return call
        n += 1
        time.sleep(0.5)
