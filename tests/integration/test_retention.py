"""Retention: old inbox and async-request rows go in small batches; nothing a redelivery needs does."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, text

from producer_api import async_results
from shared import inbox
from shared.retention import Pruner
from tests.worlds import load

DAY = 24 * 3600.0
RETENTION = 7 * DAY


def stored(engine: Engine, ids: list[str], *, age_days: float, published: bool) -> None:
    with engine.begin() as conn:
        # With events to publish: a row is unpublished until they are delivered.
        events = [{"type": "assessment.refreshed", "oid": 1}]
        inbox.record_many(conn, inbox.REFRESH_REQUEST, {i: inbox.StoredResult(200, {"ok": True}, events) for i in ids})
        if published:
            inbox.mark_published(conn, ids)
        conn.execute(text("UPDATE processed_messages SET processed_at = now() - make_interval(secs => :age) "
                          "WHERE message_id = ANY(:ids)"), {"age": age_days * DAY, "ids": ids})


def remaining(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT message_id FROM processed_messages")).scalars())


def prune_batch(engine: Engine, batch: int) -> int:
    with engine.begin() as conn:
        return inbox.prune(conn, RETENTION, batch)


def test_a_result_with_nothing_to_publish_is_pruned_after_the_retention(engine: Engine) -> None:
    # An unchanged refresh publishes no event: its row must not wait forever to be "published".
    with engine.begin() as conn:
        inbox.record_many(conn, inbox.REFRESH_REQUEST, {"unchanged": inbox.StoredResult(200, {"ok": True}, []),
                                                        "job": inbox.StoredResult(inbox.IN_PROGRESS, {}, [])})
        conn.execute(text("UPDATE processed_messages SET processed_at = now() - make_interval(secs => :age)"),
                     {"age": 8 * DAY})
    assert prune_batch(engine, 100) == 1
    assert remaining(engine) == {"job"}, "a job in progress still has chunks to send"


def test_only_published_rows_past_the_retention_are_pruned(engine: Engine) -> None:
    stored(engine, ["old-published"], age_days=8, published=True)
    stored(engine, ["old-unpublished"], age_days=8, published=False)  # a redelivery must re-send it
    stored(engine, ["young-published"], age_days=6.9, published=True)  # its message may still come again
    assert prune_batch(engine, 1000) == 1
    assert remaining(engine) == {"old-unpublished", "young-published"}
    with engine.connect() as conn:
        found = inbox.find_many(conn, ["old-unpublished", "young-published"])
    assert set(found) == {"old-unpublished", "young-published"}, "a redelivery still finds its stored result"


def test_pruning_goes_in_batches_until_a_short_one(engine: Engine) -> None:
    stored(engine, [f"old-{i}" for i in range(2500)], age_days=30, published=True)
    stored(engine, ["young"], age_days=1, published=True)
    batches: list[int] = []

    def one_batch() -> int:
        batches.append(prune_batch(engine, 1000))
        return batches[-1]

    assert Pruner("inbox", one_batch, 1000, 3600).prune_now() == 2500
    assert batches == [1000, 1000, 500]
    assert remaining(engine) == {"young"}


def test_a_row_a_handler_holds_is_skipped_not_waited_for(engine: Engine) -> None:
    stored(engine, ["held", "free"], age_days=30, published=True)
    holding, release = threading.Event(), threading.Event()

    def handler() -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1 FROM processed_messages WHERE message_id = 'held' FOR UPDATE"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=handler)
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        assert prune_batch(engine, 1000) == 1
        assert time.monotonic() - started < 2, "the prune did not wait for the handler's lock"
        assert remaining(engine) == {"held"}
    finally:
        release.set()
        thread.join()
    assert prune_batch(engine, 1000) == 1  # the next prune takes it
    assert remaining(engine) == set()


def test_old_async_requests_are_pruned_and_then_unknown(engine: Engine) -> None:
    load(engine, {"companies": [{"id": 7, "name": "Acme", "api_keys": ["acme-retention-key-0123"]}],
                  "questions": [], "assessments": []})
    async_results.record_accepted(engine, "old-request", 7)
    async_results.record_accepted(engine, "young-request", 7)
    with engine.begin() as conn:
        conn.execute(text("UPDATE refresh_requests SET accepted_at = now() - interval '8 days' "
                          "WHERE request_id = 'old-request'"))
    assert async_results.prune(engine, RETENTION, 1000) == 1
    assert async_results.find(engine, "old-request", 7, 60.0) is None
    assert async_results.find(engine, "young-request", 7, 60.0) is not None
