"""Conventional command lines: flags beside their environment variables, flags win,
and a malformed value of either is one line naming it and exit 2, for every command."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assessment_refresh.cli import _settings, build_parser
from assessment_refresh.cli_options import OWN_OPTIONS, resolve_own_options
from assessment_refresh.local_servers import free_port
from shared.settings import Settings

pytestmark = pytest.mark.e2e


def test_flags_win_over_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "9000")
    monkeypatch.setenv("CONSUMER_METRICS_PORT", "9401")
    api = build_parser().parse_args(["api", "--port", "8123"])
    assert (_settings(api_host=api.api_host, api_port=api.api_port).api_host,
            _settings(api_host=api.api_host, api_port=api.api_port).api_port) == ("127.0.0.1", 8123)
    consumer = build_parser().parse_args(["consumer"])
    # no flag: the variable
    assert _settings(consumer_metrics_port=consumer.consumer_metrics_port).consumer_metrics_port == 9401


def test_api_listens_where_its_flags_say() -> None:
    port = free_port()
    env = {**os.environ, "API_PORT": str(free_port()), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    process = subprocess.Popen([sys.executable, "-m", "assessment_refresh.cli", "api", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["status"] == "ok"
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


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name), child
                yield from _subcommands(child, (*prefix, name))


def test_every_option_of_every_command_says_where_it_may_come_from() -> None:
    """Each option's help names its variable, or says it is for the command line
    only; a variable named is one the command really reads."""
    named: dict[str, str] = {}
    for command, parser in _subcommands(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS) or "-h" in action.option_strings:
                continue
            where = re.search(r"\((env (\w+)|command line only)", action.help)
            assert where, f"{' '.join(command)} {action.option_strings[0]}: {action.help!r}"
            if where.group(2):
                named[f"{' '.join(command)} {action.option_strings[0]}"] = where.group(2)
    assert named["api --port"] == "API_PORT" and named["dev --api-port"] == "DEV_API_PORT"
    settings_variables = {name.upper() for name in Settings.__dataclass_fields__}
    own = {spec.env for _c, parser in _subcommands(build_parser()) for spec in parser.get_default(OWN_OPTIONS) or []}
    assert set(named.values()) <= settings_variables | own, set(named.values()) - settings_variables - own


@pytest.mark.parametrize(("argv", "variable", "value", "dest", "expected"), [
    (["dev"], "DEV_API_PORT", "8123", "api_port", 8123),
    (["dev"], "DEV_KAFKA_PORT", "19092", "kafka_port", 19092),
    (["dev"], "DEV_BROKER", "kafka", "broker", "kafka"),
    (["dev"], "DEV_DATA_DIR", "/tmp/elsewhere", "data_dir", "/tmp/elsewhere"),
    (["load", "x.json"], "LOAD_QUIET", "yes", "quiet", True),
    (["replay", "--topic", "t", "--from-beginning"], "REPLAY_GROUP", "g1", "group", "g1"),
    (["replay", "--topic", "t", "--from-beginning"], "REPLAY_QUIET", "on", "quiet", True),
    (["acls"], "ACLS_BANK_PRINCIPAL", "User:questions", "bank_principal", "User:questions"),
    (["acls"], "ACLS_NO_CREATE_TOPICS", "1", "no_create_topics", True),
    (["api"], "API_WORKERS", "3", "workers", 3),  # parsed; cmd_api then refuses it
])
def test_a_commands_own_option_comes_from_its_variable_unless_given(
    argv: list[str], variable: str, value: str, dest: str, expected: object
) -> None:
    args = build_parser().parse_args(argv)
    resolve_own_options(args, {variable: value})
    assert getattr(args, dest) == expected
    defaults = build_parser().parse_args(argv)
    resolve_own_options(defaults, {})
    assert getattr(defaults, dest) != expected  # the variable made the difference


def test_dev_listens_on_the_documented_ports_by_default() -> None:
    args = build_parser().parse_args(["dev"])
    resolve_own_options(args, {})
    assert (args.api_port, args.kafka_port, args.broker, args.data_dir) == (8000, 9092, "tansu", ".dev")


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.upper() not in Settings.__dataclass_fields__
             and not k.startswith(("KAFKA_", "DEV_", "API_", "LOG_"))}
    return subprocess.run([sys.executable, "-m", "assessment_refresh.cli", *argv], capture_output=True, text=True,
                          timeout=60, env={**clean, **env}, cwd=cwd)


COMMANDS = [["api"], ["consumer"], ["migrate"], ["load", "world.json"], ["keys", "create", "--company", "7"],
            ["keys", "revoke", "k"], ["replay", "--topic", "question.events", "--from-beginning"], ["acls", "--dry-run"],
            ["publish", "question-deleted", "103"], ["dev"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_a_malformed_setting_stops_every_command_with_one_line(argv: list[str], tmp_path: Path) -> None:
    result = _run(argv, {"API_PORT": "eighty"}, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines() == ["error: API_PORT must be a whole number, not 'eighty'"]
    assert not (tmp_path / ".dev").exists()


@pytest.mark.parametrize(("argv", "variable", "value", "line"), [
    (["migrate"], "TOPIC_PARTITIONS", "six", "error: TOPIC_PARTITIONS must be a whole number, not 'six'"),
    (["migrate"], "TOPIC_PARTITIONS", "0", "error: TOPIC_PARTITIONS must be a number of at least 1, not 0"),
    (["consumer"], "REPLY_TIMEOUT_S", "soon", "error: REPLY_TIMEOUT_S must be a number, not 'soon'"),
    (["consumer"], "REPLY_TIMEOUT_S", "0", "error: REPLY_TIMEOUT_S must be a number above 0, not 0.0"),
    (["api"], "RATE_LIMIT_PER_S", "nan", "error: RATE_LIMIT_PER_S must be a number of at least 0, not nan"),
    (["consumer"], "CONSUMER_METRICS_PORT", "70000",
     "error: CONSUMER_METRICS_PORT must be a port number, 0 to 65535, not 70000"),
    (["replay", "--topic", "t", "--from-beginning"], "BROKER_PROFILE", "rabbitmq",
     "error: BROKER_PROFILE must be one of kafka, tansu, not 'rabbitmq'"),
    (["publish", "question-deleted", "1"], "QUESTION_EVENTS_TOPIC", "bank events",
     "error: QUESTION_EVENTS_TOPIC must be a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-', "
     "not 'bank events'"),
    (["load", "x.json"], "LOG_LEVEL", "loud",
     "error: LOG_LEVEL must be one of CRITICAL, FATAL, ERROR, WARN, WARNING, INFO, DEBUG, not 'loud'"),
    (["keys", "revoke", "k"], "DATABASE_URL", "db.example.com:5432 with password hunter2",
     "error: DATABASE_URL must be a PostgreSQL URL such as postgresql://user:password@host:5432/dbname"),
    (["dev"], "DEV_API_PORT", "eighty", "error: DEV_API_PORT (for --api-port): not a port number: 'eighty'"),
    (["api"], "API_WORKERS", "many", "error: API_WORKERS (for --workers): invalid literal for int() with base 10: 'many'"),
    (["load", "x.json"], "LOAD_QUIET", "maybe",
     "error: LOAD_QUIET (for --quiet): expected 1/true/yes/on or 0/false/no/off, not 'maybe'"),
])
def test_each_kind_of_malformed_setting_is_named_in_one_line(
    argv: list[str], variable: str, value: str, line: str, tmp_path: Path
) -> None:
    result = _run(argv, {variable: value}, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines() == [line]


@pytest.mark.parametrize(("argv", "line"), [
    (["api", "--port", "eighty"],
     "assessment-refresh api: error: argument --port: not a port number: 'eighty' (see assessment-refresh api --help)"),
    (["dev", "--kafka-port", "0"], "assessment-refresh dev: error: argument --kafka-port: a port from 1 to 65535, "
     "not 0 (see assessment-refresh dev --help)"),
    (["api", "--workers", "4"], "error: --workers 4: the API runs one worker per process; run more api processes "
     "behind a load balancer instead (assessment-refresh api --help says why)"),
])
def test_a_malformed_flag_is_one_line_too(argv: list[str], line: str, tmp_path: Path) -> None:
    result = _run(argv, {}, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines() == [line]


@pytest.mark.parametrize(("argv", "flag"), [(["api", "--port"], "--port PORT (env API_PORT)"),
                                           (["consumer", "--metrics-port"], "--metrics-port PORT (env CONSUMER_METRICS_PORT")])
def test_a_port_in_use_is_one_line_naming_the_flag(argv: list[str], flag: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run([*argv, str(port)], {}, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: 127.0.0.1:{port} is in use: ") and flag in line, line


def test_api_help_says_why_there_are_no_workers() -> None:
    text = " ".join(subprocess.run([sys.executable, "-m", "assessment_refresh.cli", "api", "--help"],
                                   capture_output=True, text=True, timeout=60).stdout.split())
    assert "--port PORT" in text and "(env API_PORT, default 8000)" in text
    assert "own reply" in text and "load balancer" in text
