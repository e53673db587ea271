"""The delivery contract of the poll loop (docs/design.md#delivery-guarantees), with in-memory
fakes of the consumer, the producer and the database (the real ones are in
tests/e2e): at least once, effects once, growing backoff, and what is given
up when. The request handler is the real one (consumer/refresh_handler.py)
with its two SQL calls replaced; its inbox logic runs on a fake inbox."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from sqlalchemy.exc import OperationalError

import consumer.faults as faults
import consumer.refresh_handler as refresh_handler
from consumer.bus import Handler
from consumer.consumer_metrics import REPLIES_UNDELIVERABLE
from consumer.handlers import handlers
from consumer.outgoing import Outgoing
from consumer.refresh_store import AssessmentsNotOwned
from consumer.retry import RetryPolicy
from consumer.unit_of_work import REPLAY, InboxPolicy, UnitOfWork
from consumer.worker import Worker
from shared.inbox import StoredResult
from shared.messages import QuestionDeleted, QuestionEvent, QuestionUpserted, RefreshRequested
from shared.settings import Settings

S = Settings()
THEIR_REPLIES = "their.replies"


# -- fakes --------------------------------------------------------------------


class Record:
    def __init__(self, topic: str, value: bytes | None, offset: int, headers: list[tuple[str, bytes]] | None = None):
        self._topic, self._value, self._offset, self._headers = topic, value, offset, headers or []

    def topic(self) -> str: return self._topic
    def partition(self) -> int: return 0
    def offset(self) -> int: return self._offset
    def key(self) -> bytes: return b"k"
    def value(self) -> bytes | None: return self._value
    def headers(self) -> list[tuple[str, bytes]]: return self._headers
    def error(self) -> None: return None


class FakeConsumer:
    """Hands out the batches, then stops the worker."""

    def __init__(self, batches: list[list[Record]], worker: Worker, log: list[Any]):
        self.batches, self.worker, self.log, self.stored, self._rest = list(batches), worker, log, [], []

    def poll(self, _timeout: float) -> Record | None:
        if not self.batches:
            self.worker.stopping.set()
            return None
        self._rest = list(self.batches.pop(0))
        return self._rest.pop(0)

    def consume(self, num_messages: int, timeout: float) -> list[Record]:
        rest, self._rest = self._rest, []
        return rest

    def store_offsets(self, message: Record) -> None:
        self.stored.append(message.offset())
        self.log.append(("stored", message.offset()))

    def close(self) -> None:
        pass


class FakeProducer:
    """Delivers everything, after failing ``fail_rounds`` flushes with ``error``."""

    def __init__(self, log: list[Any], fail_rounds: int = 0, error: int = KafkaError._TRANSPORT):
        self.sent: list[Outgoing] = []
        self.log, self.fail_rounds, self.error = log, fail_rounds, error
        self.missing: set[str] = set()
        self._pending: list[tuple[Outgoing, Callable[[Any, Any], None]]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, *, headers: Any, on_delivery: Any) -> None:
        self._pending.append((Outgoing(topic, key, value, headers), on_delivery))

    def flush(self, timeout: float = 0) -> int:
        pending, self._pending = self._pending, []
        for item, report in pending:
            if self.fail_rounds:
                report(KafkaError(self.error), None)
            else:
                self.sent.append(item)
                self.log.append(("delivered", item.topic))
                report(None, None)
        self.fail_rounds = max(0, self.fail_rounds - 1)
        return 0

    def poll(self, timeout: float) -> int:
        return 0

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> Any:
        """Every topic exists, but those in ``missing``."""
        known = {} if topic is None else {topic: SimpleNamespace(
            error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART) if topic in self.missing else None)}
        return SimpleNamespace(topics=known)


class FakeDatabase:
    def __init__(self) -> None:
        self.inbox: dict[str, StoredResult] = {}
        self.effects = 0  # refreshes committed


class FakeUnitOfWork(UnitOfWork):
    """Writes become visible on commit only, as in a transaction."""

    def __init__(self, db: FakeDatabase, policy: InboxPolicy) -> None:
        super().__init__(policy)
        self.db, self.staged, self.effects = db, dict[str, StoredResult](), 0

    @property
    def conn(self) -> Any:
        return self  # what the patched SQL calls receive

    def _find(self, message_ids: list[str]) -> dict[str, StoredResult]:
        return {i: self.db.inbox[i] for i in message_ids if i in self.db.inbox}

    def _record(self, kind: str, results: dict[str, StoredResult], owners: dict[str, int | None], overwrite: bool) -> bool:
        if not overwrite and any(i in self.db.inbox for i in results):
            return False
        # As the inbox table keeps them: with their kind and owner.
        self.staged.update({i: StoredResult(**{**r.__dict__, "kind": kind, "company_id": owners.get(i)})
                            for i, r in results.items()})
        return True

    def _mark_published(self, message_ids: list[str]) -> None:
        for i in message_ids:
            self.staged[i] = StoredResult(**{**self.db.inbox[i].__dict__, "published": True})

    def _commit(self) -> None:
        self.db.inbox.update(self.staged)
        self.db.effects += self.effects

    def _rollback(self) -> None:
        self.staged.clear()

    def _close(self) -> None:
        pass


class Flaky:
    """Wraps a handler: raises the scripted errors, one per attempt, then handles."""

    def __init__(self, handle: Callable[[Sequence[Any], UnitOfWork], None], script: Sequence[Exception] = ()):
        self.handle, self.script, self.calls = handle, list(script), 0

    def __call__(self, messages: Sequence[Any], uow: UnitOfWork) -> None:
        self.calls += 1
        if self.script:
            raise self.script.pop(0)
        self.handle(messages, uow)


class Runaway(BaseException):
    """A retry loop that would never end."""


@pytest.fixture(autouse=True)
def refreshes_without_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request handler's SQL: company 8 owns nothing, company 7 owns everything (and nothing changes)."""

    def lock_assessments(uow: FakeUnitOfWork, company_id: int, ids: list[int] | None) -> list[Any]:
        if company_id == 8:
            raise AssessmentsNotOwned(ids or [])
        return []

    def refresh_locked(uow: FakeUnitOfWork, locked: list[Any]) -> list[Any]:
        uow.effects += 1
        return []

    monkeypatch.setattr(refresh_handler, "lock_assessments", lock_assessments)
    monkeypatch.setattr(refresh_handler, "refresh_locked", refresh_locked)
    monkeypatch.setattr(refresh_handler.history, "note_trigger", lambda *args, **kwargs: None)  # SQL too


class World:
    """A worker on fakes, the real handler table with some handlers replaced."""

    def __init__(self, db: FakeDatabase | None = None, policy: InboxPolicy | None = None, fail_rounds: int = 0,
                 error: int = KafkaError._TRANSPORT, **replaced: Callable[[Sequence[Any], UnitOfWork], None]):
        self.db, self.log, self.delays = db or FakeDatabase(), list[Any](), list[float]()
        table = handlers(S)
        types = {"request": RefreshRequested, "deleted": QuestionDeleted, "upserted": QuestionUpserted}
        for name, handle in replaced.items():
            old = table[types[name]]
            table[types[name]] = Handler(handle, runs=old.runs, give_up=old.give_up)
        self.producer = FakeProducer(self.log, fail_rounds, error)
        kwargs = {} if policy is None else {"policy": policy}
        self.worker = Worker(S, lambda p: FakeUnitOfWork(self.db, p), producer=self.producer, handler_table=table,
                             sleep=self.sleep, **kwargs)

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if len(self.delays) > 40:
            raise Runaway("retried for ever")

    def run(self, *batches: list[Record]) -> FakeConsumer:
        consumer = FakeConsumer(list(batches), self.worker, self.log)
        self.worker.run(consumer)
        return consumer

    def on(self, topic: str) -> list[Outgoing]:
        return [o for o in self.producer.sent if o.topic == topic]

    @property
    def dead(self) -> list[Outgoing]:
        return [o for o in self.producer.sent if o.topic.endswith(".dlq")]


def request(body_id: str | None = "r-1", *, correlation_id: str | None = None, reply_to: str | None = None,
            company_id: int = 7, offset: int = 0) -> Record:
    body = json.loads(RefreshRequested(body_id or "-", company_id, [11]).to_json())
    if body_id is None:
        del body["request_id"]
    headers = [(name, value.encode()) for name, value in (("correlation_id", correlation_id), ("reply_to", reply_to))
               if value is not None]
    return Record(S.request_topic, json.dumps(body).encode(), offset, headers)


def deletion(qid: int = 150, offset: int = 0) -> Record:
    return Record(S.question_events_topic,
                  QuestionEvent(f"d{qid}", "question.deleted", "2026-11-28T10:00:00Z", qid=qid).to_json(), offset)


def upsert(qid: int, offset: int) -> Record:
    question = {"qid": qid, "company_id": None, "type": "mcq", "skill": "py", "difficulty": "easy", "content": {"t": 1}}
    return Record(S.question_events_topic,
                  QuestionEvent(f"u{qid}", "question.upserted", "2026-11-28T10:00:00Z", question=question).to_json(), offset)


def transient() -> Exception:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


def header(message: Outgoing, name: str) -> str:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in message.headers}[name]


def nothing(_messages: Sequence[Any], _uow: UnitOfWork) -> None:
    pass


# -- retries ------------------------------------------------------------------


def test_the_policy_doubles_its_delay_up_to_a_cap() -> None:
    policy = RetryPolicy(first_delay_s=0.1, max_delay_s=5.0)
    assert [policy.delay(n) for n in range(1, 10)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_backoff_grows_and_is_capped_one_by_one() -> None:
    """A deletion event is handled on its own: the path whose backoff never grew."""
    world = World(deleted=Flaky(nothing, [transient() for _ in range(12)]))
    world.run([deletion()])
    assert world.delays == sorted(world.delays) and world.delays[0] < world.delays[3], world.delays
    assert max(world.delays) == 5.0 and world.delays.count(5.0) == 6
    assert world.dead == []


def test_a_transient_failure_is_never_dead_lettered() -> None:
    world = World(request=Flaky(handlers(S)[RefreshRequested].handle, [transient() for _ in range(30)]))
    world.run([request()])
    assert world.dead == []
    [reply] = world.on(S.reply_topic)
    assert json.loads(reply.value)["status"] == 200


def test_a_retryable_failure_is_dead_lettered_after_three_attempts_even_when_transient_ones_interleave() -> None:
    script = [transient(), ValueError("a"), transient(), ValueError("b"), transient(), ValueError("c")] * 3
    flaky = Flaky(handlers(S)[RefreshRequested].handle, script)
    world = World(request=flaky)
    world.run([request(correlation_id="c-1")])
    [dead] = world.dead
    assert flaky.calls == 6, "the third error ends it, whatever came between"
    assert header(dead, "dlq.attempts") == "6" and header(dead, "dlq.error.type") == "ValueError"
    [reply] = world.on(S.reply_topic)
    assert json.loads(reply.value)["status"] == 500 and header(reply, "correlation_id") == "c-1"


def test_poison_goes_at_once() -> None:
    flaky = Flaky(nothing)
    world = World(request=flaky)
    bad = Record(S.request_topic, b"not json", 0, [("correlation_id", b"c-1"), ("reply_to", S.reply_topic.encode())])
    world.run([bad])
    [dead] = world.dead
    assert header(dead, "dlq.attempts") == "1" and flaky.calls == 0 and world.delays == []
    [reply] = world.on(S.reply_topic)
    assert json.loads(reply.value)["status"] == 500
    assert json.loads(reply.value)["body"]["error"].startswith("Error refreshing assessment data: MessageError: ")


def test_a_failing_run_falls_back_to_one_by_one() -> None:
    def upserts(events: Sequence[Any], _uow: UnitOfWork) -> None:
        if any(e.question.qid == 2 for e in events):
            raise ValueError("qid 2 is refused")

    flaky = Flaky(upserts)
    world = World(upserted=flaky)
    consumer = world.run([upsert(1, 0), upsert(2, 1), upsert(3, 2)])
    [dead] = world.dead
    assert header(dead, "dlq.original.offset") == "1" and header(dead, "dlq.attempts") == "3"
    assert flaky.calls == 1 + 1 + 3 + 1, "the run once, then each record, the bad one three times"
    assert consumer.stored == [0, 1, 2]


def test_a_transient_failure_of_a_run_retries_the_run() -> None:
    flaky = Flaky(nothing, [transient(), transient()])
    world = World(upserted=flaky)
    world.run([upsert(1, 0), upsert(2, 1)])
    assert flaky.calls == 3 and world.dead == [] and world.delays == [0.1, 0.2]


# -- at least once, effects once -----------------------------------------------


def test_offsets_are_stored_only_after_delivery() -> None:
    world = World(fail_rounds=3)
    consumer = world.run([request(correlation_id="c-1")])
    assert [event for event, _ in world.log] == ["delivered", "stored"]
    assert consumer.stored == [0] and world.delays == [0.1, 0.2, 0.4], "publishing backs off as well"


def test_a_crash_between_commit_and_offset_resends_the_stored_result(monkeypatch: pytest.MonkeyPatch) -> None:
    class Crash(BaseException):
        pass

    crashes: list[str] = []

    def crash_point(name: str) -> None:
        if name == "after_db_commit" and not crashes:
            crashes.append(name)
            raise Crash

    monkeypatch.setattr(faults, "crash_point", crash_point)
    first = World()
    with pytest.raises(Crash):
        first.run([request(correlation_id="c-1", reply_to=THEIR_REPLIES)])
    assert first.log == [] and first.db.effects == 1, "committed, nothing delivered, no offset stored"

    restarted = World(first.db)
    consumer = restarted.run([request(correlation_id="c-1", reply_to=THEIR_REPLIES)])
    assert restarted.db.effects == 1, "the refresh ran once"
    [reply] = restarted.on(THEIR_REPLIES)
    assert json.loads(reply.value)["status"] == 200 and consumer.stored == [0]


def test_replay_refreshes_again_and_answers_no_one() -> None:
    live = World()
    live.run([request(correlation_id="c-1")])
    replay = World(live.db, policy=REPLAY)
    replay.run([request(correlation_id="c-1")])
    assert replay.db.effects == 2, "no stored-result shortcut on replay"
    assert replay.on(S.reply_topic) == []


def test_a_delivery_the_broker_refuses_for_good_is_given_up() -> None:
    world = World(fail_rounds=100, error=KafkaError.MSG_SIZE_TOO_LARGE)
    consumer = world.run([request(correlation_id="c-1")])
    assert world.producer.sent == [] and consumer.stored == [0], "given up, and the partition moves on"


# -- a caller's undeliverable reply is that caller's alone ------------------------


def undeliverable(reason: str) -> float:
    return REPLIES_UNDELIVERABLE.labels(reason)._value.get()


@pytest.mark.parametrize("own", [S.request_topic, S.question_events_topic, S.work_topic, S.refresh_events_topic,
                                 S.request_topic + ".dlq", "anything.dlq"])
def test_a_reply_to_one_of_the_services_own_topics_is_refused_without_a_write(own: str) -> None:
    world = World()
    before = undeliverable("own_topic")
    consumer = world.run([request(correlation_id="forged", reply_to=own), request(correlation_id="next", offset=1)])
    assert world.on(own) == [], "nothing written into the service's own topic"
    assert [json.loads(r.value)["request_id"] for r in world.on(S.reply_topic)] == ["next"]
    assert consumer.stored == [0, 1] and world.delays == [], "no retry, the lane moved on"
    assert undeliverable("own_topic") == before + 1
    assert set(world.db.inbox) == {"forged", "next"}, "the refresh is committed: its result at its Location"


def test_a_reply_to_a_missing_topic_is_given_up_at_once_and_the_lane_moves_on() -> None:
    world = World()
    world.producer.missing.add("gone.replies")
    before = undeliverable("unknown_topic")
    consumer = world.run([request(correlation_id="lost", reply_to="gone.replies"),
                          request(correlation_id="next", offset=1)])
    assert world.on("gone.replies") == [] and world.delays == []
    assert consumer.stored == [0, 1]
    assert undeliverable("unknown_topic") == before + 1
    assert [json.loads(r.value)["request_id"] for r in world.on(S.reply_topic)] == ["next"]


@pytest.mark.parametrize(("error", "reason"), [(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not_authorized"),
                                                (KafkaError.MSG_SIZE_TOO_LARGE, "too_large"),
                                                (KafkaError._MSG_TIMED_OUT, "not_delivered")])
def test_a_reply_the_broker_refuses_gets_one_attempt(error: int, reason: str) -> None:
    world = World(fail_rounds=1, error=error)
    before = undeliverable(reason)
    consumer = world.run([request(correlation_id="refused", reply_to=THEIR_REPLIES)])
    assert world.on(THEIR_REPLIES) == [] and world.delays == [] and consumer.stored == [0]
    assert undeliverable(reason) == before + 1


# -- correlation (docs/design.md#topics-and-messages) -------------------------------------------


@pytest.mark.parametrize(
    ("record", "status"),
    [
        pytest.param(request("body-id", correlation_id="their-id", reply_to=THEIR_REPLIES), 200, id="header-wins"),
        pytest.param(request(None, correlation_id="their-id", reply_to=THEIR_REPLIES), 200, id="no-body-id"),
        pytest.param(request("body-id", correlation_id="their-id", reply_to=THEIR_REPLIES, company_id=8), 403,
                     id="403"),
    ],
)
def test_the_reply_carries_the_callers_correlation_id_and_goes_to_its_reply_to(record: Record, status: int) -> None:
    world = World()
    world.run([record])
    [reply] = world.on(THEIR_REPLIES)
    assert header(reply, "correlation_id") == "their-id" and reply.key == b"their-id"
    assert json.loads(reply.value)["request_id"] == "their-id" and json.loads(reply.value)["status"] == status
    assert set(world.db.inbox) == {"their-id"}, "the inbox keys on the caller's id"


def test_a_failed_request_answers_the_callers_correlation_id_too() -> None:
    world = World(request=Flaky(nothing, [ValueError("x")] * 3))
    world.run([request("body-id", correlation_id="their-id", reply_to=THEIR_REPLIES)])
    [reply] = world.on(THEIR_REPLIES)
    assert header(reply, "correlation_id") == "their-id" and json.loads(reply.value)["status"] == 500


def test_a_request_without_any_id_is_poison() -> None:
    world = World()
    world.run([request(None)])
    [dead] = world.dead
    assert header(dead, "dlq.error.type") == "MessageError" and world.on(S.reply_topic) == []


# -- trace context with tracing off (the e2e test, tests/e2e/test_tracing.py, has it on) --

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def traced(record: Record) -> Record:
    return Record(record.topic(), record.value(), record.offset(), [*record.headers(), ("traceparent", TRACEPARENT.encode())])


def test_with_tracing_off_the_callers_trace_context_passes_through_to_the_reply_and_the_dlq() -> None:
    world = World(request=Flaky(nothing, [ValueError("x")] * 3))
    world.run([traced(request("r-1")), traced(request(None, offset=1))])
    [reply] = world.on(S.reply_topic)
    [dead_failed, dead_poison] = world.dead
    for message in (reply, dead_failed, dead_poison):
        assert [k for k, _ in message.headers].count("traceparent") == 1
        assert header(message, "traceparent") == TRACEPARENT


def test_with_tracing_off_a_record_without_trace_context_gets_none_added() -> None:
    world = World()
    world.run([request("r-1")])
    [reply] = world.on(S.reply_topic)
    assert "traceparent" not in dict(reply.headers)
