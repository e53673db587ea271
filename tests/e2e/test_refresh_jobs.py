"""Large refreshes as jobs of chunks, end to end: real broker, two consumer
processes, the API, PostgreSQL (docs/design.md#delivery-guarantees, "Bounded work").

REFRESH_CHUNK_SIZE is 2 here, so a few dozen assessments make many chunks.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from shared.settings import Settings
from tests.conftest import unique_settings
from tests.kafka_tools import deleted_event, json_values, publish_event, read_topic
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.waiting import eventually
from tests.worlds import load, question

pytestmark = pytest.mark.e2e

PATH = "/assessments/refresh-assessments"
KIND = ("mcq", "python", "medium")
BIG, SMALL = 7, 8
BIG_KEY, SMALL_KEY = {"apiKey": "big-company-key-0123"}, {"apiKey": "small-company-key-0123"}


def world(big: int, small: int) -> dict[str, Any]:
    """Company 7 has ``big`` assessments, company 8 ``small``; all use question
    500 (to be deleted; public alternatives 600-609) and their own stale-able 900."""
    return {
        "companies": [{"id": BIG, "name": "Big", "api_keys": [BIG_KEY["apiKey"]]},
                      {"id": SMALL, "name": "Small", "api_keys": [SMALL_KEY["apiKey"]]}],
        "questions": [question(500, KIND), question(900, ("essay", "go", "hard"))]
        + [question(600 + i, KIND) for i in range(10)],
        "assessments": [
            {"oid": 10_000 * company + i, "company_id": company, "name": f"A{company}-{i}",
             "sections": [{"name": "S", "qids": [500, 900]}]}
            for company, count in ((BIG, big), (SMALL, small)) for i in range(count)
        ],
    }


def chunk_settings(database_url: str, bootstrap_servers: str, **overrides: object) -> Settings:
    return unique_settings(database_url, bootstrap_servers, refresh_chunk_size=2, **overrides)


def chunks_handled(consumer: ServiceProcess) -> int:
    match = re.search(r"consumer stopped after \d+ message\(s\) and (\d+) chunk", consumer.log())
    assert match, f"no clean stop in the log:\n{consumer.log()[-2000:]}"
    return int(match.group(1))


def test_a_company_refresh_and_a_fan_out_are_shared_by_both_consumers(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    load(engine, world(big=40, small=20))
    load(engine, {"questions": [question(900, ("essay", "go", "hard"), text_="900, edited")]})
    settings = chunk_settings(database_url, bootstrap_servers)
    consumers = [start_consumer(settings, tmp_path, name=f"consumer-{i}",
                                env={"CONSUMER_METRICS_PORT": "0"}) for i in range(2)]
    api = start_api(settings, tmp_path)
    try:
        response = httpx.post(api.url + PATH, json={}, headers=BIG_KEY, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        oids = [10_000 * BIG + i for i in range(40)]
        assert body["assessments_updated"] == 40 and [d["oid"] for d in body["details"]] == oids
        assert all(d["refreshed_qids"] == [900] and d["status"] == "updated" for d in body["details"])

        deletion = deleted_event(500)
        publish_event(settings.kafka_bootstrap_servers, settings.question_events_topic, deletion)
        values = json_values(read_topic(settings.kafka_bootstrap_servers, settings.refresh_events_topic,
                                        at_least=40 + 60 + 1, timeout=60))
        mine = [v for v in values if v["trigger"].get("event_id") == deletion.event_id]
        refreshed = [v for v in mine if v["type"] == "assessment.refreshed"]
        summaries = [v for v in mine if v["type"] == "refresh.completed"]
        assert sorted(v["oid"] for v in refreshed) == sorted([*oids, *(10_000 * SMALL + i for i in range(20))])
        assert all(600 <= v["detail"]["replacements"][0]["new_qid"] < 610 for v in refreshed)
        assert len(summaries) == 1, "one summary per fan-out"
        [summary] = summaries
        assert (summary["assessments"], summary["changed"], summary["deleted_questions_replaced"],
                summary["chunks"]) == (60, 60, 60, 30)
        # (The summary is keyed by its question, the events by oid: across
        # partitions it may be read before the last events; it is produced
        # once every chunk has committed.)
    finally:
        api.stop()
        for c in consumers:
            c.stop()
    handled = [chunks_handled(c) for c in consumers]
    assert sum(handled) == 20 + 30 and min(handled) > 0, f"both consumers shared the chunks: {handled}"
    with engine.connect() as conn:
        jobs = conn.execute(text("SELECT kind, chunks, chunks_done, completed_at IS NOT NULL AS done "
                                 "FROM refresh_jobs ORDER BY kind")).all()
        biggest = conn.execute(text("SELECT max(cardinality(oids)) FROM refresh_job_chunks")).scalar()
    assert [(j.kind, j.chunks, j.chunks_done, j.done) for j in jobs] == [
        ("question.deleted", 30, 30, True), ("request", 20, 20, True)]
    assert biggest == 2, "no chunk over REFRESH_CHUNK_SIZE"


def test_a_timed_out_caller_gets_a_location_where_the_full_report_appears(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    load(engine, world(big=12, small=1))
    settings = chunk_settings(database_url, bootstrap_servers, reply_timeout_s=1.0)
    api = start_api(settings, tmp_path)
    consumer = None
    try:
        # No consumer yet: nobody answers within REPLY_TIMEOUT_S.
        response = httpx.post(api.url + PATH, json={}, headers=BIG_KEY, timeout=30)
        assert response.status_code == 504, response.text
        body = response.json()
        location = f"/assessments/refresh-requests/{body['request_id']}"
        assert body == {"error": "Timed out waiting for the refresh result", "request_id": body["request_id"],
                        "location": location}
        assert response.headers["location"] == location
        pending = httpx.get(api.url + location, headers=BIG_KEY, timeout=10)
        assert pending.status_code == 202 and pending.json() == {"request_id": body["request_id"], "status": "pending"}
        assert httpx.get(api.url + location, headers=SMALL_KEY, timeout=10).status_code == 404, "another company's"

        consumer = start_consumer(settings, tmp_path)

        def report() -> httpx.Response | None:
            r = httpx.get(api.url + location, headers=BIG_KEY, timeout=10)
            return r if r.status_code != 202 else None

        result = eventually(report, timeout=60, what="the full report at the Location")
        assert result.status_code == 200, result.text
        assert [d["oid"] for d in result.json()["details"]] == [10_000 * BIG + i for i in range(12)]
        assert result.json()["assessments_updated"] == 12
    finally:
        api.stop()
        if consumer is not None:
            consumer.stop()


def test_a_small_request_is_not_held_behind_a_large_refresh(
    database_url: str, bootstrap_servers: str, engine: Engine, tmp_path: Path
) -> None:
    load(engine, world(big=300, small=1))
    load(engine, {"questions": [question(900, ("essay", "go", "hard"), text_="900, edited")]})
    settings = chunk_settings(database_url, bootstrap_servers)
    consumer = start_consumer(settings, tmp_path)
    api = start_api(settings, tmp_path)
    try:
        httpx.post(api.url + PATH, json={"assessment_ids": [10_000 * SMALL]}, headers=SMALL_KEY, timeout=30)  # warm

        def timed(body: object, headers: dict[str, str]) -> tuple[int, float]:
            r = httpx.post(api.url + PATH, json=body, headers=headers, timeout=120)
            return r.status_code, time.monotonic()

        def running_job() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(text("SELECT count(*) FROM refresh_jobs WHERE completed_at IS NULL")).scalar())

        with ThreadPoolExecutor(max_workers=2) as pool:
            big = pool.submit(timed, {}, BIG_KEY)  # 150 chunks, one after another on one consumer
            eventually(running_job, timeout=30, interval=0.01, what="the large refresh's job")
            small = pool.submit(timed, {"assessment_ids": [10_000 * SMALL]}, SMALL_KEY)
            (small_status, small_done), (big_status, big_done) = small.result(), big.result()
        assert (small_status, big_status) == (200, 200)
        assert small_done < big_done, "the small request was answered while the large one still ran"
    finally:
        api.stop()
        consumer.stop()
