"""Conventional command lines: flags beside their environment variables, flags win."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from assessment_refresh.cli import _settings, build_parser
from assessment_refresh.local_servers import free_port

pytestmark = pytest.mark.e2e


def test_flags_win_over_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "9000")
    monkeypatch.setenv("CONSUMER_METRICS_PORT", "9401")
    api = build_parser().parse_args(["api", "--port", "8123"])
    assert (_settings(api_host=api.host, api_port=api.port).api_host,
            _settings(api_host=api.host, api_port=api.port).api_port) == ("127.0.0.1", 8123)
    consumer = build_parser().parse_args(["consumer"])
    assert _settings(consumer_metrics_port=consumer.metrics_port).consumer_metrics_port == 9401  # no flag: the variable


def test_api_listens_where_its_flags_say() -> None:
    port = free_port()
    env = {**os.environ, "API_PORT": str(free_port()), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    process = subprocess.Popen([sys.executable, "-m", "assessment_refresh.cli", "api", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json() == {"status": "ok"}
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, "the API did not listen on --port"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(15)


def test_help_names_the_variable_of_each_option() -> None:
    for command, variables in (("api", ["API_HOST", "API_PORT"]),
                               ("consumer", ["CONSUMER_METRICS_HOST", "CONSUMER_METRICS_PORT"])):
        text = subprocess.run([sys.executable, "-m", "assessment_refresh.cli", command, "--help"],
                              capture_output=True, text=True, timeout=60).stdout
        assert all(v in text for v in variables), text
