"""The undeliverable-reply scenario (tests/reply_stall.py) on an Apache Kafka
of its own with the stock ``auto.create.topics.enable=true``: the service's
replies still create no topic, and no other caller waits behind the bad one."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from assessment_refresh.apache_kafka import ApacheKafka
from tests import reply_stall
from tests.conftest import unique_settings
from tests.faults.harness import logs_on_failure, process_logs, skip_without_apache_kafka
from tests.processes import ServiceProcess, start_api, start_consumer

pytestmark = pytest.mark.faults


def test_on_a_broker_that_auto_creates_topics_a_missing_reply_topic_holds_no_one_else_up(
    database_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_without_apache_kafka()
    monkeypatch.setenv("BROKER_PROFILE", "kafka")  # this node is Apache Kafka, whatever the session's broker is
    with ApacheKafka(extra_settings={"auto.create.topics.enable": "true"}) as kafka:
        settings = unique_settings(database_url, kafka.bootstrap_servers)
        processes: list[ServiceProcess] = []
        with logs_on_failure(process_logs(processes)):
            try:
                processes.append(start_consumer(settings, tmp_path))
                api = start_api(settings, tmp_path)
                processes.append(api)
                outcome, bad_id = reply_stall.run(settings, api, engine)
            finally:
                for process in processes:
                    process.stop()
            print(f"\nUNDELIVERABLE-REPLY broker=auto-create {outcome.figures()}")
            reply_stall.check(outcome, processes[0].log(), bad_id)
