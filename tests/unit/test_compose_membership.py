"""docker-compose.yml gives each consumer replica a static member id of its own (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.setting_checks import check_settings, check_together

ROOT = Path(__file__).resolve().parents[2]


def test_each_consumer_replica_is_a_static_member_of_its_own() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    consumers = {name: s["environment"] for name, s in services.items() if s.get("command") == ["consumer"]}
    assert len(consumers) >= 2
    ids = [env["CONSUMER_INSTANCE_ID"] for env in consumers.values()]
    assert len(set(ids)) == len(ids), f"one instance id per replica: {ids}"
    for env in consumers.values():
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", "the shared environment is kept, not replaced"
        values = {"consumer_instance_id": env["CONSUMER_INSTANCE_ID"], "kafka_group_protocol": env["KAFKA_GROUP_PROTOCOL"]}
        check_settings(values)
        check_together(values)
