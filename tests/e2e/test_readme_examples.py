"""Every shell example of the README and of the manual, pasted as a newcomer would, against a live `dev`.

The examples are read from README.md and the pages of docs/ themselves (the
README first, then the pages in the order of mkdocs.yml's nav), so they
cannot drift from what runs; the convention (which blocks run, which are
output, which are skipped and why) is the HTML comment in the README's "Run
it". In short: every ```sh block runs, in order, with ``bash -e`` in the
directory where dev runs, and must exit 0; a ```json block right after one is
its last line of output, compared as JSON; a ```text block after one, marked
"output checked", lists lines it must print ("..." for any); an ```sh block
after a "not run:" comment is skipped. dev runs here with its defaults but on
ports of the test's, which are substituted for 8000, 9092 and 9400 in the
blocks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from assessment_refresh.apache_kafka import missing_tools
from assessment_refresh.apache_kafka.jars import broker_classpath
from assessment_refresh.local_servers import port_outside_ephemeral_range
from shared.settings import Settings
from tests.e2e.test_dev_command import STOP_TIMEOUT_S, start_dev
from tests.waiting import eventually

# dev listens on fixed ports: one test that starts it at a time (tests/e2e/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("dev_ports_lock")]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->\s*$")
OUTPUT_CHECKED = re.compile(r"^<!--\s*output checked\s*-->\s*$")
# The first word of a line that is a command: such a block must be ```sh.
COMMANDS = ("assessment-refresh", "curl", "pip", "pytest", "python", "python3", "docker", "kcat",
            "kafka-consumer-groups", "export", "echo", "grep", "cat", "psql", "set", "uv", "printf", "until",
            "mkdocs")
DEFAULT_PORTS = {"api": 8000, "kafka": 9092, "metrics": 9400}
BLOCK_TIMEOUT_S = 120


def example_files() -> list[Path]:
    """The README, then every page of the manual in the order of its nav."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [README, *(ROOT / "docs" / page for entry in nav for page in entry.values())]


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    not_run: str | None = None  # the reason, for a skipped ```sh block
    expected_json: object = None  # the ```json block that follows, parsed
    output_checked: bool = False  # a ```text block marked "output checked"
    expected_lines: list[str] | None = None  # the marked ```text block that follows, its lines
    file: str = "README.md"

    @property
    def runs(self) -> bool:
        return self.lang == "sh" and self.not_run is None


def readme_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        reason = NOT_RUN.match(before)
        blocks.append(Block(i + 1, match.group(1), "\n".join(lines[i + 1:end]) + "\n",
                            reason.group(1) if reason else None, output_checked=bool(OUTPUT_CHECKED.match(before))))
        i = end + 1
    for previous, block in zip(blocks, blocks[1:], strict=False):
        if block.lang == "json" and previous.lang == "sh":
            previous.expected_json = json.loads(block.body)
        if block.lang == "text" and block.output_checked and previous.lang == "sh":
            previous.expected_lines = [line for line in block.body.splitlines() if line.strip() != "..."]
    return blocks


def example_blocks() -> list[Block]:
    blocks = []
    for path in example_files():
        for block in readme_blocks(path.read_text()):
            block.file = str(path.relative_to(ROOT))
            blocks.append(block)
    return blocks


def test_every_shell_example_is_marked_by_the_convention() -> None:
    """Without a dev: no command hides in an unlabelled or text block (where
    the run below would not see it), every skipped block says why, and the
    JSON outputs parse."""
    blocks = example_blocks()
    hidden = [f"{b.file}:{b.line}" for b in blocks if b.lang in ("", "text")
              and b.body.split() and b.body.split()[0] in COMMANDS]
    assert not hidden, f"{hidden}: shell commands outside a ```sh block"
    assert all(b.lang in ("", "sh", "json", "text") for b in blocks), {b.lang for b in blocks}
    runnable = [b for b in blocks if b.runs]
    assert len(runnable) >= 15, [f"{b.file}:{b.line}" for b in runnable]
    assert all(b.not_run for b in blocks if b.lang == "sh" and not b.runs)
    assert sum(b.expected_json is not None for b in runnable) >= 4
    # Every "output checked" block follows a block that runs (else it checks nothing).
    unchecked = [f"{b.file}:{b.line}" for previous, b in zip(blocks, blocks[1:], strict=False)
                 if b.output_checked and not previous.runs]
    assert not unchecked, f"{unchecked}: an 'output checked' block after a block that does not run"
    assert sum(b.expected_lines is not None for b in runnable) >= 4
    # The operator's tools of the manual are among the examples that run.
    ran = "".join(b.body for b in runnable)
    for command in ("assessment-refresh dlq", "assessment-refresh kafka-tool kafka-consumer-groups",
                    "assessment-refresh kafka-tool kafka-console-consumer", "assessment-refresh kafka-tool kafka-topics",
                    "assessment-refresh acls --dry-run"):
        assert command in ran, command


def _with_ports(body: str, ports: dict[str, int]) -> str:
    for name, default in DEFAULT_PORTS.items():
        body = body.replace(f"127.0.0.1:{default}", f"127.0.0.1:{ports[name]}")
    return body


def _newcomers_environment(ports: dict[str, int]) -> dict[str, str]:
    """This process's environment without any setting of the service (the test
    suite's DATABASE_URL, BROKER_PROFILE, ...): a shell where only dev's
    settings file says where things are; the project's commands on PATH."""
    variables = {name.upper() for name in Settings.__dataclass_fields__}
    env = {k: v for k, v in os.environ.items()
           if k.removesuffix("_FILE") not in variables and not k.startswith(("KAFKA_", "DEV_", "LOG_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CONSUMER_METRICS_PORT"] = str(ports["metrics"])  # dev's, not the pasted commands'
    return env


# Against dev as a newcomer starts it (Tansu, its default). `dev --broker
# kafka` runs the banner's curl in test_dev_command.py; this second pass of
# every example on it cost 114 s of CI's 20-minute budget. README_EXAMPLES_BROKERS=tansu,kafka runs both.
@pytest.mark.parametrize("broker", os.environ.get("README_EXAMPLES_BROKERS", "tansu").split(","))
def test_every_shell_example_runs_against_dev(broker: str, tmp_path: Path) -> None:
    if missing_tools():
        # dev --broker kafka, and on either broker the manual's examples of Kafka's own tools (kafka-tool).
        pytest.skip(f"the local Apache Kafka's jars and tools need {', '.join(missing_tools())}")
    broker_classpath()  # resolved once, before any block's timeout runs (the first time: Maven, minutes)
    ports = {name: port_outside_ephemeral_range() for name in DEFAULT_PORTS}
    env = _newcomers_environment(ports)
    # dev as the README starts it, in a directory of its own (its data in ./.dev).
    run = start_dev(broker, Path(".dev"), ports["api"], kafka_port=ports["kafka"], cwd=tmp_path, env=env)
    shell_env = {k: v for k, v in env.items() if k != "CONSUMER_METRICS_PORT"}
    ran = 0
    try:
        for block in example_blocks():
            if not block.runs:
                continue
            result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", _with_ports(block.body, ports)],
                                    cwd=tmp_path, env=shell_env, capture_output=True, text=True,
                                    timeout=BLOCK_TIMEOUT_S)
            where = f"{block.file} line {block.line}:\n{block.body}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            assert result.returncode == 0, f"exit {result.returncode}, {where}"
            assert "using the running dev's settings from .dev/settings.env" in result.stderr or \
                "assessment-refresh" not in block.body, f"did not use dev's settings file: {where}"
            if block.expected_json is not None:
                last = result.stdout.strip().splitlines()[-1]
                assert json.loads(last) == block.expected_json, where
            if block.expected_lines is not None:
                printed = {line.rstrip() for line in (result.stdout + "\n" + result.stderr).splitlines()}
                missing = [line for line in block.expected_lines if line.rstrip() not in printed]
                assert not missing, f"not printed: {missing}\n{where}"
            ran += 1
            print(f"{broker}: {block.file} line {block.line} ok")
        # The deletion the README publishes was handled as the README says: an
        # automatic refresh, counted by its trigger.
        metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
        eventually(lambda: 'assessment_refresh_assessments_refreshed_total{trigger="question.deleted"} 1.0'
                   in httpx.get(metrics_url, timeout=5).text, timeout=30, what="the automatic refresh of 103")
    finally:
        run.process.send_signal(signal.SIGINT)
        try:
            run.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
    assert ran >= 15
    assert not (tmp_path / ".dev" / "settings.env").exists()
