"""Previews (dry_run) on PostgreSQL: the report the refresh then gives, and no change at all."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, text

from consumer.handlers import Handlers
from consumer.unit_of_work import Outcome
from shared import inbox
from shared.messages import RefreshReply, RefreshRequested
from shared.settings import Settings
from tests.worlds import load, standard_changes, standard_world


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url).with_driver()


def dump(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table (the slots' snapshots, the inbox, jobs, history...)."""
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                   "AND tablename <> 'alembic_version' ORDER BY 1")).scalars().all()
        return {t: sorted(conn.execute(text(f'SELECT to_jsonb(r)::text FROM "{t}" r')).scalars()) for t in tables}


def answer(outcome: Outcome, settings: Settings) -> tuple[int, dict[str, Any]]:
    replies = [m for m in outcome.outgoing if m.topic == settings.reply_topic]
    assert len(replies) == 1 and len(outcome.outgoing) == 1, "a preview publishes its reply and nothing else"
    reply = RefreshReply.from_json(replies[0].value)
    return reply.status, reply.body


def as_refresh(preview: dict[str, Any]) -> dict[str, Any]:
    """What the refresh's report says where the preview says it would."""
    details = [{**d, "status": "updated" if d["status"] == "would_update" else d["status"]} for d in preview["details"]]
    return {k: v for k, v in preview.items() if k not in ("dry_run", "message", "details")} | {"details": details}


def test_a_preview_changes_nothing_and_the_refresh_then_does_what_it_said(engine: Engine, settings: Settings) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    before = dump(engine)
    preview = RefreshRequested(str(uuid.uuid4()), 7, None, dry_run=True)
    status, body = answer(Handlers(engine, settings).refresh_requested(preview), settings)
    assert status == 200 and body["dry_run"] is True
    assert [(d["oid"], d["status"]) for d in body["details"]] == [(11, "would_update"), (12, "unchanged")]
    assert body["details"][0]["deleted_questions_replaced"] == 1
    assert dump(engine) == before

    # Redelivered: previewed again, never turned into a refresh, still nothing stored.
    assert answer(Handlers(engine, settings).refresh_requested(preview), settings) == (status, body)
    assert dump(engine) == before

    refresh = Handlers(engine, settings).refresh_requested(RefreshRequested(str(uuid.uuid4()), 7, None))
    reply = RefreshReply.from_json([m for m in refresh.outgoing if m.topic == settings.reply_topic][0].value)
    assert {k: v for k, v in reply.body.items() if k != "message"} == as_refresh(body)
    assert dump(engine) != before


def test_a_preview_of_another_companys_ids_is_403_and_a_request_reusing_its_id_refreshes(
    engine: Engine, settings: Settings
) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    request_id = str(uuid.uuid4())
    status, body = answer(Handlers(engine, settings).refresh_requested(
        RefreshRequested(request_id, 8, [11, 21], dry_run=True)), settings)
    assert (status, body) == (403, {"error": "Assessment IDs do not belong to company or do not exist: [11]"})
    status, body = answer(Handlers(engine, settings).refresh_requested(
        RefreshRequested(request_id, 7, [11], dry_run=True)), settings)
    assert status == 200 and body["details"][0]["status"] == "would_update"
    # The same id as a real request afterwards: refreshed, not answered from the preview.
    refresh = Handlers(engine, settings).refresh_requested(RefreshRequested(request_id, 7, [11]))
    reply = RefreshReply.from_json([m for m in refresh.outgoing if m.topic == settings.reply_topic][0].value)
    assert reply.body["details"][0]["status"] == "updated" and "dry_run" not in reply.body


def test_a_large_preview_is_planned_in_chunks_and_a_large_report_is_claim_checked(
    engine: Engine, settings: Settings
) -> None:
    load(engine, standard_world())
    load(engine, standard_changes())
    small = replace(settings, refresh_chunk_size=1, reply_inline_max_bytes=200)
    before = dump(engine)
    preview = RefreshRequested(str(uuid.uuid4()), 7, None, dry_run=True)
    outcome = Handlers(engine, small).refresh_requested(preview)
    assert [m.topic for m in outcome.outgoing] == [small.reply_topic], "no chunk on the work topic"
    reply = RefreshReply.from_json(outcome.outgoing[0].value)
    assert reply.result_location is not None and "details" not in reply.body
    with engine.connect() as conn:
        stored = inbox.preview_result(conn, preview.request_id, 7)
        assert inbox.refresh_result(conn, preview.request_id, 7) is None  # never a request's result
    assert stored is not None and [d["oid"] for d in stored["details"]] == [11, 12]
    after = dump(engine)
    assert {t: rows for t, rows in after.items() if t != "processed_messages"} == \
        {t: rows for t, rows in before.items() if t != "processed_messages"}
    # The chunked preview agrees with the one-transaction refresh.
    refresh = Handlers(engine, settings).refresh_requested(RefreshRequested(str(uuid.uuid4()), 7, None))
    body = RefreshReply.from_json(refresh.outgoing[-1].value).body
    assert {k: v for k, v in body.items() if k != "message"} == as_refresh(stored)
