"""Per-key rate limiting over real HTTP: 429 with Retry-After, other keys unaffected."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import unique_settings
from tests.processes import start_api, start_consumer
from tests.worlds import load, standard_world

pytestmark = pytest.mark.e2e

PATH = "/assessments/refresh-assessments"


def test_a_key_over_its_rate_gets_429_with_retry_after(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    load(engine, standard_world())
    settings = unique_settings(database_url, bootstrap_servers, rate_limit_per_s=0.2, rate_limit_burst=2)
    consumer = start_consumer(settings, tmp_path)
    api = start_api(settings, tmp_path)
    try:
        acme = {"apiKey": "acme-key-0123456789"}
        codes = [httpx.post(api.url + PATH, json={"assessment_ids": [11]}, headers=acme, timeout=30).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = httpx.post(api.url + PATH, json={"assessment_ids": [11]}, headers=acme, timeout=30)
        assert limited.status_code == 429
        assert limited.json() == {"error": "Too many requests for this API key"}
        assert 1 <= int(limited.headers["retry-after"]) <= 5
        other = httpx.post(api.url + PATH, json={"assessment_ids": [21]},
                           headers={"apiKey": "globex-key-0123456789"}, timeout=30)
        assert other.status_code == 200, "another key has its own budget"
    finally:
        api.stop()
        consumer.stop()
