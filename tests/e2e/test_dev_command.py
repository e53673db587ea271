"""`assessment-refresh dev` as a person runs it: start, the printed curl, Ctrl-C.

On each broker the command runs twice on one data dir: the first run loads the
demo world and refreshes it, the second finds everything kept (PostgreSQL's
data and, on Apache Kafka, the broker's log in <data-dir>/kafka) and the same
call answers "unchanged". After each Ctrl-C nothing the command started may
remain, least of all a Kafka JVM.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from assessment_refresh.apache_kafka import missing_tools
from assessment_refresh.apache_kafka.jars import complete_marker
from assessment_refresh.dev import DEMO_KEY
from assessment_refresh.dev_settings import FILE_NAME, read
from assessment_refresh.local_servers import free_port, port_outside_ephemeral_range

# dev listens on fixed ports: one test that starts it at a time (tests/e2e/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("dev_ports_lock")]

# A cold Apache Kafka (format, JVM start) on a busy 2-core machine takes tens of seconds.
READY_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60


def dev_command() -> list[str]:
    script = Path(sys.executable).with_name("assessment-refresh")
    return [str(script)] if script.exists() else [sys.executable, "-m", "assessment_refresh.cli"]


@dataclass
class DevRun:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("[dev] ready"):
                self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)


def start_dev(broker: str, data_dir: Path, port: int, *, kafka_port: int | None = None,
              cwd: Path | None = None, env: dict[str, str] | None = None) -> DevRun:
    """dev on ports of the test's (its defaults may be taken on a shared machine)."""
    process = subprocess.Popen(
        [*dev_command(), "dev", "--broker", broker, "--data-dir", str(data_dir), "--api-port", str(port),
         "--kafka-port", str(kafka_port or port_outside_ephemeral_range())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env={**(os.environ if env is None else env), "LOG_FORMAT": "text",
             "CONSUMER_METRICS_PORT": (env or os.environ).get("CONSUMER_METRICS_PORT") or str(free_port())},
    )
    run = DevRun(process)
    threading.Thread(target=run.read_output, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not run.ready.wait(0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"dev --broker {broker} was not ready (exit {process.returncode}):\n{run.output[-6000:]}")
    return run


def kafka_jvms_of(data_dir: Path) -> list[psutil.Process]:
    """Kafka brokers whose configuration lies under data_dir (other work on this
    machine may run brokers of its own)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "kafka.Kafka" in cmdline and any(str(data_dir) in arg for arg in cmdline):
            found.append(process)
    return found


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def refresh_via_printed_curl(run: DevRun) -> httpx.Response:
    """What the banner's curl command does, with httpx."""
    match = re.search(r"curl -s -X POST (http://\S+)", run.output)
    assert match, f"no curl command in the banner:\n{run.output}"
    return httpx.post(
        match.group(1),
        headers={"apiKey": DEMO_KEY, "Content-Type": "application/json"},
        json={"assessment_ids": [11, 12]},
        timeout=60,
    )


def run_once_and_stop(broker: str, data_dir: Path) -> tuple[DevRun, dict[str, Any]]:
    run = start_dev(broker, data_dir, free_port())
    settings_file = data_dir / FILE_NAME
    try:
        # While it runs: its settings, for the other commands and for the export line.
        written = read(settings_file)
        assert written.pid == run.process.pid
        assert written.settings["BROKER_PROFILE"] == ("kafka" if broker == "kafka" else "tansu")
        assert written.api_url in run.output
        exports = re.search(r"^  export (.*)$", run.output, re.MULTILINE)
        assert exports, run.output
        assert f"KAFKA_BOOTSTRAP_SERVERS={written.settings['KAFKA_BOOTSTRAP_SERVERS']}" in exports.group(1)
        assert "DATABASE_URL=" in exports.group(1) and "BROKER_PROFILE=" in exports.group(1)
        response = refresh_via_printed_curl(run)
        assert response.status_code == 200, response.text
        report = response.json()
        started = psutil.Process(run.process.pid).children(recursive=True)
        jvms = [p for p in started if "kafka.Kafka" in p.cmdline()]
        assert len(jvms) == (1 if broker == "kafka" else 0), [p.cmdline()[-2:] for p in jvms]
        commands = {p.cmdline()[-1] for p in started if "assessment_refresh.cli" in p.cmdline()}
        assert {"api", "consumer"} <= commands, commands

        stop_asked = time.monotonic()
        run.process.send_signal(signal.SIGINT)
        try:
            code = run.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dev did not stop within {STOP_TIMEOUT_S} s of SIGINT:\n{run.output[-4000:]}")
        stopped_in = time.monotonic() - stop_asked
        print(f"{broker}: stopped {stopped_in:.1f} s after SIGINT")
        assert code == 0, run.output[-4000:]
        assert "[dev] stopped API, consumer and broker" in run.output
        assert not settings_file.exists(), "dev left its settings file behind"
        # PostgreSQL's server stops at dev's exit (pg_ctl stop, which waits); the
        # services and the broker were stopped before it.
        deadline = time.monotonic() + 10
        while not all(gone(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(p.pid, " ".join(p.cmdline())[-120:]) for p in started if not gone(p)]
        assert not left, f"still running after dev exited: {left}"
        assert not kafka_jvms_of(data_dir)
        return run, report
    finally:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@pytest.mark.parametrize("broker", ["tansu", "kafka"])
def test_dev_serves_the_demo_and_stops_cleanly_on_ctrl_c(broker: str, tmp_path: Path) -> None:
    if broker == "kafka" and missing_tools():
        pytest.skip(f"the local Apache Kafka needs {', '.join(missing_tools())}")
    data_dir = tmp_path / "dev"

    first, report = run_once_and_stop(broker, data_dir)
    assert report["company_id"] == 7
    details = {d["oid"]: d for d in report["details"]}
    assert sorted(details) == [11, 12]
    assert all(d["status"] == "updated" for d in details.values())
    assert details[11]["refreshed_qids"] == [101, 113]
    assert details[12]["replacement_failures"][0]["qid"] == 130
    banner = re.search(r"\[dev\] ready in ([\d.]+) s", first.output)
    assert banner, first.output
    describe = "Apache Kafka 4." if broker == "kafka" else "Tansu"
    assert re.search(rf"\[dev\] broker: {describe}.*started in [\d.]+ s", first.output), first.output
    print(f"{broker}: first run ready in {banner.group(1)} s")

    second, report = run_once_and_stop(broker, data_dir)
    assert "demo data already loaded" in second.output
    if broker == "kafka":
        assert "kept from the last run" in second.output
    details = {d["oid"]: d for d in report["details"]}
    assert sorted(details) == [11, 12]
    assert all(d["status"] == "unchanged" for d in details.values()), details
    banner = re.search(r"\[dev\] ready in ([\d.]+) s", second.output)
    assert banner, second.output
    print(f"{broker}: second run ready in {banner.group(1)} s")


@pytest.mark.parametrize("jars_cached", [False, True])
def test_dev_on_kafka_without_java_says_what_is_missing(jars_cached: bool, tmp_path: Path) -> None:
    """No java on PATH, no JAVA_HOME: one line naming what is missing, exit 2,
    and nothing started (no data dir contents, no traceback)."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    cache = tmp_path / "cache"
    if jars_cached:  # as after a first start: only Java is missing
        marker = complete_marker(cache)
        marker.parent.mkdir(parents=True)
        marker.write_text("resolved\n")
    env = {key: value for key, value in os.environ.items() if key != "JAVA_HOME"}
    env.update(PATH=str(empty), ASSESSMENT_REFRESH_CACHE=str(cache))
    data_dir = tmp_path / "dev"
    result = subprocess.run(
        [*dev_command(), "dev", "--broker", "kafka", "--data-dir", str(data_dir), "--api-port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: --broker kafka"), line
    assert "java (Java 17 or newer" in line
    assert ("mvn (Maven" in line) is not jars_cached, line
    assert "--broker tansu" in line
    assert not data_dir.exists() or not any(data_dir.iterdir())


@pytest.mark.parametrize(("flag", "named"), [("--api-port", "--api-port PORT (env DEV_API_PORT)"),
                                             ("--kafka-port", "--kafka-port PORT (env DEV_KAFKA_PORT)")])
def test_dev_on_a_taken_port_says_which_flag_moves_it(flag: str, named: str, tmp_path: Path) -> None:
    """Something listens on the port: one line naming the flag, exit 2, nothing started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--api-port": str(free_port()), "--kafka-port": str(free_port()), flag: str(port)}
        data_dir = tmp_path / "dev"
        result = subprocess.run(
            [*dev_command(), "dev", "--data-dir", str(data_dir), *(x for kv in ports.items() for x in kv)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "CONSUMER_METRICS_PORT": str(free_port())},
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 ({'the API' if flag == '--api-port' else 'the broker'}'s) is in use: "
        f"stop what listens there, or choose another with {named}"
    ]
    assert not data_dir.exists()
