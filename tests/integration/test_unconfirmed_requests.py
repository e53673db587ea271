"""The Location of a request whose delivery was not confirmed
(producer_api/async_results.py): pending, then "never received" once the
bound has passed without a result, and the result whenever one comes."""

from __future__ import annotations

from sqlalchemy import Engine, text

from producer_api import async_results
from shared import inbox
from tests.worlds import load

BOUND_S = 60.0


def company(engine: Engine) -> None:
    load(engine, {"companies": [{"id": 7, "name": "Acme", "api_keys": ["acme-unconfirmed-key-0123"]}],
                  "questions": [], "assessments": []})


def age(engine: Engine, request_id: str, seconds: float) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE refresh_requests SET accepted_at = now() - make_interval(secs => :age) "
                          "WHERE request_id = :id"), {"age": seconds, "id": request_id})


def test_an_unconfirmed_request_is_pending_then_never_received(engine: Engine) -> None:
    company(engine)
    async_results.record_accepted(engine, "unconfirmed", 7, delivery_confirmed=False)
    assert async_results.find(engine, "unconfirmed", 7, BOUND_S) == async_results.StoredOutcome(None, None)
    age(engine, "unconfirmed", BOUND_S + 1)
    found = async_results.find(engine, "unconfirmed", 7, BOUND_S)
    assert found is not None and not found.received and found.status is None
    assert async_results.find(engine, "unconfirmed", 8, BOUND_S) is None, "another company's id stays unknown"


def test_a_confirmed_request_stays_pending_however_long_it_takes(engine: Engine) -> None:
    company(engine)
    async_results.record_accepted(engine, "confirmed", 7)
    age(engine, "confirmed", BOUND_S * 100)
    assert async_results.find(engine, "confirmed", 7, BOUND_S) == async_results.StoredOutcome(None, None)


def test_a_result_that_comes_after_the_bound_still_wins(engine: Engine) -> None:
    company(engine)
    async_results.record_accepted(engine, "late", 7, delivery_confirmed=False)
    age(engine, "late", BOUND_S + 1)
    with engine.begin() as conn:
        inbox.record_many(conn, inbox.REFRESH_REQUEST, {"late": inbox.StoredResult(200, {"ok": True}, [])},
                          company_ids={"late": 7})
    assert async_results.find(engine, "late", 7, BOUND_S) == async_results.StoredOutcome(200, {"ok": True})


def test_async_mode_marks_its_accepted_request_unconfirmed(engine: Engine) -> None:
    company(engine)
    async_results.record_accepted(engine, "async", 7)
    async_results.mark_unconfirmed(engine, "async")
    age(engine, "async", BOUND_S + 1)
    found = async_results.find(engine, "async", 7, BOUND_S)
    assert found is not None and not found.received
