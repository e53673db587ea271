"""GET /openapi.json is a valid OpenAPI 3 document that real responses conform to;
/docs serves Swagger UI from the app's own assets.

The document tests need no broker (TestClient without the lifespan); the
response tests record real answers over HTTP from a broker-backed API and a
consumer process and validate them with openapi-core.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate as validate_spec
from sqlalchemy import Engine
from starlette.routing import Match
from starlette.testclient import TestClient

from producer_api.app import create_app
from shared.settings import Settings
from shared.version import __version__
from tests.conftest import unique_settings
from tests.processes import ServiceProcess, start_api
from tests.worlds import load, slot_updates_refused, standard_changes, standard_world

REFRESH = "/assessments/refresh-assessments"
STATUS = "/assessments/refresh-requests/{request_id}"
ACME = {"apiKey": "acme-key-0123456789"}
GLOBEX = {"X-API-Key": "globex-key-0123456789"}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def local() -> TestClient:
    return TestClient(create_app(Settings()))


@pytest.fixture(scope="module")
def document(local: TestClient) -> dict[str, Any]:
    response = local.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


@pytest.fixture(scope="module")
def spec(document: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(document)


# -- the document ---------------------------------------------------------


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    validate_spec(document)  # raises on any violation of the OpenAPI 3.0 schema
    assert document["openapi"].startswith("3.0")


def test_it_documents_the_refresh_and_status_operations(document: dict[str, Any]) -> None:
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert {(REFRESH, "post"), (STATUS, "get")} <= operations
    assert not any(path in ("/openapi.json", "/docs") or path.startswith("/docs/") for path, _ in operations)


def test_every_documented_operation_is_served(document: dict[str, Any]) -> None:
    routes = create_app(Settings()).routes
    for path, item in document["paths"].items():
        for method in item:
            scope = {"type": "http", "path": path.replace("{request_id}", "x").replace("{oid}", "11"), "method": method.upper()}
            assert any(route.matches(scope)[0] is Match.FULL for route in routes), (method, path)


def test_every_response_of_the_rest_contract_is_described(document: dict[str, Any]) -> None:
    refresh = document["paths"][REFRESH]["post"]
    assert set(refresh["responses"]) >= {"200", "202", "400", "401", "403", "413", "429", "500", "503", "504"}
    status = document["paths"][STATUS]["get"]
    assert set(status["responses"]) >= {"200", "202", "401", "403", "404", "429", "500", "503"}
    components = document["components"]
    assert components["responses"]["TooManyRequests"]["headers"]["Retry-After"]["required"] is True
    assert "request_id" in components["schemas"]["ErrorWithRequestId"]["required"]
    timeout = components["responses"]["Timeout"]["content"]["application/json"]["schema"]["$ref"]
    assert {"$ref": "#/components/schemas/TimedOut"} in components["schemas"][timeout.rsplit("/", 1)[1]]["oneOf"]
    assert {"request_id", "location"} <= set(components["schemas"]["TimedOut"]["required"])
    # A refresh's 504 always has its Location; a preview's has none (nothing to poll).
    assert "Location" in components["responses"]["Timeout"]["headers"]
    assert "Location" in refresh["responses"]["202"]["headers"]
    detail = components["schemas"]["AssessmentDetail"]["properties"]
    assert {"replacements", "replacement_failures", "refreshed_qids", "status"} <= set(detail)
    assert refresh["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RefreshRequest")


def test_info_version_is_the_services_and_healthz_needs_no_key(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == __version__
    healthz = document["paths"]["/healthz"]["get"]
    assert healthz["security"] == []
    assert healthz["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Health")
    assert document["components"]["schemas"]["Health"]["required"] == ["status", "version"]


def test_the_api_key_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "apiKey"}
    assert "X-API-Key" in schemes["apiKey"]["description"]
    assert schemes["xApiKey"]["name"] == "X-API-Key"
    assert {"apiKey": []} in document["security"]


# -- the docs page ----------------------------------------------------------


def test_docs_page_uses_assets_served_by_the_app(local: TestClient) -> None:
    page = local.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), "no CDN: every asset is ours"
    assert '"/openapi.json"' in page.text
    for asset in assets:
        response = local.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 0
    assert local.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith(
        ("text/javascript", "application/javascript")
    )
    assert local.get("/docs/assets/no-such-file.js").status_code == 404


# -- real responses against the document -----------------------------------


def check(spec: OpenAPI, response: httpx.Response, path_pattern: str = REFRESH, **view_args: str) -> httpx.Response:
    """Validate a real response against the document (raises on a mismatch)."""
    request = response.request
    mock_request = MockRequest(
        "http://localhost",
        request.method,
        request.url.path,
        path_pattern=path_pattern,
        view_args=view_args,
        headers=dict(request.headers),
        data=request.content,
    )
    mock_response = MockResponse(
        response.content,
        status_code=response.status_code,
        headers=dict(response.headers),
        content_type=response.headers.get("content-type", ""),
    )
    spec.validate_response(mock_request, mock_response)
    return response


@pytest.fixture
def world(engine: Engine) -> Engine:
    load(engine, standard_world())
    load(engine, standard_changes())
    return engine


def post(api: ServiceProcess, body: object = None, headers: dict[str, str] | None = None, raw: bytes | None = None) -> httpx.Response:
    headers = {**(ACME if headers is None else headers), "content-type": "application/json"}
    content = raw if raw is not None else (b"" if body is None else httpx.Request("POST", "/", json=body).content)
    return httpx.post(api.url + REFRESH, content=content, headers=headers, timeout=30)


def poll(spec: OpenAPI, api: ServiceProcess, request_id: str) -> httpx.Response:
    """GET the status until it is no longer 202, checking every answer."""
    deadline = time.monotonic() + 30
    while True:
        response = check(spec, get_status(api, request_id), STATUS, request_id=request_id)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def get_status(api: ServiceProcess, request_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(api.url + STATUS.format(request_id=request_id), headers=ACME if headers is None else headers, timeout=30)


@pytest.mark.e2e
def test_refresh_responses_conform(service: ServiceProcess, service_settings: Settings, world: Engine, spec: OpenAPI) -> None:
    ok = check(spec, post(service, {"assessment_ids": [11, 12]}))
    assert ok.status_code == 200 and ok.json()["details"][0]["replacement_failures"], "a detailed body was checked"
    assert check(spec, post(service)).status_code == 200
    for raw in [b"[1]", b'{"assessment_ids": 1}', b'{"assessment_ids": [true]}', b"\x0b"]:
        assert check(spec, post(service, raw=raw)).status_code == 400
    assert check(spec, post(service, {}, headers={})).status_code == 401
    assert check(spec, post(service, {}, headers={"apiKey": "wrong"})).status_code == 401
    assert check(spec, post(service, {"assessment_ids": [21, 99]})).status_code == 403
    too_large = b'{"assessment_ids": [' + b"1," * service_settings.max_body_bytes + b"1]}"
    assert check(spec, post(service, raw=too_large)).status_code == 413
    health = check(spec, httpx.get(service.url + "/healthz", timeout=5), "/healthz")
    assert health.json() == {"status": "ok", "version": __version__}


@pytest.mark.e2e
def test_async_responses_conform(service: ServiceProcess, world: Engine, spec: OpenAPI) -> None:
    accepted = check(spec, post(service, {"assessment_ids": [11]}, headers={**ACME, **ASYNC}))
    assert accepted.status_code == 202
    request_id = accepted.json()["request_id"]
    assert poll(spec, service, request_id).status_code == 200
    unknown = check(spec, get_status(service, "no-such-id"), STATUS, request_id="no-such-id")
    assert unknown.status_code == 404
    other = check(spec, get_status(service, request_id, GLOBEX), STATUS, request_id=request_id)
    assert other.status_code == 404
    assert check(spec, get_status(service, request_id, {}), STATUS, request_id=request_id).status_code == 401
    refused = check(spec, post(service, {"assessment_ids": [21]}, headers={**ACME, **ASYNC}))
    refused_id = refused.json()["request_id"]
    assert poll(spec, service, refused_id).status_code == 403


@pytest.mark.e2e
def test_failure_responses_conform(service: ServiceProcess, world: Engine, spec: OpenAPI) -> None:
    with slot_updates_refused(world):
        assert check(spec, post(service, {"assessment_ids": [11]})).status_code == 500


@pytest.fixture
def lone_api(database_url: str, bootstrap_servers: str, world: Engine, log_dir: Path) -> Iterator[ServiceProcess]:
    """An API no consumer answers, with a 1 s reply timeout and a burst of 2 per key."""
    settings = unique_settings(database_url, bootstrap_servers, reply_timeout_s=1.0,
                               rate_limit_per_s=0.01, rate_limit_burst=2)
    api = start_api(settings, log_dir, name="api-openapi-alone")
    yield api
    api.stop()


@pytest.mark.e2e
def test_timeout_pending_and_rate_limit_responses_conform(lone_api: ServiceProcess, spec: OpenAPI) -> None:
    timed_out = check(spec, post(lone_api, {"assessment_ids": [11]}))
    assert timed_out.status_code == 504 and timed_out.json()["request_id"]
    assert check(spec, post(lone_api, {"assessment_ids": [11]}, headers={**ACME, **ASYNC})).status_code == 202
    limited = check(spec, post(lone_api, {"assessment_ids": [11]}))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    accepted = check(spec, post(lone_api, {"assessment_ids": [21]}, headers={**GLOBEX, **ASYNC}))
    request_id = accepted.json()["request_id"]
    pending = check(spec, get_status(lone_api, request_id, GLOBEX), STATUS, request_id=request_id)
    assert pending.status_code == 202 and pending.json() == {"request_id": request_id, "status": "pending"}
    assert check(spec, get_status(lone_api, request_id, GLOBEX), STATUS, request_id=request_id).status_code == 429


@pytest.mark.e2e
def test_broker_unreachable_response_conforms(database_url: str, world: Engine, log_dir: Path, spec: OpenAPI) -> None:
    from assessment_refresh.local_servers import free_port

    settings = unique_settings(database_url, f"127.0.0.1:{free_port()}")
    api = start_api(settings, log_dir, name="api-openapi-no-broker", wait_ready=False)
    try:
        assert check(spec, post(api, {"assessment_ids": [11]})).status_code == 503
        assert check(spec, post(api, {"assessment_ids": [11]}, headers={**ACME, **ASYNC})).status_code == 503
    finally:
        api.stop()
