"""Every error body is JSON ``{"error": ...}``, routing errors and bugs included.

No broker or database: the TestClient is used without its context manager, so
the lifespan (reply reader, engine) never starts. Routing errors never reach
an endpoint, and an endpoint that needs the services fails like a bug would.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from producer_api.app import create_app
from shared.settings import Settings

REFRESH = "/assessments/refresh-assessments"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()), raise_server_exceptions=False)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_json_405_with_allow(client: TestClient, method: str) -> None:
    response = client.request(method, REFRESH)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Method Not Allowed"}
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/healthz", "/assessments/refresh-requests/some-id"])
def test_wrong_method_on_a_get_route_lists_get_and_head(client: TestClient, path: str) -> None:
    response = client.post(path)
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


@pytest.mark.parametrize("path", ["/", "/nope", "/assessments", "/assessments/refresh-assessments/extra"])
def test_unknown_path_is_json_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Not Found"}


def test_an_unexpected_exception_is_json_500_without_details(client: TestClient) -> None:
    # Without the lifespan the endpoint finds no services: an AttributeError, i.e. a bug.
    response = client.post(REFRESH, headers={"apiKey": "k"}, json={})
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error"}
    assert "AttributeError" not in response.text


@pytest.mark.parametrize(("method", "path"), [("POST", REFRESH), ("GET", REFRESH), ("GET", "/nowhere")],
                         ids=["500", "405", "404"])
def test_errors_say_nosniff_and_no_store_too(client: TestClient, method: str, path: str) -> None:
    """The 500 is sent by Starlette's outermost error middleware, past the app's
    own middleware: producer_api/errors.py gives it the headers itself."""
    response = client.request(method, path, headers={"apiKey": "k"})
    assert response.status_code in (404, 405, 500)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
