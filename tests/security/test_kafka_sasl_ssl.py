"""The service over SASL_SSL with SCRAM-SHA-512, and Kafka ACLs as the trust boundary.

One local Apache Kafka for the module, with a TLS listener (a throwaway CA and
broker certificate from trustme), SCRAM users written at format time and
Kafka's StandardAuthorizer on; the ACLs are the ones ``assessment-refresh
acls`` grants (assessment_refresh/acls.py), applied by the admin principal.
The API and the consumer each connect as their own principal; the consumer
creates its topics itself with the CREATE the script grants.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaError, Producer
from sqlalchemy import Engine

from assessment_refresh.acls import Principals, apply, bindings
from assessment_refresh.local_servers import free_port
from consumer.dead_letters import dlq_topic
from shared.kafka import ensure_topics
from shared.messages import RefreshRequested, record_headers, status_location
from shared.settings import Settings
from tests.conftest import unique_settings
from tests.e2e.test_question_events import processed, two_company_world
from tests.kafka_tools import deleted_event
from tests.processes import ServiceProcess, start_api, start_consumer
from tests.reply_stall import OTHERS_BOUND_S
from tests.waiting import eventually
from tests.worlds import load, slots, standard_changes, standard_world

trustme = pytest.importorskip("trustme", reason="trustme (the test extra) makes the throwaway certificates")

PATH = "/assessments/refresh-assessments"
ACME = {"apiKey": "acme-key-0123456789"}
PASSWORDS = {name: f"{name}-secret=1 x" for name in ("api", "consumer", "bank", "admin", "nobody")}
# How long a misconfigured process may take to say so (log line, /readyz 503).
FAILURE_BOUND_S = 15.0


@dataclass
class Pki:
    ca_file: Path
    other_ca_file: Path  # a CA the broker's certificate does not come from
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from cryptography.hazmat.primitives import serialization

    here = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    # Kafka's PEM key store reads PKCS#8 only; trustme writes the traditional form.
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    (here / "broker.key").write_bytes(pkcs8)
    (here / "broker.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(here / "ca.pem"))
    other.cert_pem.write_to_path(str(here / "other-ca.pem"))
    return Pki(here / "ca.pem", here / "other-ca.pem", here / "broker.pem", here / "broker.key")


@pytest.fixture(scope="module")
def secure_kafka(pki: Pki) -> Iterator[object]:
    from assessment_refresh.apache_kafka import ApacheKafka, missing_tools
    from assessment_refresh.apache_kafka.cluster import SecureListener

    if missing_tools():
        pytest.skip(f"the local Apache Kafka needs {missing_tools()}")
    listener = SecureListener(pki.cert_file, pki.key_file, scram_users=PASSWORDS,
                              super_users=("User:admin",), authorizer=True)
    with ApacheKafka(secure=listener) as kafka:
        yield kafka


def client_properties(user: str, ca_file: Path, password: str | None = None) -> dict[str, str]:
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": PASSWORDS[user] if password is None else password,
        "ssl.ca.location": str(ca_file),
    }


def as_user(settings: Settings, user: str, ca_file: Path, **changes: object) -> Settings:
    values: dict[str, object] = {"kafka_properties": client_properties(user, ca_file), **changes}
    return Settings(**{**settings.__dict__, **values})


@pytest.fixture(scope="module")
def base_settings(database_url: str, secure_kafka: object, pki: Pki) -> Settings:
    """Topic names of this module; the ACLs for them granted by the admin principal."""
    settings = unique_settings(database_url, secure_kafka.secure_bootstrap_servers,  # type: ignore[attr-defined]
                               broker_profile="kafka")
    apply(as_user(settings, "admin", pki.ca_file), bindings(settings, Principals()))
    return settings


@dataclass
class Secured:
    api: ServiceProcess
    consumer: ServiceProcess
    consumer_url: str


@pytest.fixture(scope="module")
def secured(base_settings: Settings, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    logs = tmp_path_factory.mktemp("sasl-logs")
    port = free_port()
    consumer = start_consumer(as_user(base_settings, "consumer", pki.ca_file, consumer_metrics_port=port), logs)
    try:
        url = f"http://127.0.0.1:{port}"
        # Ready (group joined) with nothing but the script's ACLs: the topics it created itself.
        eventually(lambda: _status(url + "/readyz") == 200, timeout=60, what=f"the consumer to be ready:\n{consumer.log()}")
        api = start_api(as_user(base_settings, "api", pki.ca_file), logs)
    except BaseException:
        consumer.stop()
        raise
    try:
        yield Secured(api, consumer, url)
    finally:
        api.stop()
        consumer.stop()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def post(api: ServiceProcess, body: object, headers: dict[str, str] = ACME) -> httpx.Response:
    return httpx.post(api.url + PATH, json=body, headers=headers, timeout=30)


# -- (a) the service over SASL_SSL ------------------------------------------------

def test_rest_contract_over_sasl_ssl(secured: Secured, engine: Engine) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())

    ok = post(secured.api, {"assessment_ids": [11]})
    assert ok.status_code == 200, ok.text
    [detail] = ok.json()["details"]
    assert detail["oid"] == 11 and detail["status"] == "updated" and detail["refreshed_qids"] == [101]
    assert slots(engine, 11)[0][2:] == (101, 2, "question 101, reworded")

    forbidden = post(secured.api, {"assessment_ids": [11, 21, 99]})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "Assessment IDs do not belong to company or do not exist: [21, 99]"

    assert post(secured.api, {"assessment_ids": [11]}, headers={"apiKey": "not-a-key-0123456789"}).status_code == 401
    assert post(secured.api, {"assessment_ids": "eleven"}).status_code == 400


def test_question_deleted_by_the_bank_principal_refreshes_assessments(
    secured: Secured, base_settings: Settings, engine: Engine, pki: Pki
) -> None:
    load(engine, two_company_world())
    event = deleted_event(500)
    error = produce_as("bank", pki, base_settings, base_settings.question_events_topic, event.to_json(), b"500")
    assert error is None, error
    eventually(lambda: processed(engine, event.event_id), what="the deletion to be processed")
    assert [s[2] for s in slots(engine, 31)] == [510, 501]
    assert [s[2] for s in slots(engine, 41)] == [502]


# -- (b) misconfigured clients fail fast and say why ------------------------------

MISCONFIGURED = {
    # case: (client properties changed, what the API's log says)
    "wrong-password": ({"sasl.password": "not-the-password"}, r"Authentication failed"),
    "untrusted-ca": ({"ssl.ca.location": "<other>"}, r"certificate verify failed"),
    "plaintext-client": ({"security.protocol": "PLAINTEXT"}, r"the broker closed the connection before answering the first request"),
}


def misconfigured(case: str, settings: Settings, pki: Pki, **changes: object) -> Settings:
    change, _cause = MISCONFIGURED[case]
    properties = client_properties("api", pki.ca_file)
    properties.update({k: (str(pki.other_ca_file) if v == "<other>" else v) for k, v in change.items()})
    if properties["security.protocol"] == "PLAINTEXT":
        properties = {"security.protocol": "PLAINTEXT"}
    return Settings(**{**settings.__dict__, "kafka_properties": properties, **changes})


def log_line(process: ServiceProcess, case: str) -> str:
    cause = MISCONFIGURED[case][1]
    found = eventually(lambda: re.search(f".*({cause}).*", process.log()), timeout=FAILURE_BOUND_S,
                       what=f"a log line saying {cause!r}:\n{process.log()}")
    return found.group(0)[:300]


@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_a_misconfigured_api_is_not_ready_and_says_why(
    case: str, base_settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    started = time.monotonic()
    api = start_api(misconfigured(case, base_settings, pki), tmp_path, wait_ready=False)
    try:
        asked = time.monotonic()
        response = httpx.get(api.url + "/readyz", timeout=FAILURE_BOUND_S)
        answered = time.monotonic() - asked
        assert response.status_code == 503 and response.json()["broker"] is False, response.text
        assert answered < 5, f"/readyz took {answered:.1f} s"
        line = log_line(api, case)
        print(f"\napi, {case}: /readyz 503 in {answered:.2f} s; the log said why {time.monotonic() - started:.1f} s "
              f"after start: {line}")
    finally:
        assert api.stop() is not None


@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_a_misconfigured_consumer_exits_and_says_why(
    case: str, base_settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    """It cannot check its topics at start-up (ensure_topics): it exits, non-zero,
    before it serves /readyz, with the cause in its log; a supervisor restarts it."""
    port = free_port()
    started = time.monotonic()
    consumer = start_consumer(misconfigured(case, base_settings, pki, consumer_metrics_port=port), tmp_path)
    try:
        line = log_line(consumer, case)
        said = time.monotonic() - started
        code = consumer.process.wait(FAILURE_BOUND_S + 15)
        exited = time.monotonic() - started
        assert code != 0
        assert _status(f"http://127.0.0.1:{port}/readyz") == 0, "never served /readyz"
        print(f"\nconsumer, {case}: the log said why {said:.1f} s after start, exited {code} after {exited:.1f} s: {line}")
    finally:
        consumer.stop()


# -- (c) the broker enforces the ACLs ---------------------------------------------

def produce_as(user: str, pki: Pki, settings: Settings, topic: str, value: bytes = b"{}",
               key: bytes = b"k") -> KafkaError | None:
    """Produce one record as ``user``; the delivery error (None: written)."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, **client_properties(user, pki.ca_file),
                         "message.timeout.ms": 10000})
    outcome: list[KafkaError | None] = []
    producer.produce(topic, value, key, on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(15)
    assert outcome, f"no delivery report for {user} on {topic}"
    return outcome[0]


@pytest.mark.parametrize(("user", "topic_of"), [
    ("nobody", lambda s: s.request_topic),
    ("bank", lambda s: s.request_topic),
    ("consumer", lambda s: s.request_topic),
    ("api", lambda s: s.question_events_topic),
    ("api", lambda s: s.reply_topic),
    ("bank", lambda s: s.reply_topic),
], ids=["nobody-requests", "bank-requests", "consumer-requests", "api-question-events", "api-replies",
        "bank-replies"])
def test_a_principal_without_the_acl_is_refused_by_the_broker(
    secured: Secured, base_settings: Settings, pki: Pki, user: str, topic_of: object
) -> None:
    topic = topic_of(base_settings)  # type: ignore[operator]
    error = produce_as(user, pki, base_settings, topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (user, topic, error)


@pytest.mark.parametrize(("user", "topic_of"), [
    ("api", lambda s: s.request_topic),
    ("consumer", lambda s: s.reply_topic),
    ("consumer", lambda s: s.refresh_events_topic),
    ("consumer", lambda s: dlq_topic(s.request_topic)),
    ("consumer", lambda s: dlq_topic(s.question_events_topic)),
    ("bank", lambda s: s.question_events_topic),
], ids=["api-requests", "consumer-replies", "consumer-refresh-events", "consumer-requests-dlq",
        "consumer-question-events-dlq", "bank-question-events"])
def test_a_principal_with_the_acl_may_write(
    secured: Secured, base_settings: Settings, pki: Pki, user: str, topic_of: object
) -> None:
    topic = topic_of(base_settings)  # type: ignore[operator]
    assert produce_as(user, pki, base_settings, topic) is None


def test_a_reply_the_consumers_principal_may_not_write_is_given_up_for_that_caller_alone(
    secured: Secured, base_settings: Settings, pki: Pki, engine: Engine
) -> None:
    """A request (written by the API's principal, the only one that may) whose
    reply_to is a topic the consumer's principal has no ACL on: that reply is
    given up at once (logged with the request id, reason not_authorized), its
    result is at its Location, and the next caller is answered as usual."""
    load(engine, standard_world())
    theirs = f"other-client-{time.monotonic_ns()}.replies"
    ensure_topics(as_user(base_settings, "admin", pki.ca_file), [theirs], partitions=1)
    request_id = f"unwritable-{time.monotonic_ns()}"
    producer = Producer({"bootstrap.servers": base_settings.kafka_bootstrap_servers,
                         **client_properties("api", pki.ca_file)})
    producer.produce(base_settings.request_topic, RefreshRequested(request_id, 7, [12]).to_json(), b"7",
                     headers=[(k, v if isinstance(v, bytes) else (v or "").encode())
                              for k, v in record_headers(request_id, reply_to=theirs)])
    assert producer.flush(15) == 0
    t0 = time.monotonic()
    ok = post(secured.api, {"assessment_ids": [11]})
    waited = time.monotonic() - t0
    print(f"\nnext caller behind an unwritable reply: {ok.status_code} in {waited:.2f} s")
    assert ok.status_code == 200 and waited < OTHERS_BOUND_S, (ok.status_code, waited)
    given_up = eventually(lambda: [line for line in secured.consumer.log().splitlines()
                                   if request_id in line and "given up (not_authorized" in line],
                          timeout=FAILURE_BOUND_S, what="the give-up in the consumer's log")
    assert theirs in given_up[0]
    location = httpx.get(secured.api.url + status_location(request_id), headers=ACME, timeout=30)
    assert location.status_code == 200 and [d["oid"] for d in location.json()["details"]] == [12]


# -- the acls command itself --------------------------------------------------------

def run_acls(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([sys.executable, "-m", "assessment_refresh.cli", "acls", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_the_acls_command_is_idempotent_and_needs_a_principal_that_may_alter_acls(
    base_settings: Settings, pki: Pki
) -> None:
    again = run_acls(as_user(base_settings, "admin", pki.ca_file))  # the fixture granted them already
    assert again.returncode == 0, again.stderr
    assert f"{len(bindings(base_settings, Principals()))} ACL bindings in place" in again.stdout
    refused = run_acls(as_user(base_settings, "nobody", pki.ca_file))
    assert refused.returncode == 1
    assert "the broker refused the ACLs: CLUSTER_AUTHORIZATION_FAILED" in refused.stderr, refused.stderr
