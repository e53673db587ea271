"""The pure parts of metrics and log context: no broker, no database.

Counters live in prometheus_client's process-wide registry, so every check
reads a value before and after and compares the difference.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from consumer.consumer_metrics import count_refreshes, record_statistics
from consumer.log_fields import record_fields
from producer_api.access_log import AccessLogIds
from producer_api.app import create_app
from shared.log_setup import JsonFormatter
from shared.settings import Settings


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- consumer: refresh counters from report details ---------------------------


def report(refreshed: int, replaced: int, failures: int) -> dict[str, Any]:
    return {"questions_refreshed": refreshed, "deleted_questions_replaced": replaced,
            "deleted_questions_not_replaced": failures}


def test_refresh_counters_add_up_the_report_details() -> None:
    names = ("assessment_refresh_questions_refreshed_total", "assessment_refresh_questions_replaced_total",
             "assessment_refresh_replacement_failures_total")
    before = [value(n) for n in names]
    assessments = value("assessment_refresh_assessments_refreshed_total", trigger="question.deleted")
    count_refreshes("question.deleted", [report(3, 1, 0), report(0, 2, 5)])
    assert [value(n) - b for n, b in zip(names, before, strict=True)] == [3, 3, 5]
    assert value("assessment_refresh_assessments_refreshed_total", trigger="question.deleted") - assessments == 2


# -- consumer: lag from librdkafka statistics ---------------------------------


def stats(partitions: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"topics": {"t.requests": {"partitions": partitions}}})


def lag(partition: str) -> float | None:
    return REGISTRY.get_sample_value("assessment_refresh_consumer_lag", {"topic": "t.requests", "partition": partition})


def test_lag_per_assigned_partition_from_statistics() -> None:
    record_statistics(stats({
        "0": {"fetch_state": "active", "consumer_lag_stored": 7, "consumer_lag": 9},
        "1": {"fetch_state": "active", "consumer_lag": 2},  # older librdkafka: no _stored
        "2": {"fetch_state": "none", "consumer_lag": 100},  # not assigned to this member
        "-1": {"fetch_state": "none", "consumer_lag": -1},  # librdkafka's internal UA partition
        "3": {"fetch_state": "active", "consumer_lag_stored": -1},  # unknown yet
    }))
    assert (lag("0"), lag("1"), lag("2"), lag("-1"), lag("3")) == (7, 2, None, None, None)


def test_a_partition_lost_in_a_rebalance_leaves_the_lag_gauge() -> None:
    record_statistics(stats({"0": {"fetch_state": "active", "consumer_lag_stored": 4},
                             "1": {"fetch_state": "active", "consumer_lag_stored": 5}}))
    record_statistics(stats({"0": {"fetch_state": "active", "consumer_lag_stored": 1},
                             "1": {"fetch_state": "stopped", "consumer_lag_stored": 5}}))
    assert (lag("0"), lag("1")) == (1, None)


def test_statistics_that_do_not_parse_change_nothing() -> None:
    record_statistics(stats({"0": {"fetch_state": "active", "consumer_lag_stored": 3}}))
    record_statistics("{not json")
    assert lag("0") == 3


# -- consumer: the ids on a record's log lines --------------------------------


class FakeRecord:
    def __init__(self, topic: str, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._topic, self._value, self._headers = topic, value, headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def test_a_request_record_carries_its_correlation_id() -> None:
    msg = FakeRecord("requests", b"{}", [("correlation_id", b"req-1"), ("reply_to", b"replies")])
    assert record_fields(msg, question_event=False) == {
        "correlation_id": "req-1", "topic": "requests", "partition": 2, "offset": 41}


@pytest.mark.parametrize(
    ("value", "event_id"),
    [
        (b'{"schema_version": 1, "event_id": "e-1", "type": "question.deleted", "qid": 1}', "e-1"),
        (b"not json", None),
        (b"\xff\xfe", None),
        (b"[1, 2]", None),
        (b'{"event_id": {"content": "secret question text"}}', None),  # never a record's arbitrary value
        (b'{"event_id": "' + b"x" * 500 + b'"}', None),
        (None, None),
    ],
)
def test_a_question_event_carries_its_event_id_when_it_has_one(value: bytes | None, event_id: str | None) -> None:
    fields = record_fields(FakeRecord("question.events", value), question_event=True)
    assert fields["event_id"] == event_id and fields["correlation_id"] is None


# -- API: latency by route template, /metrics unauthenticated ----------------


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No lifespan (no broker, no database): see tests/unit/test_http_errors.py.
    return TestClient(create_app(Settings()), raise_server_exceptions=False)


def http_count(route: str, method: str, status: str) -> float:
    return value("assessment_refresh_http_request_duration_seconds_count", route=route, method=method, status=status)


def test_latency_is_labelled_by_route_template_and_status(client: TestClient) -> None:
    status_route = "/assessments/refresh-requests/{request_id}"
    before = (http_count("/healthz", "GET", "200"), http_count("unmatched", "GET", "404"),
              http_count(status_route, "GET", "500"))
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    # Without the lifespan the status endpoint has no services: a 500, labelled by
    # its template, not by the id in the path (one series per request otherwise).
    assert client.get("/assessments/refresh-requests/abc-123").status_code == 500
    after = (http_count("/healthz", "GET", "200"), http_count("unmatched", "GET", "404"),
             http_count(status_route, "GET", "500"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    assert value("assessment_refresh_http_request_duration_seconds_count", route="/assessments/refresh-requests/abc-123",
                 method="GET", status="500") == 0


def test_metrics_need_no_key_and_are_prometheus_text(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for name in ("assessment_refresh_http_request_duration_seconds", "assessment_refresh_reply_timeouts_total",
                 "assessment_refresh_broker_unavailable_total", "assessment_refresh_replies_awaited"):
        assert f"# TYPE {name}" in response.text


# -- API: the request id on uvicorn's access line -----------------------------


def access_lines(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Drive AccessLogIds like uvicorn does: the server's send() writes the
    access line when the response starts."""
    lines: list[dict[str, Any]] = []
    access = logging.getLogger("test.access")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def server_send(message: Any) -> None:
        if message["type"] == "http.response.start":
            record = access.makeRecord(access.name, logging.INFO, __file__, 1, '"POST /x" %d', (message["status"],), None)
            lines.append(json.loads(JsonFormatter().format(record)))

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    asyncio.run(AccessLogIds(app)({"type": "http", "state": state}, receive, server_send))
    return lines


def test_the_access_line_of_a_request_with_an_id_carries_it() -> None:
    assert [line.get("request_id") for line in access_lines({"request_id": "r-42"})] == ["r-42"]
    assert [line.get("request_id") for line in access_lines({})] == [None]


def test_api_metrics_on_a_port_of_their_own_leave_the_public_port() -> None:
    from assessment_refresh.local_servers import free_port
    from producer_api.api_metrics import serve_metrics_apart

    port = free_port()
    public = TestClient(create_app(Settings(api_metrics_port=port)), raise_server_exceptions=False)
    assert public.get("/metrics").status_code == 404
    stop = serve_metrics_apart("127.0.0.1", port)
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "assessment_refresh_replies_awaited" in body
    finally:
        stop()
