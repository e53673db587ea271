"""Every response of POST /assessments/refresh-assessments (docs/design.md#rest-contract),
over real HTTP (uvicorn), a real broker, a separate consumer process and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests.conftest import unique_settings
from tests.processes import ServiceProcess, start_api
from tests.worlds import load, slot_updates_refused, slots, standard_changes, standard_world

pytestmark = pytest.mark.e2e

PATH = "/assessments/refresh-assessments"
ACME = {"apiKey": "acme-key-0123456789"}


@pytest.fixture
def world(engine: Engine) -> Engine:
    load(engine, standard_world())
    load(engine, standard_changes())
    return engine


def post(service: ServiceProcess, body: object = None, headers: dict[str, str] | None = None, **kwargs: object) -> httpx.Response:
    headers = ACME if headers is None else headers
    if "content" in kwargs:
        return httpx.post(service.url + PATH, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]
    return httpx.post(service.url + PATH, json=body, headers=headers, timeout=30)


def test_refresh_reports_refreshed_replaced_and_failed_questions(service: ServiceProcess, world: Engine) -> None:
    response = post(service, {"assessment_ids": [11]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "Successfully refreshed 1 assessment"
    assert body["company_id"] == 7
    assert body["assessments_updated"] == 1
    [detail] = body["details"]
    assert detail["oid"] == 11 and detail["name"] == "Backend L2" and detail["total_questions"] == 5
    assert detail["questions_refreshed"] == 1 and detail["refreshed_qids"] == [101]
    assert detail["deleted_questions_replaced"] == 1
    [replacement] = detail["replacements"]
    assert replacement["old_qid"] == 102
    assert replacement["new_qid"] in set(range(104, 111)), "same kind, public, not already in the assessment"
    assert detail["deleted_questions_not_replaced"] == 1
    assert detail["replacement_failures"] == [
        {"qid": 150, "section_idx": 1, "question_idx": 1,
         "reason": "no active alternative with the same type, skill and difficulty"}
    ]
    assert detail["status"] == "updated"
    # The database holds what the report says.
    stored = slots(world, 11)
    assert stored[0][2:] == (101, 2, "question 101, reworded")
    assert stored[1][2] == replacement["new_qid"]
    assert stored[4][2] == 150


def test_second_refresh_is_unchanged_but_still_reports_failures(service: ServiceProcess, world: Engine) -> None:
    assert post(service, {"assessment_ids": [11]}).status_code == 200
    before = slots(world, 11)
    detail = post(service, {"assessment_ids": [11]}).json()["details"][0]
    assert detail["questions_refreshed"] == 0 and detail["refreshed_qids"] == []
    assert detail["replacements"] == [] and detail["deleted_questions_replaced"] == 0
    assert detail["deleted_questions_not_replaced"] == 1 and detail["replacement_failures"][0]["qid"] == 150
    assert detail["status"] == "unchanged"
    assert slots(world, 11) == before


@pytest.mark.parametrize(
    "body",
    [None, {}, {"assessment_ids": None}, {"assessment_ids": []}],
    ids=["empty-body", "empty-object", "null", "empty-list"],
)
def test_no_ids_refreshes_every_assessment_of_the_company(service: ServiceProcess, world: Engine, body: object) -> None:
    response = post(service, content=b"") if body is None else post(service, body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert [d["oid"] for d in payload["details"]] == [11, 12], "only Acme's, ordered by oid"
    assert payload["assessments_updated"] == 2
    assert payload["message"] == "Successfully refreshed 2 assessments"


def test_duplicate_ids_are_refreshed_once(service: ServiceProcess, world: Engine) -> None:
    payload = post(service, {"assessment_ids": [12, 11, 12, 11]}).json()
    assert [d["oid"] for d in payload["details"]] == [11, 12]
    assert payload["details"][0]["deleted_questions_replaced"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"assessment_ids": 11}', "assessment_ids must be a list"),
        (b'{"assessment_ids": "11"}', "assessment_ids must be a list"),
        (b'{"assessment_ids": [11, true]}', "assessment_ids must be a list of integers"),
        (b'{"assessment_ids": [11.0]}', "assessment_ids must be a list of integers"),
        (b'{"assessment_ids": ["11"]}', "assessment_ids must be a list of integers"),
        (b'{"assessment_ids": [null]}', "assessment_ids must be a list of integers"),
        (b"[11, 12]", "Request body must be a JSON object"),
        (b'"text"', "Request body must be a JSON object"),
        (b"{not json", "Request body must be a JSON object"),
        # A misspelled or repeated field never means "all" (docs/design.md#rest-contract).
        (b'{"assesment_ids": [11]}', 'Unknown field(s): ["assesment_ids"]'),
        (b'{"assessment_ids": [], "extra": "ignored"}', 'Unknown field(s): ["extra"]'),
        (b'{"assessment_ids": [11], "assessment_ids": []}', 'Duplicate field(s): ["assessment_ids"]'),
    ],
)
def test_bad_bodies_get_400_and_change_nothing(service: ServiceProcess, world: Engine, raw: bytes, message: str) -> None:
    before = slots(world, 11)
    response = post(service, content=raw, headers={**ACME, "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert slots(world, 11) == before


def test_foreign_or_unknown_ids_get_403_and_nothing_is_refreshed(service: ServiceProcess, world: Engine) -> None:
    before = slots(world, 11)
    response = post(service, {"assessment_ids": [9, 21, 11, 4, 9]})
    assert response.status_code == 403
    assert response.json() == {"error": "Assessment IDs do not belong to company or do not exist: [4, 9, 21]"}
    assert slots(world, 11) == before, "the valid id in the request was not refreshed either"


@pytest.mark.parametrize(
    "headers",
    [{}, {"apiKey": ""}, {"apiKey": "not-a-key"}, {"X-API-Key": "wrong"}],
    ids=["missing", "empty", "unknown", "unknown-x-api-key"],
)
def test_missing_or_unknown_key_gets_401(service: ServiceProcess, world: Engine, headers: dict[str, str]) -> None:
    response = post(service, {"assessment_ids": [11]}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or missing API key"}


def test_x_api_key_header_is_accepted(service: ServiceProcess, world: Engine) -> None:
    response = post(service, {"assessment_ids": [21]}, headers={"X-API-Key": "globex-key-0123456789"})
    assert response.status_code == 200
    assert response.json()["company_id"] == 8


def test_body_over_the_limit_gets_413(service: ServiceProcess, service_settings: Settings, world: Engine) -> None:
    raw = b'{"assessment_ids": [' + b"1," * service_settings.max_body_bytes + b"1]}"
    response = post(service, content=raw, headers={**ACME, "content-type": "application/json"})
    assert response.status_code == 413
    assert "error" in response.json()


def test_failure_while_refreshing_gets_500_and_changes_nothing(service: ServiceProcess, world: Engine) -> None:
    # A real database failure inside the refresh transaction: a trigger that refuses the update.
    with slot_updates_refused(world):
        before = slots(world, 11)
        response = post(service, {"assessment_ids": [11]})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error.startswith("Error refreshing assessment data: ") and "slot table is read-only" in error
        assert slots(world, 11) == before
    assert post(service, {"assessment_ids": [11]}).status_code == 200, "the consumer moved on"


def test_no_reply_in_time_gets_504_with_request_id(
    database_url: str, bootstrap_servers: str, world: Engine, log_dir: Path
) -> None:
    # An API whose requests no consumer reads.
    settings = unique_settings(database_url, bootstrap_servers, reply_timeout_s=1.0)
    api = start_api(settings, log_dir, name="api-no-consumer")
    try:
        started = time.monotonic()
        response = post(api, {"assessment_ids": [11]})
        assert response.status_code == 504
        assert time.monotonic() - started < 5
        body = response.json()
        assert body["error"] and len(body["request_id"]) == 36
    finally:
        api.stop()


def test_broker_unreachable_gets_503_fast(database_url: str, world: Engine, log_dir: Path) -> None:
    from assessment_refresh.local_servers import free_port

    settings = unique_settings(database_url, f"127.0.0.1:{free_port()}")
    api = start_api(settings, log_dir, name="api-no-broker", wait_ready=False)
    try:
        started = time.monotonic()
        response = post(api, {"assessment_ids": [11]})
        assert response.status_code == 503
        assert time.monotonic() - started < 3
        assert "error" in response.json()
    finally:
        api.stop()
