"""Async mode (``Prefer: respond-async``) over real HTTP, a real broker, a consumer
process and PostgreSQL: 202 with a Location, then the stored result by polling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from shared.settings import Settings
from tests.conftest import TABLES, unique_settings
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.worlds import load, slot_updates_refused, slots, standard_changes, standard_world

pytestmark = pytest.mark.e2e

REFRESH = "/assessments/refresh-assessments"
ACME = {"apiKey": "acme-key-0123456789"}
GLOBEX = {"apiKey": "globex-key-0123456789"}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def world(engine: Engine) -> Engine:
    load(engine, standard_world())
    load(engine, standard_changes())
    return engine


def refresh(api: ServiceProcess, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(api.url + REFRESH, json=body, headers={**ACME, **ASYNC, **(headers or {})}, timeout=30)


def status(api: ServiceProcess, location: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(api.url + location, headers=ACME if headers is None else headers, timeout=30)


def accepted(response: httpx.Response) -> str:
    """Check a 202 acceptance and return its Location."""
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending" and len(body["request_id"]) == 36
    assert set(body) == {"request_id", "status"}
    assert response.headers["location"] == f"/assessments/refresh-requests/{body['request_id']}"
    assert response.headers["preference-applied"] == "respond-async"
    return response.headers["location"]


def poll(api: ServiceProcess, location: str, timeout: float = 30.0) -> httpx.Response:
    """GET the location until it is no longer 202 (pending)."""
    deadline = time.monotonic() + timeout
    while True:
        response = status(api, location)
        if response.status_code != 202:
            return response
        assert response.json() == {"request_id": location.rsplit("/", 1)[1], "status": "pending"}
        assert time.monotonic() < deadline, "still pending"
        time.sleep(0.2)


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    load(engine, standard_world())
    load(engine, standard_changes())


def accepted_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT request_id, company_id FROM refresh_requests"))]


def test_async_refresh_answers_202_then_the_same_result_a_sync_call_gives(service: ServiceProcess, world: Engine) -> None:
    started = time.monotonic()
    location = accepted(refresh(service, {"assessment_ids": [11]}))
    assert time.monotonic() - started < 5, "answered without waiting for the refresh"
    result = poll(service, location)
    assert result.status_code == 200, result.text
    assert result.headers["x-request-id"] == location.rsplit("/", 1)[1]
    assert result.json()["details"][0]["status"] == "updated"
    assert status(service, location).json() == result.json(), "the result stays readable"
    # The same refresh in sync mode, on the same starting data, answers the same body.
    reset(world)
    sync = httpx.post(service.url + REFRESH, json={"assessment_ids": [11]}, headers=ACME, timeout=30)
    assert sync.status_code == 200
    assert result.json() == sync.json()


def test_prefer_with_other_preferences_and_case_is_honoured(service: ServiceProcess, world: Engine) -> None:
    response = refresh(service, {"assessment_ids": [12]}, {"Prefer": "wait=10, Respond-Async"})
    assert poll(service, accepted(response)).status_code == 200


def test_ids_of_another_company_are_a_stored_403(service: ServiceProcess, world: Engine) -> None:
    before = slots(world, 11)
    location = accepted(refresh(service, {"assessment_ids": [11, 21]}))
    result = poll(service, location)
    assert result.status_code == 403
    assert result.json() == {"error": "Assessment IDs do not belong to company or do not exist: [21]"}
    assert slots(world, 11) == before


def test_unknown_ids_and_other_companies_requests_are_404(service: ServiceProcess, world: Engine) -> None:
    location = accepted(refresh(service, {"assessment_ids": [11]}))
    assert poll(service, location).status_code == 200
    other = status(service, location, headers=GLOBEX)
    assert other.status_code == 404, "Globex may not read Acme's result"
    assert other.json() == {"error": "Unknown refresh request id"}
    for unknown in ["00000000-0000-4000-8000-000000000000", "x" * 500, "nul%00byte", "%27%20OR%201%3D1--"]:
        response = status(service, f"/assessments/refresh-requests/{unknown}")
        assert response.status_code == 404, unknown
        assert response.json() == {"error": "Unknown refresh request id"}


def test_status_needs_the_api_key(service: ServiceProcess, world: Engine) -> None:
    location = accepted(refresh(service, {"assessment_ids": [12]}))
    for headers in [{}, {"apiKey": "not-a-key"}]:
        response = status(service, location, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "Invalid or missing API key"}
    assert status(service, location, headers={"X-API-Key": ACME["apiKey"]}).status_code in (200, 202)


def test_async_requests_are_authenticated_and_validated_as_sync_ones(service: ServiceProcess, world: Engine) -> None:
    assert refresh(service, {"assessment_ids": [11]}, {"apiKey": "nope"}).status_code == 401
    bad = refresh(service, {"assessment_ids": "11"})
    assert bad.status_code == 400 and bad.json() == {"error": "assessment_ids must be a list"}
    assert "location" not in bad.headers
    assert accepted_rows(world) == [], "rejected requests are not recorded"


def test_a_failed_refresh_is_a_500_result(service: ServiceProcess, world: Engine) -> None:
    # The consumer dead-letters the request and only publishes its 500 (its
    # transaction rolled back): the API keeps the reply it saw.
    with slot_updates_refused(world):
        result = poll(service, accepted(refresh(service, {"assessment_ids": [11]})))
    assert result.status_code == 500
    assert result.json()["error"].startswith("Error refreshing assessment data: ")
    with world.connect() as conn:
        kept = conn.execute(text("SELECT reply_status FROM refresh_requests")).scalar_one()
        stored = conn.execute(text("SELECT count(*) FROM processed_messages")).scalar_one()
    assert (kept, stored) == (500, 0), "answered from the reply the API kept"


def test_pending_while_no_consumer_runs_then_the_result(
    database_url: str, bootstrap_servers: str, world: Engine, log_dir: Path
) -> None:
    settings = unique_settings(database_url, bootstrap_servers)
    api = start_api(settings, log_dir, name="api-async-no-consumer")
    consumer = None
    try:
        location = accepted(refresh(api, {"assessment_ids": [11]}))
        for _ in range(3):
            response = status(api, location)
            assert response.status_code == 202
            assert response.json()["status"] == "pending"
            assert response.headers["location"] == location
            time.sleep(0.5)
        consumer = start_consumer(settings, log_dir, name="consumer-late")
        result = poll(api, location, timeout=60)
        assert result.status_code == 200, result.text
        assert [d["oid"] for d in result.json()["details"]] == [11]
    finally:
        if consumer is not None:
            consumer.stop()
        api.stop()


def test_broker_unreachable_is_503_and_nothing_is_recorded(database_url: str, world: Engine, log_dir: Path) -> None:
    from assessment_refresh.local_servers import free_port

    settings: Settings = unique_settings(database_url, f"127.0.0.1:{free_port()}")
    api = start_api(settings, log_dir, name="api-async-no-broker", wait_ready=False)
    try:
        started = time.monotonic()
        response = refresh(api, {"assessment_ids": [11]})
        assert response.status_code == 503
        assert time.monotonic() - started < 8
        assert "error" in response.json() and "location" not in response.headers
        assert accepted_rows(world) == [], "a request that was not sent is not pending"
    finally:
        api.stop()
