"""A reply that cannot be delivered is its caller's problem alone (DESIGN's
delivery guarantees, docs/kafka-interface.md): on the session's broker, which
creates no topics by itself. The same on a broker that does: tests/faults/
test_undeliverable_reply_autocreate.py. The scenario is tests/reply_stall.py."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests import reply_stall
from tests.processes import ServiceProcess

pytestmark = pytest.mark.e2e


def test_a_reply_to_a_missing_or_own_topic_holds_no_one_else_up(
    service: ServiceProcess, service_settings: Settings, engine: Engine, log_dir: object
) -> None:
    outcome, bad_id = reply_stall.run(service_settings, service, engine)
    print(f"\nUNDELIVERABLE-REPLY broker=session {outcome.figures()}")
    consumer_log = (service.log_path.parent / "consumer.log").read_text(errors="replace")
    reply_stall.check(outcome, consumer_log, bad_id)
