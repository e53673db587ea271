"""A request the broker refuses is certainly not written: 503 at once, with
its request id, and nothing recorded (producer_api/delivery.py).

The broker refuses it here because the request topic takes no record larger
than 100 bytes (``max.message.bytes``): the produce is answered
MESSAGE_TOO_LARGE, a refusal of the record itself, which librdkafka does not
retry. (Its opposite, a delivery not confirmed in time, is 504: the leader
failover of tests/faults/test_kafka_failover.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, text

from shared.kafka import admin_config
from tests.conftest import unique_settings
from tests.processes import start_api
from tests.worlds import load, standard_world

pytestmark = pytest.mark.e2e

PATH = "/assessments/refresh-assessments"
ACME = {"apiKey": "acme-key-0123456789"}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_request_the_broker_refuses_is_503_and_nothing_is_recorded(
    mode: str, database_url: str, bootstrap_servers: str, engine: Engine, log_dir: Path
) -> None:
    load(engine, standard_world())
    settings = unique_settings(database_url, bootstrap_servers, topic_partitions=1)
    if settings.broker_profile != "kafka":
        pytest.skip("Tansu does not enforce max.message.bytes")
    admin = AdminClient(admin_config(settings))
    for future in admin.create_topics([NewTopic(settings.request_topic, num_partitions=1, replication_factor=-1,
                                                config={"max.message.bytes": "100"})]).values():
        future.result(timeout=30)
    api = start_api(settings, log_dir, name=f"api-refused-{mode}")
    headers = {**ACME, **({"Prefer": "respond-async"} if mode == "async" else {})}
    try:
        started = time.monotonic()
        response = httpx.post(api.url + PATH, json={"assessment_ids": [11]}, headers=headers, timeout=30)
        waited = time.monotonic() - started
        assert response.status_code == 503, response.text
        body = response.json()
        assert "not sent" in body["error"] and len(body["request_id"]) == 36, body
        assert "location" not in response.headers
        assert waited < 5, f"answered after {waited:.1f} s"
        with engine.connect() as conn:
            recorded = conn.execute(text("SELECT count(*) FROM refresh_requests WHERE request_id = :id"),
                                    {"id": body["request_id"]}).scalar_one()
        assert recorded == 0, "a request that was not sent is not pending"
        status = httpx.get(api.url + f"/assessments/refresh-requests/{body['request_id']}", headers=ACME, timeout=10)
        assert status.status_code == 404
    finally:
        api.stop()
