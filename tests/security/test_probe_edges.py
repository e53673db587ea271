"""The edges an adversarial probe found (issue 21), each against the real
service: uvicorn API processes, the consumer, the broker and PostgreSQL.

1. a misspelled or repeated field refreshed everything: now a 400 naming it,
   over REST (tests/security/test_bad_input_cases.py, "misspelled-...",
   "repeated-...") and on Kafka (below);
2. a client dropping its connection mid-body made a traceback and a 500;
   made-up keys cost a database look-up each, without limit;
3. a forged request record reusing another company's request id got that
   company's stored report;
4. the API key of a query string reached the access log, responses had no
   nosniff / no-store, and the metrics and health ports named the Python version.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine

from assessment_refresh.local_servers import free_port
from consumer.dead_letters import dlq_topic
from consumer.health_server import HealthServer
from shared.messages import RefreshRequested, new_id
from shared.settings import Settings
from tests.kafka_tools import json_values, read_topic
from tests.processes import ServiceProcess, start_api
from tests.security.conftest import PATH, Running, table_dump
from tests.security.test_malformed_kafka_messages import RecordProducer
from tests.waiting import eventually
from tests.worlds import load, standard_changes, standard_world

pytestmark = pytest.mark.e2e

ACME_KEY = "acme-key-0123456789"  # company 7: assessments 11 and 12 (tests/worlds.py)
GLOBEX_KEY = "globex-key-0123456789"  # company 8: assessment 21
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store"}


@pytest.fixture
def world(engine: Engine) -> Engine:
    load(engine, standard_world())
    load(engine, standard_changes())
    return engine


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples with these labels (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


# -- 2. a client that goes away mid-body ---------------------------------------------


def send_half_a_body(url: str, key: str) -> None:
    """Headers announcing 1,000 bytes, 20 of them, then the connection closed."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\napiKey: {key}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
                     + b'{"assessment_ids": [')
        time.sleep(0.2)  # the app is reading the body when the connection goes


def test_a_client_that_goes_away_mid_body_is_one_info_line_and_a_499(
    running: Running, service: ServiceProcess, world: Engine
) -> None:
    """Before: each attempt logged an unhandled ClientDisconnect at ERROR with a
    ~24-line traceback, and counted as a 500. After: one INFO line and a 499
    each; with an unknown key the body is not even read (401)."""
    before = table_dump(world)
    log_start = len(service.log())
    metrics_before = httpx.get(service.url + "/metrics").text
    for _ in range(5):
        send_half_a_body(service.url, ACME_KEY)
    for _ in range(5):
        send_half_a_body(service.url, f"made-up-{uuid.uuid4()}")

    def grown(text: str, status: str) -> float:
        name = "assessment_refresh_http_request_duration_seconds_count"
        return metric(text, name, status=status) - metric(metrics_before, name, status=status)

    def counted() -> str | None:
        text = httpx.get(service.url + "/metrics").text
        return text if grown(text, "499") >= 5 and grown(text, "401") >= 5 else None

    text = eventually(counted, timeout=20, what="five 499s and five 401s in the metrics")
    assert {status: grown(text, status) for status in ("499", "401", "500")} == {"499": 5, "401": 5, "500": 0}
    time.sleep(0.5)
    lines = [json.loads(line) for line in service.log()[log_start:].splitlines() if line.startswith("{")]
    gone = [line for line in lines if "closed the connection" in line["message"]]
    assert len(gone) == 5 and all(line["level"] == "INFO" for line in gone), gone
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL") or "exc" in line], lines
    assert "Traceback" not in service.log()[log_start:]
    assert table_dump(world) == before


# -- 2. failed authentications: limited per client address ----------------------------

FAILURE_BURST = 20


@pytest.fixture(scope="module")
def limited_api(database_url: str, bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory,
                running: Running, service_settings: Settings) -> Iterator[tuple[ServiceProcess, int]]:
    """An API process with the failed-authentication limit on (the defaults:
    a burst of 20, then one a second), trusting X-Forwarded-For from 127.0.0.2
    only (the "proxy" of these tests), with its metrics on a port of its own.
    It shares the security suite's topics, so its requests reach the consumer."""
    metrics_port = free_port()
    settings = Settings(**{**service_settings.__dict__, "auth_failure_rate_per_s": Settings.auth_failure_rate_per_s,
                           "auth_failure_burst": FAILURE_BURST, "forwarded_allow_ips": "127.0.0.2",
                           "api_metrics_port": metrics_port})
    assert settings.auth_failure_burst == Settings.auth_failure_burst, "the test runs on the defaults"
    api = start_api(settings, tmp_path_factory.mktemp("limited-api"), name="api-limited")
    try:
        yield api, metrics_port
    finally:
        api.stop()


def from_address(address: str, base_url: str) -> httpx.Client:
    """A client whose connections come from this loopback address."""
    return httpx.Client(base_url=base_url, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def test_a_burst_of_made_up_keys_is_cut_short_and_costs_the_database_nothing_more(
    limited_api: tuple[ServiceProcess, int], world: Engine
) -> None:
    """Before: 300 made-up keys got 300 x 401, no 429, and 300 database
    look-ups. After: the first 20 (and about one a second after) get 401, the
    rest 429 with Retry-After and no look-up; an X-Forwarded-For the client
    makes up changes nothing; a key known to the process still works from that
    address, and other addresses are not affected."""
    api, metrics_port = limited_api
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    lookups_before = metric(httpx.get(metrics_url).text, "assessment_refresh_api_key_lookups_total", result="unknown")
    with from_address("127.0.0.1", api.url) as attacker:
        # A valid key used just before: this process knows it (API_KEY_CACHE_S).
        assert attacker.post(PATH, headers={"apiKey": ACME_KEY}, json={"assessment_ids": [12]}).status_code == 200
        started = time.monotonic()
        answers = []
        for n in range(300):
            response = attacker.post(PATH, headers={"apiKey": f"made-up-{uuid.uuid4()}",
                                                    "X-Forwarded-For": f"203.0.113.{n % 250}"}, json={})
            answers.append(response)
        elapsed = time.monotonic() - started
        statuses = [r.status_code for r in answers]
        print(f"\n300 made-up keys in {elapsed:.1f} s: {statuses.count(401)} x 401, {statuses.count(429)} x 429")
        assert set(statuses) == {401, 429}
        assert statuses[:FAILURE_BURST] == [401] * FAILURE_BURST
        assert statuses.count(401) <= FAILURE_BURST + elapsed + 2
        refused = [r for r in answers if r.status_code == 429]
        assert all(r.json() == {"error": "Too many failed authentications from this address"} for r in refused)
        assert all(1 <= int(r.headers["Retry-After"]) <= 2 for r in refused)
        # The known key is still served from the flooded address.
        assert attacker.post(PATH, headers={"apiKey": ACME_KEY}, json={"assessment_ids": [12]}).status_code == 200
    lookups = metric(httpx.get(metrics_url).text, "assessment_refresh_api_key_lookups_total", result="unknown") - lookups_before
    assert lookups == statuses.count(401), "one database look-up per 401, none per 429"
    with from_address("127.0.0.3", api.url) as bystander:
        response = bystander.post(PATH, headers={"apiKey": GLOBEX_KEY}, json={"assessment_ids": [21]})
        assert response.status_code == 200, response.text
        assert bystander.post(PATH, headers={"apiKey": "made-up-too"}, json={}).status_code == 401


def test_a_trusted_proxy_names_the_client_and_each_client_has_its_own_allowance(
    limited_api: tuple[ServiceProcess, int], world: Engine
) -> None:
    """From the configured proxy address (FORWARDED_ALLOW_IPS=127.0.0.2), the
    X-Forwarded-For entry is the client: one client's failures do not use up
    another's allowance."""
    api, _ = limited_api
    with from_address("127.0.0.2", api.url) as proxy:
        first = [proxy.post(PATH, headers={"apiKey": f"bad-{n}", "X-Forwarded-For": "198.51.100.7"}).status_code
                 for n in range(FAILURE_BURST + 5)]
        assert first[:FAILURE_BURST] == [401] * FAILURE_BURST and 429 in first[FAILURE_BURST:]
        other = proxy.post(PATH, headers={"apiKey": "bad-other", "X-Forwarded-For": "spoofed, 198.51.100.8"})
        assert other.status_code == 401, "the right-most entry names the client; its allowance is whole"


def test_the_separate_metrics_port_names_no_python_version(limited_api: tuple[ServiceProcess, int]) -> None:
    _, metrics_port = limited_api
    response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert response.status_code == 200
    assert "python" not in response.headers.get("server", "").lower(), response.headers
    assert response.headers.get("server") == "assessment-refresh"


def test_the_consumer_health_port_names_no_python_version() -> None:
    """Before: ``Server: BaseHTTP/0.6 Python/3.11.7``."""
    server = HealthServer("127.0.0.1", 0, {"ok": lambda: True}).start()
    try:
        for path in ("/healthz", "/readyz", "/metrics", "/nowhere"):
            response = httpx.get(f"http://127.0.0.1:{server.port}{path}")
            assert response.headers["server"] == "assessment-refresh", (path, response.headers)
    finally:
        server.stop()


# -- 4. no key in the access log, and the headers of every answer ----------------------


def test_a_key_in_the_query_string_is_refused_and_not_logged(service: ServiceProcess, world: Engine) -> None:
    """Before: the access line showed ``?apiKey=acme-key-...``."""
    log_start = len(service.log())
    secret = f"{ACME_KEY}-{uuid.uuid4().hex}"
    for name in ("apiKey", "api_key", "KEY", "token", "X-API-Key"):
        response = httpx.post(f"{service.url}{PATH}", params={name: secret, "page": "2"}, json={})
        assert response.status_code == 401
    time.sleep(0.5)  # uvicorn writes its access line as the answer starts
    logged = service.log()[log_start:]
    assert secret not in logged
    assert logged.count(f"{PATH}?apiKey=***&page=2") == 1, logged[-2000:]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", PATH, {"apiKey": ACME_KEY}, b'{"assessment_ids": [12]}', 200),
        ("POST", PATH, {"apiKey": ACME_KEY}, b'{"assesment_ids": [12]}', 400),
        ("POST", PATH, {}, b"{}", 401),
        ("POST", PATH, {"apiKey": ACME_KEY}, b'{"assessment_ids": [21]}', 403),
        ("POST", PATH, {"apiKey": ACME_KEY}, b" " * 70_000, 413),
        ("GET", PATH, {}, b"", 405),
        ("GET", "/nowhere", {}, b"", 404),
        ("GET", "/assessments/refresh-requests/nope", {"apiKey": ACME_KEY}, b"", 404),
        ("GET", "/healthz", {}, b"", 200),
        ("GET", "/metrics", {}, b"", 200),
        ("GET", "/openapi.json", {}, b"", 200),
        ("GET", "/docs", {}, b"", 200),
        ("GET", "/docs/assets/swagger-ui.css", {}, b"", 200),
    ],
    ids=["200", "400", "401", "403", "413", "405", "404", "404-request", "healthz", "metrics", "openapi", "docs",
         "docs-asset"],
)
def test_every_answer_says_nosniff_and_no_store(
    service: ServiceProcess, world: Engine, method: str, path: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    """Before: neither header on any answer; and uvicorn's ``Server: uvicorn``."""
    response = httpx.request(method, service.url + path, headers=headers, content=body or None, timeout=30)
    assert response.status_code == status, response.text[:300]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert "server" not in response.headers


# -- 1. strict request records on Kafka -------------------------------------------------


def forger_topic(settings: Settings) -> str:
    """A reply topic of the test's own (as a forging client would name)."""
    topic = f"{settings.reply_topic}.forger-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)]).values():
        future.result(30)
    return topic


def request_headers(correlation_id: str, reply_to: str) -> list[tuple[str, bytes]]:
    return [("correlation_id", correlation_id.encode()), ("reply_to", reply_to.encode())]


def test_a_request_record_with_unknown_or_repeated_fields_is_dead_lettered_and_answered_400(
    running: Running, service_settings: Settings, world: Engine
) -> None:
    """Before: both refreshed every assessment of company 7 (a 200). After:
    each is dead-lettered with the reason, its caller answered 400 with the
    REST body, and nothing changes."""
    settings = service_settings
    before = table_dump(world)
    reply_to = forger_topic(settings)
    producer = RecordProducer(settings.kafka_bootstrap_servers)
    cases = {
        "unknown": (b'{"schema_version": 1, "company_id": 7, "assesment_ids": [11]}',
                    'Unknown field(s): ["assesment_ids"]'),
        "repeated": (b'{"schema_version": 1, "company_id": 7, "assessment_ids": [11], "assessment_ids": null}',
                     'Duplicate field(s): ["assessment_ids"]'),
    }
    ids = {}
    for name, (value, _) in cases.items():
        ids[name] = new_id()
        producer.send(settings.request_topic, value, f"strict-{ids[name]}".encode(), request_headers(ids[name], reply_to))
    replies = {v["request_id"]: v for v in json_values(read_topic(settings.kafka_bootstrap_servers, reply_to,
                                                                  at_least=2, timeout=30))}
    dead = {r.headers.get("correlation_id"): r for r in read_topic(settings.kafka_bootstrap_servers,
                                                                   dlq_topic(settings.request_topic), idle=0.5)}
    for name, (_, error) in cases.items():
        assert replies[ids[name]]["status"] == 400, replies[ids[name]]
        assert replies[ids[name]]["body"] == {"error": error}
        assert error in dead[ids[name]].headers["dlq.error.message"]
    assert table_dump(world) == before


# -- 3. a stored result goes only to the company it belongs to --------------------------


def test_a_request_reusing_another_companys_request_id_gets_nothing(
    running: Running, service: ServiceProcess, service_settings: Settings, world: Engine
) -> None:
    """Before: a record for company 7 with company 8's request id got company
    8's stored report on the forger's reply_to. After: it is dead-lettered
    with the reason and nothing is sent; a genuine redelivery (same id, same
    company) still gets the stored reply."""
    settings = service_settings
    response = httpx.post(service.url + PATH, headers={"apiKey": GLOBEX_KEY}, json={"assessment_ids": [21]}, timeout=30)
    assert response.status_code == 200
    globex_id, globex_report = response.headers["X-Request-Id"], response.json()
    before = table_dump(world)
    producer = RecordProducer(settings.kafka_bootstrap_servers)

    forged_to = forger_topic(settings)
    forged = RefreshRequested(globex_id, 7, None)
    producer.send(settings.request_topic, forged.to_json(), b"7", request_headers(globex_id, forged_to))

    def dead_lettered() -> dict[str, str] | None:
        for record in read_topic(settings.kafka_bootstrap_servers, dlq_topic(settings.request_topic), idle=0.5):
            if record.headers.get("correlation_id") == globex_id:
                return record.headers
        return None

    headers = eventually(dead_lettered, timeout=30, what="the forged record in the DLQ")
    assert "another company's request" in headers["dlq.error.message"], headers
    # A reply would have been produced with the DLQ copy, in the same outcome.
    assert read_topic(settings.kafka_bootstrap_servers, forged_to, idle=2.0) == [], "nothing reaches the forger"
    assert table_dump(world) == before, "nothing refreshed for company 7"

    redelivered_to = forger_topic(settings)
    genuine = RefreshRequested(globex_id, 8, [21])
    producer.send(settings.request_topic, genuine.to_json(), b"8", request_headers(globex_id, redelivered_to))
    [reply] = json_values(read_topic(settings.kafka_bootstrap_servers, redelivered_to, at_least=1, timeout=30))
    assert (reply["request_id"], reply["status"], reply["body"]) == (globex_id, 200, globex_report)
    assert table_dump(world) == before, "a redelivery refreshes nothing again"
