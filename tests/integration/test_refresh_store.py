"""Refresh against a real PostgreSQL: through the handlers (with the inbox) and
through the store (lock_assessments + refresh_locked in the caller's transaction).

docs/design.md#rest-contract (reply), #replacement-rule and #delivery-guarantees
(idempotency, concurrency); the store's promise of a bounded number of statements.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

import consumer.question_handlers as handlers_module
from consumer.handlers import Handlers
from consumer.refresh_rules import NO_ALTERNATIVE
from consumer.refresh_store import ConcurrentBankChange, lock_assessments, refresh_locked
from consumer.unit_of_work import SqlUnitOfWork
from shared.messages import QUESTION_DELETED, QuestionEvent, RefreshReply, RefreshRequested, utc_now_iso
from shared.settings import Settings
from tests.worlds import load, question, slots, standard_changes, standard_world

PY = ("mcq", "python", "medium")
PY_QIDS = set(range(101, 111))


# -- helpers -------------------------------------------------------------------


@pytest.fixture
def handlers(engine: Engine, database_url: str) -> Handlers:
    return Handlers(engine, Settings(database_url=database_url).with_driver())


@pytest.fixture
def changed_world(engine: Engine) -> Engine:
    """standard_world, then standard_changes: in 11, 101 is stale, 102 deleted
    (alternatives exist), 150 deleted (no alternative); 12 and 21 are current."""
    load(engine, standard_world())
    load(engine, standard_changes())
    return engine


def request(company_id: int, ids: list[int] | None, request_id: str | None = None) -> RefreshRequested:
    return RefreshRequested(request_id or str(uuid.uuid4()), company_id, ids)


def outgoing(handled: Any) -> list[Any]:
    """The messages a handler asks to publish (a Handled, or a plain list)."""
    return list(getattr(handled, "outgoing", handled))


def refresh(handlers: Handlers, company_id: int, ids: list[int] | None, request_id: str | None = None) -> tuple[RefreshReply, list[dict[str, Any]]]:
    """Run the REST path's handler; returns the reply and the published refresh events."""
    out = outgoing(handlers.refresh_requested(request(company_id, ids, request_id), reply_to=None))
    replies = [o for o in out if o.topic == handlers.settings.reply_topic]
    assert len(replies) == 1
    events = [json.loads(o.value) for o in out if o.topic == handlers.settings.refresh_events_topic]
    assert len(out) == len(events) + 1
    return RefreshReply.from_json(replies[0].value), events


def delete_event(handlers: Handlers, qid: int, event_id: str | None = None) -> list[dict[str, Any]]:
    """The ``assessment.refreshed`` events of a deletion, checked to be followed by its one summary."""
    out = outgoing(handlers.question_event(QuestionEvent(event_id or str(uuid.uuid4()), QUESTION_DELETED, utc_now_iso(), qid=qid)))
    assert all(o.topic == handlers.settings.refresh_events_topic for o in out)
    events = [json.loads(o.value) for o in out]
    if events:  # a stored result re-sent after it was published sends nothing at all
        *refreshed, summary = events
        assert summary["type"] == "refresh.completed" and summary["changed"] == len(refreshed)
        assert all(e["type"] == "assessment.refreshed" for e in refreshed)
        return refreshed
    return events


def db_state(engine: Engine) -> dict[str, Any]:
    """Everything a refresh may change: slots with snapshots, refreshed_at, the bank."""
    with engine.connect() as conn:
        return {
            "slots": conn.execute(
                text("SELECT oid, section_idx, question_idx, qid, snapshot::text, snapshot_version "
                     "FROM assessment_slots ORDER BY 1, 2, 3")
            ).all(),
            "assessments": conn.execute(text("SELECT oid, company_id, name, refreshed_at FROM assessments ORDER BY oid")).all(),
            "questions": conn.execute(text("SELECT qid, version, deleted, deleted_at FROM questions ORDER BY qid")).all(),
        }


def refreshed_at(engine: Engine, oid: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT refreshed_at FROM assessments WHERE oid = :o"), {"o": oid}).scalar_one()


def bank(engine: Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.qid: r for r in conn.execute(text("SELECT qid, company_id, type, skill, difficulty, content, version, deleted FROM questions"))}


def full_slots(engine: Engine, oid: int) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT section_idx, question_idx, qid, snapshot, snapshot_version FROM assessment_slots "
                 "WHERE oid = :o ORDER BY section_idx, question_idx"),
            {"o": oid},
        ).all()


def assert_slots_match_bank(engine: Engine, oid: int, company_id: int, allowed_deleted: set[int] = frozenset()) -> None:
    """No duplicate qid; every slot holds an active question visible to the company
    (except known failures), with the bank's current content and version."""
    b = bank(engine)
    rows = full_slots(engine, oid)
    qids = [r.qid for r in rows]
    assert len(qids) == len(set(qids)), f"duplicate qids in {oid}: {qids}"
    for r in rows:
        q = b[r.qid]
        if r.qid in allowed_deleted:
            continue
        assert not q.deleted, f"assessment {oid} slot {r.section_idx}/{r.question_idx} holds deleted {r.qid}"
        assert q.company_id in (None, company_id), f"{r.qid} is not visible to company {company_id}"
        assert (r.snapshot, r.snapshot_version) == (q.content, q.version)


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []
    me = threading.get_ident()

    def listener(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if threading.get_ident() == me:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


# -- refresh of one, several, all ------------------------------------------------


def test_refresh_one_assessment(changed_world: Engine, handlers: Handlers) -> None:
    engine = changed_world
    before_12 = slots(engine, 12)

    reply, events = refresh(handlers, 7, [11])

    assert reply.status == 200
    body = reply.body
    assert body["message"] == "Successfully refreshed 1 assessment"
    assert (body["company_id"], body["assessments_updated"]) == (7, 1)
    [detail] = body["details"]
    [replacement] = detail["replacements"]
    new_qid = replacement["new_qid"]
    assert replacement["old_qid"] == 102
    # Same kind, active, visible to company 7 (180 is Globex's), not already in 11.
    assert new_qid in PY_QIDS - {101, 102, 103}
    assert detail == {
        "oid": 11, "name": "Backend L2", "total_questions": 5,
        "questions_refreshed": 1, "refreshed_qids": [101],
        "deleted_questions_replaced": 1, "replacements": [{"old_qid": 102, "new_qid": new_qid}],
        "deleted_questions_not_replaced": 1,
        "replacement_failures": [{"qid": 150, "section_idx": 1, "question_idx": 1, "reason": NO_ALTERNATIVE}],
        "status": "updated",
    }
    assert slots(engine, 11) == [
        (0, 0, 101, 2, "question 101, reworded"),
        (0, 1, new_qid, 1, f"question {new_qid}"),
        (0, 2, 103, 1, "question 103"),
        (1, 0, 160, 1, "question 160"),
        (1, 1, 150, 1, "question 150"),  # no alternative: left as it is
    ]
    assert_slots_match_bank(engine, 11, 7, allowed_deleted={150})
    assert refreshed_at(engine, 11) is not None
    # Not requested: untouched.
    assert slots(engine, 12) == before_12 and refreshed_at(engine, 12) is None
    # One result event for the changed assessment.
    assert [(e["type"], e["oid"], e["company_id"]) for e in events] == [("assessment.refreshed", 11, 7)]
    assert events[0]["detail"] == detail
    assert events[0]["trigger"]["type"] == "request"


def test_second_refresh_reports_unchanged_but_still_reports_failures(changed_world: Engine, handlers: Handlers) -> None:
    refresh(handlers, 7, [11])
    state = db_state(changed_world)

    reply, events = refresh(handlers, 7, [11])

    [detail] = reply.body["details"]
    assert detail["status"] == "unchanged"
    assert (detail["questions_refreshed"], detail["refreshed_qids"]) == (0, [])
    assert (detail["deleted_questions_replaced"], detail["replacements"]) == (0, [])
    assert detail["deleted_questions_not_replaced"] == 1
    assert [f["qid"] for f in detail["replacement_failures"]] == [150]
    assert events == []
    assert db_state(changed_world) == state  # not even refreshed_at moves


def test_refresh_several_assessments_with_duplicate_ids(changed_world: Engine, handlers: Handlers) -> None:
    engine = changed_world
    load(engine, {"questions": [question(161, ("mcq", "sql", "easy"), text_="question 161, v2")]})

    reply, events = refresh(handlers, 7, [12, 11, 12, 11])

    assert reply.status == 200
    body = reply.body
    assert body["assessments_updated"] == 2 == len(body["details"])
    assert body["message"] == "Successfully refreshed 2 assessments"
    assert [d["oid"] for d in body["details"]] == [11, 12]
    d11, d12 = body["details"]
    assert d11["refreshed_qids"] == [101] and len(d11["replacements"]) == 1
    assert d12["refreshed_qids"] == [161] and d12["status"] == "updated"
    assert slots(engine, 12) == [(0, 0, 161, 2, "question 161, v2")]
    assert sorted(e["oid"] for e in events) == [11, 12]
    assert_slots_match_bank(engine, 11, 7, allowed_deleted={150})


@pytest.mark.parametrize("ids", [None, []], ids=["null", "empty"])
def test_refresh_all_assessments_of_the_company(changed_world: Engine, handlers: Handlers, ids: list[int] | None) -> None:
    engine = changed_world
    # 104 (used by Globex's 21) is reworded: company 7's refresh must not touch 21.
    load(engine, {"questions": [question(104, PY, text_="question 104, v2")]})
    before_21 = slots(engine, 21)

    reply, events = refresh(handlers, 7, ids)

    body = reply.body
    assert reply.status == 200
    assert [d["oid"] for d in body["details"]] == [11, 12]
    assert [d["status"] for d in body["details"]] == ["updated", "unchanged"]
    assert [e["oid"] for e in events] == [11]
    assert slots(engine, 21) == before_21 and refreshed_at(engine, 21) is None
    assert_slots_match_bank(engine, 11, 7, allowed_deleted={150})

    reply, _ = refresh(handlers, 8, ids)
    [d21] = reply.body["details"]
    assert (d21["oid"], d21["refreshed_qids"], d21["status"]) == (21, [104], "updated")
    assert_slots_match_bank(engine, 21, 8)


def test_refresh_all_of_a_company_without_assessments(changed_world: Engine, handlers: Handlers) -> None:
    load(changed_world, {"companies": [{"id": 9, "name": "Empty", "api_keys": []}]})
    reply, events = refresh(handlers, 9, None)
    assert (reply.status, reply.body["assessments_updated"], reply.body["details"], events) == (200, 0, [], [])


def test_store_refresh_in_callers_transaction_rolls_back_with_it(changed_world: Engine) -> None:
    engine = changed_world
    state = db_state(engine)

    with engine.connect() as conn:
        tx = conn.begin()
        plans = refresh_locked(conn, lock_assessments(conn, 7, [11, 12]))
        assert [p.oid for p in plans] == [11, 12]
        assert plans[0].changed and not plans[1].changed
        tx.rollback()
    assert db_state(engine) == state  # the caller owns the transaction

    with engine.begin() as conn:
        plans = refresh_locked(conn, lock_assessments(conn, 7, [11]))
    assert plans[0].report()["refreshed_qids"] == [101]
    assert_slots_match_bank(engine, 11, 7, allowed_deleted={150})


# -- 403 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "offending"),
    [
        ([21], [21]),                      # another company's
        ([999], [999]),                    # unknown
        ([11, 21, 999, 21, 999, 12], [21, 999]),  # mixed with own ids, duplicates
        ([2**63, 11], [2**63]),           # beyond bigint: cannot exist
    ],
    ids=["other-company", "unknown", "mixed-duplicates", "huge"],
)
def test_ids_not_owned_give_403_and_change_nothing(changed_world: Engine, handlers: Handlers, ids: list[int], offending: list[int]) -> None:
    state = db_state(changed_world)

    reply, events = refresh(handlers, 7, ids)

    assert reply.status == 403
    assert reply.body == {"error": f"Assessment IDs do not belong to company or do not exist: {offending}"}
    assert events == []
    assert db_state(changed_world) == state


def test_store_403_names_only_offending_ids_sorted(changed_world: Engine) -> None:
    from consumer.refresh_store import AssessmentsNotOwned

    with changed_world.begin() as conn, pytest.raises(AssessmentsNotOwned) as caught:
        lock_assessments(conn, 8, [12, 21, 11, 404, 12])
    assert caught.value.ids == [11, 12, 404]


# -- redelivery (inbox) ------------------------------------------------------------


def test_redelivered_request_returns_the_stored_reply_and_changes_nothing(changed_world: Engine, handlers: Handlers) -> None:
    engine = changed_world
    request_id = str(uuid.uuid4())
    first = outgoing(handlers.refresh_requested(request(7, [11], request_id), reply_to="replies.of.replica-a"))
    slots_after_first = slots(engine, 11)

    # Meanwhile the bank changes: a real re-run would refresh 103 now.
    load(engine, {"questions": [question(103, PY, text_="question 103, v2")]})
    state = db_state(engine)
    again = outgoing(handlers.refresh_requested(request(7, [11], request_id), reply_to="replies.of.replica-a"))

    def decoded(out: list[Any]) -> list[Any]:
        return [(o.topic, o.key, json.loads(o.value), o.headers) for o in out]

    assert decoded(again) == decoded(first)
    assert first[-1].topic == "replies.of.replica-a"
    assert json.loads(first[-1].value)["body"]["details"][0]["refreshed_qids"] == [101]
    assert db_state(engine) == state
    assert slots(engine, 11) == slots_after_first
    assert [s for s in slots(engine, 11) if s[2] == 103] == [(0, 2, 103, 1, "question 103")]

    # A fresh request id does refresh.
    reply, _ = refresh(handlers, 7, [11])
    assert reply.body["details"][0]["refreshed_qids"] == [103]


def test_redelivery_then_fresh_request_reports_unchanged(changed_world: Engine, handlers: Handlers) -> None:
    engine = changed_world
    request_id = str(uuid.uuid4())
    first_reply, first_events = refresh(handlers, 7, None, request_id)
    state = db_state(engine)

    again_reply, again_events = refresh(handlers, 7, None, request_id)

    assert again_reply == first_reply
    assert again_events == first_events  # the same event ids: not new events
    assert db_state(engine) == state

    fresh_reply, fresh_events = refresh(handlers, 7, None)
    assert [d["status"] for d in fresh_reply.body["details"]] == ["unchanged", "unchanged"]
    assert fresh_events == []
    assert db_state(engine) == state


def test_redelivered_403_is_the_same_403(changed_world: Engine, handlers: Handlers) -> None:
    request_id = str(uuid.uuid4())
    first, _ = refresh(handlers, 7, [21], request_id)
    # Even if 21 now belonged to company 7, the stored answer is re-sent.
    with changed_world.begin() as conn:
        conn.execute(text("UPDATE assessments SET company_id = 7 WHERE oid = 21"))
    again, _ = refresh(handlers, 7, [21], request_id)
    assert again == first and again.status == 403


# -- bounded number of statements ----------------------------------------------------


def _scaling_world(small: int, large: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Company 7 with ``small`` assessments, company 8 with ``large``. Each uses a
    few PY questions (some go stale, some get deleted, alternatives 1010-1019
    stay free) and one rare question that is deleted without alternative."""
    rare = ("coding", "rust", "hard")
    world = {
        "companies": [{"id": 7, "name": "Small", "api_keys": []}, {"id": 8, "name": "Large", "api_keys": []}],
        "questions": [*(question(q, PY) for q in range(1000, 1020)), question(2000, rare)],
        "assessments": [],
    }
    for company, oids in ((7, range(1, small + 1)), (8, range(1001, 1001 + large))):
        for oid in oids:
            base = oid % 10
            world["assessments"].append({
                "oid": oid, "company_id": company, "name": f"A{oid}",
                "sections": [
                    {"name": "Python", "qids": [1000 + base, 1000 + (base + 3) % 10, 1000 + (base + 6) % 10]},
                    {"name": "Rust", "qids": [2000]},
                ],
            })
    changes = {
        "questions": [
            *(question(q, PY, text_=f"question {q}, v2") for q in range(1000, 1005)),
            *(question(q, PY, deleted=True) for q in range(1005, 1008)),
            question(2000, rare, deleted=True),
        ]
    }
    return world, changes


def test_statement_count_does_not_grow_with_the_number_of_assessments(engine: Engine, handlers: Handlers) -> None:
    world, changes = _scaling_world(5, 200)
    load(engine, world)
    load(engine, changes)

    results = {}
    for company in (7, 8):
        with count_statements(engine) as statements:
            reply, events = refresh(handlers, company, None)
        results[company] = (statements, reply, events)

    small, large = results[7], results[8]
    assert len(small[1].body["details"]) == 5 and len(large[1].body["details"]) == 200
    # Real work was done at both sizes: every assessment had stale and deleted questions.
    for _, reply, events in (small, large):
        assert all(d["status"] == "updated" for d in reply.body["details"])
        assert all(d["questions_refreshed"] >= 1 for d in reply.body["details"])
        assert sum(d["deleted_questions_replaced"] for d in reply.body["details"]) > 0
        assert all(d["deleted_questions_not_replaced"] == 1 for d in reply.body["details"])
        assert len(events) == len(reply.body["details"])
    assert len(small[0]) == len(large[0]), (small[0], large[0])
    assert len(large[0]) <= 10, large[0]
    for oid in (1, 5, 1001, 1100, 1200):
        assert_slots_match_bank(engine, oid, 7 if oid < 1000 else 8, allowed_deleted={2000})


def test_store_refresh_costs_at_most_five_statements(engine: Engine) -> None:
    world, changes = _scaling_world(3, 150)
    load(engine, world)
    load(engine, changes)

    counted = []
    for company in (7, 8):
        with engine.begin() as conn, count_statements(engine) as statements:
            plans = refresh_locked(conn, lock_assessments(conn, company, None))
        assert all(p.changed for p in plans)
        counted.append(len(statements))
    assert counted[0] == counted[1] <= 5, counted

    # Nothing to do: even fewer (no candidates, no updates).
    with engine.begin() as conn, count_statements(engine) as statements:
        plans = refresh_locked(conn, lock_assessments(conn, 8, None))
    assert not any(p.changed for p in plans)
    assert len(statements) <= 3


# -- concurrency ---------------------------------------------------------------------


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Start the calls at the same moment on separate threads (each takes its own
    pooled connection); return results, re-raising the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a refresh hung (deadlock?)"
    if errors:
        raise errors[0]
    return results


def with_retry(call: Callable[[], Any]) -> Callable[[], Any]:
    """The worker retries ConcurrentBankChange; so do we."""
    def run() -> Any:
        for _ in range(5):
            try:
                return call()
            except ConcurrentBankChange:
                continue
        raise AssertionError("still ConcurrentBankChange after 5 attempts")
    return run


def replacements_reported(replies: list[RefreshReply], events: list[dict[str, Any]], oid: int) -> list[dict[str, int]]:
    out = []
    for reply in replies:
        for d in reply.body.get("details", []):
            if d["oid"] == oid:
                out.extend(d["replacements"])
    for e in events:
        if e["oid"] == oid:
            out.extend(e["detail"]["replacements"])
    return out


@pytest.mark.parametrize("round_", range(6))
def test_rest_refresh_and_deletion_event_race_never_double_replace(changed_world: Engine, handlers: Handlers, round_: int) -> None:
    engine = changed_world

    (reply, rest_events), event_events = run_together(
        with_retry(lambda: refresh(handlers, 7, [11])),
        with_retry(lambda: delete_event(handlers, 103)),
    )

    assert reply.status == 200
    reported = replacements_reported([reply], event_events, 11)
    assert Counter(r["old_qid"] for r in reported) == Counter({102: 1, 103: 1}), reported
    final = {row[2] for row in slots(engine, 11)}
    assert {r["new_qid"] for r in reported} <= final
    assert not ({102, 103} & final)
    assert_slots_match_bank(engine, 11, 7, allowed_deleted={150})
    # And a refresh afterwards finds nothing left to do.
    after, _ = refresh(handlers, 7, [11])
    assert after.body["details"][0]["status"] == "unchanged"


@pytest.mark.parametrize("round_", range(4))
def test_two_rest_refreshes_of_one_assessment_race(changed_world: Engine, handlers: Handlers, round_: int) -> None:
    engine = changed_world

    (a, _), (b, _) = run_together(
        with_retry(lambda: refresh(handlers, 7, [11])),
        with_retry(lambda: refresh(handlers, 7, None)),
    )

    reported = replacements_reported([a, b], [], 11)
    assert [r["old_qid"] for r in reported] == [102]
    refreshed = [q for r in (a, b) for d in r.body["details"] if d["oid"] == 11 for q in d["refreshed_qids"]]
    assert refreshed == [101]
    assert sorted(d["status"] for r in (a, b) for d in r.body["details"] if d["oid"] == 11) == ["unchanged", "updated"]
    assert_slots_match_bank(engine, 11, 7, allowed_deleted={150})


def test_deleting_the_replacement_a_refresh_is_choosing_leaves_no_deleted_question(
    changed_world: Engine, handlers: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REST refresh picks X to replace 102 while a question.deleted event for X
    is in flight (X marked deleted, its users looked up, not yet committed).
    Afterwards assessment 11 must not hold the deleted X: either the refresh
    sees X deleted, or the event's automatic refresh replaces X (section 5:
    concurrent refreshes never lose an update)."""
    engine = changed_world
    with engine.connect() as conn:  # what the refresh will pick, then forget it
        tx = conn.begin()
        [plan] = refresh_locked(conn, lock_assessments(conn, 7, [11]))
        tx.rollback()
    x = plan.replacements[0]["new_qid"]

    event_looked_up_users = threading.Event()
    rest_done = threading.Event()
    real_lock_by_oids = handlers_module.lock_by_oids

    def rest_is_waiting_for_a_lock() -> bool:
        with engine.connect() as watcher:
            return bool(watcher.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )).scalar_one())

    def slow_lock_by_oids(conn, oids):  # noqa: ANN001
        # The event has marked X deleted and looked up its users: hold the
        # transaction open until the REST refresh is done or blocked on us.
        if threading.current_thread().name == "deleter":
            event_looked_up_users.set()
            deadline = time.monotonic() + 10
            while not rest_done.is_set() and not rest_is_waiting_for_a_lock() and time.monotonic() < deadline:
                time.sleep(0.02)
        return real_lock_by_oids(conn, oids)

    monkeypatch.setattr(handlers_module, "lock_by_oids", slow_lock_by_oids)
    deleter_result: list[Any] = []
    deleter = threading.Thread(
        target=lambda: deleter_result.append(delete_event(handlers, x)), name="deleter"
    )
    deleter.start()
    try:
        assert event_looked_up_users.wait(timeout=20)
        try:
            # Like the worker: on ConcurrentBankChange, back off and retry. The
            # first conflict also lets the deleter go on and commit.
            for _attempt in range(50):
                try:
                    reply, _ = refresh(handlers, 7, [11])
                    break
                except ConcurrentBankChange:
                    rest_done.set()
                    time.sleep(0.1)
            else:
                raise AssertionError("the refresh never got past the concurrent deletion")
        finally:
            rest_done.set()
    finally:
        deleter.join(timeout=30)
    assert not deleter.is_alive()
    assert bank(engine)[x].deleted

    reported = replacements_reported([reply], deleter_result[0], 11)
    assert [r["old_qid"] for r in reported].count(102) == 1
    # The bug would leave the deleted X in 11 with nobody reporting it.
    assert_slots_match_bank(engine, 11, 7, allowed_deleted={150})


# -- question.deleted across companies -----------------------------------------------


def _two_company_world() -> dict[str, Any]:
    kind = ("mcq", "go", "hard")
    return {
        "companies": [{"id": 7, "name": "Acme", "api_keys": []}, {"id": 8, "name": "Globex", "api_keys": []}],
        "questions": [
            question(500, kind),                 # public, used by both, to be deleted
            question(501, kind, deleted=True),   # public but deleted: no alternative
            question(570, kind, company_id=7),   # the only alternative for Acme
            question(580, kind, company_id=8),   # the only alternative for Globex
            question(600, PY), question(601, PY),
        ],
        "assessments": [
            {"oid": 71, "company_id": 7, "name": "Acme Go", "sections": [{"name": "Go", "qids": [600, 500]}]},
            {"oid": 72, "company_id": 7, "name": "Acme other", "sections": [{"name": "Py", "qids": [601]}]},
            {"oid": 81, "company_id": 8, "name": "Globex Go", "sections": [{"name": "Go", "qids": [500]}, {"name": "Py", "qids": [600]}]},
        ],
    }


def test_question_deleted_event_replaces_in_every_company_with_visible_questions(engine: Engine, handlers: Handlers) -> None:
    load(engine, _two_company_world())
    before_72 = slots(engine, 72)
    event_id = str(uuid.uuid4())

    events = delete_event(handlers, 500, event_id)

    assert bank(engine)[500].deleted
    assert slots(engine, 71) == [(0, 0, 600, 1, "question 600"), (0, 1, 570, 1, "question 570")]
    assert slots(engine, 81) == [(0, 0, 580, 1, "question 580"), (1, 0, 600, 1, "question 600")]
    assert slots(engine, 72) == before_72
    assert_slots_match_bank(engine, 71, 7)
    assert_slots_match_bank(engine, 81, 8)
    assert sorted((e["oid"], e["company_id"]) for e in events) == [(71, 7), (81, 8)]
    by_oid = {e["oid"]: e for e in events}
    assert by_oid[71]["detail"]["replacements"] == [{"old_qid": 500, "new_qid": 570}]
    assert by_oid[81]["detail"]["replacements"] == [{"old_qid": 500, "new_qid": 580}]
    for e in events:
        assert e["type"] == "assessment.refreshed"
        assert e["trigger"] == {"type": QUESTION_DELETED, "event_id": event_id, "qid": 500}
        assert e["detail"]["status"] == "updated"
    assert len({e["event_id"] for e in events}) == 2

    # The same event again (redelivery): the same events, nothing new in the DB,
    # even though the bank changed in between (570 is now stale).
    load(engine, {"questions": [question(570, ("mcq", "go", "hard"), company_id=7, text_="question 570, v2")]})
    state = db_state(engine)
    again = delete_event(handlers, 500, event_id)
    assert again == events
    assert db_state(engine) == state

    # A new event (new id) for the already deleted question finds nothing to replace.
    assert delete_event(handlers, 500) == []
    assert db_state(engine)["slots"] == state["slots"]


def test_question_deleted_event_without_alternative_reports_no_change(engine: Engine, handlers: Handlers) -> None:
    world = _two_company_world()
    world["questions"] = [q for q in world["questions"] if q["qid"] not in (570, 580)]
    load(engine, world)
    before = {oid: slots(engine, oid) for oid in (71, 81)}

    events = delete_event(handlers, 500)

    assert events == []  # nothing changed: no result events
    assert {oid: slots(engine, oid) for oid in (71, 81)} == before
    assert bank(engine)[500].deleted
    # A REST refresh reports the failure where it is.
    reply, _ = refresh(handlers, 8, [81])
    assert reply.body["details"][0]["replacement_failures"] == [
        {"qid": 500, "section_idx": 0, "question_idx": 0, "reason": NO_ALTERNATIVE}
    ]


def test_question_deleted_event_for_unknown_question_changes_nothing(engine: Engine, handlers: Handlers) -> None:
    load(engine, _two_company_world())
    state = db_state(engine)
    assert delete_event(handlers, 424242) == []
    assert db_state(engine) == state


# -- redelivery after the results were published ---------------------------------------


def mark_published(engine: Engine, message_ids: list[str]) -> None:
    """What the worker does once a message's results are delivered."""
    with SqlUnitOfWork(engine) as uow:
        uow.mark_published(message_ids)
        uow.commit()


def test_redelivery_after_publishing_resends_the_reply_but_not_the_events(changed_world: Engine, handlers: Handlers) -> None:
    """Once the worker marked a message's results delivered, a redelivery re-sends
    only the reply (a caller may still wait), never the result events again."""
    request_id = str(uuid.uuid4())
    first_reply, first_events = refresh(handlers, 7, [11], request_id)
    assert [e["oid"] for e in first_events] == [11]
    mark_published(changed_world, [request_id])
    state = db_state(changed_world)

    again_reply, again_events = refresh(handlers, 7, [11], request_id)

    assert again_reply == first_reply
    assert again_events == []
    assert db_state(changed_world) == state


def test_question_event_redelivery_after_publishing_sends_nothing(engine: Engine, handlers: Handlers) -> None:
    load(engine, _two_company_world())
    event_id = str(uuid.uuid4())
    assert len(delete_event(handlers, 500, event_id)) == 2
    mark_published(engine, [event_id])
    state = db_state(engine)

    assert delete_event(handlers, 500, event_id) == []
    assert db_state(engine) == state
