"""The broker the tests prove the product on is the broker production runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from assessment_refresh.apache_kafka import kafka_version

ROOT = Path(__file__).resolve().parents[2]


def test_local_apache_kafka_is_the_version_docker_compose_runs() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["kafka"]["image"]
    match = re.fullmatch(r"apache/kafka:(\S+)", image)
    assert match, f"docker-compose.yml's kafka service runs {image!r}, not an apache/kafka image"
    assert match.group(1) == kafka_version(), (
        f"docker-compose.yml runs Apache Kafka {match.group(1)} but the tests, the benchmark and "
        f"`dev --broker kafka` run {kafka_version()} (assessment_refresh/apache_kafka/pom.xml)"
    )


def test_the_pinned_version_is_one_maven_central_serves_as_a_release() -> None:
    assert re.fullmatch(r"4\.\d+\.\d+", kafka_version()), "a Kafka 4.x release (KRaft only, KIP-848 groups)"
