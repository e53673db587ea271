"""Several API and consumer processes, and a consumer killed at the worst moment."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from consumer.faults import ENV as FAULT_ENV
from tests.conftest import unique_settings
from tests.processes import start_api, start_consumer
from tests.worlds import load, question, slots, standard_changes, standard_world

pytestmark = pytest.mark.e2e

PATH = "/assessments/refresh-assessments"


def many_companies_world(companies: int, per_company: int) -> dict[str, object]:
    py = ("mcq", "python", "medium")
    return {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [f"key-of-company-{c}"]} for c in range(1, companies + 1)],
        "questions": [question(q, py) for q in range(1, 41)],
        "assessments": [
            {"oid": c * 100 + a, "company_id": c, "name": f"A{c}-{a}",
             "sections": [{"name": "Python", "qids": [1 + (c + a) % 40, 1 + (c + a + 1) % 40]}]}
            for c in range(1, companies + 1) for a in range(per_company)
        ],
    }


def processed_count(log: str) -> int:
    match = re.search(r"consumer stopped after (\d+) message", log)
    assert match, f"no clean stop in the log:\n{log[-2000:]}"
    return int(match.group(1))


def test_two_apis_and_two_consumers_each_caller_gets_its_own_reply(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    load(engine, many_companies_world(companies=12, per_company=3))
    settings = unique_settings(database_url, bootstrap_servers)
    consumers = [start_consumer(settings, tmp_path, name=f"consumer-{i}") for i in range(2)]
    apis = [start_api(settings, tmp_path, name=f"api-{i}") for i in range(2)]
    try:
        def call(n: int) -> tuple[int, int, int, list[int]]:
            company = 1 + n % 12
            api = apis[n % 2]
            oid = company * 100 + n % 3
            r = httpx.post(api.url + PATH, json={"assessment_ids": [oid]},
                           headers={"apiKey": f"key-of-company-{company}"}, timeout=30)
            body = r.json()
            return r.status_code, company, body.get("company_id", -1), [d["oid"] for d in body.get("details", [])] + [oid]

        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(call, range(300)))
        statuses = [r[0] for r in results]
        assert statuses.count(200) == 300, f"non-200 answers: {[s for s in statuses if s != 200]}"
        for _status, company, answered_company, oids in results:
            assert answered_company == company
            assert oids[0] == oids[1], "the reply is for this caller's request"
        assert all(p.process.poll() is None for p in consumers + apis)
    finally:
        for p in apis + consumers:
            p.stop()
    handled = [processed_count(c.log()) for c in consumers]
    assert sum(handled) == 300 and min(handled) > 0, f"both consumers shared the work: {handled}"
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM processed_messages")).scalar_one()
    assert stored == 300, "exactly one stored result per request id"


def test_consumer_killed_after_db_commit_resends_the_stored_reply(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    settings = unique_settings(database_url, bootstrap_servers)
    marker = tmp_path / "crashed"
    doomed = start_consumer(settings, tmp_path, name="doomed", env={FAULT_ENV: f"after_db_commit:{marker}"})
    api = start_api(settings, tmp_path)
    survivor = None
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(
                httpx.post, api.url + PATH, json={"assessment_ids": [11]},
                headers={"apiKey": "acme-key-0123456789"}, timeout=60,
            )
            deadline = time.monotonic() + 30
            while doomed.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert doomed.process.returncode == 137, "the consumer died after committing to the database"
            assert marker.exists()
            after_crash = slots(engine, 11)
            survivor = start_consumer(settings, tmp_path, name="survivor")
            response = pending.result(timeout=60)
        assert response.status_code == 200, response.text
        detail = response.json()["details"][0]
        # The caller sees the refresh that was committed before the crash...
        assert detail["status"] == "updated" and detail["refreshed_qids"] == [101]
        assert detail["deleted_questions_replaced"] == 1
        # ...and it was applied once: the survivor re-sent the stored reply, it did not refresh again.
        assert slots(engine, 11) == after_crash
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM processed_messages")).scalar_one()
        assert rows == 1
    finally:
        api.stop()
        doomed.stop()
        if survivor is not None:
            survivor.stop()
